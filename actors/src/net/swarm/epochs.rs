//! The swarm side of epochs: gossip routed to the [`EpochSource`], sync
//! requests served from it, outbound sync requests matched to their callers.

use libp2p::{gossipsub, request_response, PeerId};
use tokio::sync::oneshot;

use super::super::codec::Frame;
use super::super::limits::Work;
use super::super::score::Offence;
use super::super::sync::{GossipVerdict, SyncRequest, SyncResponse, SYNC_RESPONSE_MAX};
use super::super::Command;
use super::{lock, Loop};
use crate::metrics as m;

pub(super) type SyncReply = oneshot::Sender<Result<SyncResponse, String>>;

impl Loop {
    pub(super) fn publish_epoch(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let topic = self.net.inner.names.epoch_topic.clone();
        let len = bytes.len();
        self.record_gossip(&topic.hash(), &bytes, true);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                metrics::counter!(m::NET_GOSSIP, "topic" => "epochs", "result" => "published").increment(1);
                metrics::counter!(m::NET_BYTES, "protocol" => "gossip", "direction" => "out")
                    .increment(len as u64);
                Ok(())
            }
            // Alone on the network: nothing to tell anyone, not an error.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
            Err(e) => Err(format!("cannot gossip the epoch: {e}")),
        }
    }

    /// An epoch arrived by gossip: the source decides (off this task).
    pub(super) fn on_epoch_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        metrics::counter!(m::NET_BYTES, "protocol" => "gossip", "direction" => "in")
            .increment(data.len() as u64);
        match self.net.epoch_source() {
            Some(src) => src.gossip(source, id, data),
            None => self.report_epoch(id, source, GossipVerdict::Ignore),
        }
    }

    /// An epoch judged by the source; a reject counts as a failed proof.
    pub(super) fn report_epoch(&mut self, id: gossipsub::MessageId, from: PeerId, verdict: GossipVerdict) {
        self.report_gossip(&id, from, "epochs".into(), verdict, Offence::FailedProof);
    }

    pub(super) fn request_sync(&mut self, peer: PeerId, req: SyncRequest, reply: SyncReply) {
        if !self.swarm.is_connected(&peer) {
            let _ = reply.send(Err(format!("peer {peer} is not connected")));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Frame::Valid(req));
        self.pending_sync.insert(id, reply);
    }

    pub(super) fn on_sync(&mut self, ev: request_response::Event<Frame<SyncRequest>, Frame<SyncResponse>>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => match request {
                Frame::Valid(req) => {
                    let permit = match self.admit(peer, Work::Sync) {
                        Ok(p) => p,
                        Err(ms) => {
                            let busy = Frame::Valid(SyncResponse::busy(ms));
                            let _ = self.swarm.behaviour_mut().sync.send_response(channel, busy);
                            return;
                        }
                    };
                    // Reading up to 8 MiB of epochs happens off the swarm task.
                    let (src, tx) = (self.net.epoch_source(), lock(&self.net.inner.cmd).clone());
                    tokio::spawn(async move {
                        let resp = tokio::task::spawn_blocking(move || match src {
                            Some(src) => SyncResponse::new(
                                src.head(),
                                src.range(req.from, req.count, SYNC_RESPONSE_MAX - 1024),
                            ),
                            None => SyncResponse::new(0, Vec::new()),
                        })
                        .await
                        .unwrap_or_else(|_| SyncResponse::busy(1000));
                        if let Some(tx) = tx {
                            let _ = tx.send(Command::SyncRespond(channel, resp)).await;
                        }
                        drop(permit);
                    });
                }
                Frame::Invalid(e) => self.bad_frame(peer, e),
            },
            Event::Message {
                peer,
                message: Message::Response { request_id, response },
                ..
            } => {
                let reply = self.pending_sync.remove(&request_id);
                let r = match response {
                    Frame::Valid(SyncResponse {
                        busy_ms: Some(ms), ..
                    }) => Err(format!("peer {peer} is busy: try again in {ms} ms")),
                    Frame::Valid(resp) => {
                        if let Some(p) = super::lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
                            p.head = Some(resp.head);
                        }
                        Ok(resp)
                    }
                    Frame::Invalid(e) => {
                        let msg = format!("peer {peer} answered a sync request badly: {e}");
                        self.bad_frame(peer, e);
                        Err(msg)
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_sync.remove(&request_id) {
                    let _ = reply.send(Err(format!("sync request to {peer} failed: {error}")));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
