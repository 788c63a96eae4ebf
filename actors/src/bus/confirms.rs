//! A durable publish's confirm, sent from the flusher thread as soon as the
//! pass that covers it ends (`Queues::on_confirmed`), with no runtime task
//! waiting for the pass: the flusher writes it to the connection itself
//! (`frame_out.rs`), a line on the Unix socket, a WebSocket text frame over
//! TCP. One connection's confirms leave in publish order (callbacks run in
//! ticket order).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::frame_out::FrameOut;
use super::wire::{self, FrameError};
use super::Bus;

/// A publish waiting for its fsync, and the answer to send then.
pub(super) struct Confirm {
    /// The publish frame's id, for the error if it never becomes durable.
    pub(super) id: u64,
    pub(super) frame: String,
    pub(super) t0: std::time::Instant,
    pub(super) span: tracing::Span,
}

impl Confirm {
    /// The frame to send once the flusher has answered: the confirm, or
    /// `not_durable` if its pass never came.
    fn answer(self, durable: &crate::Result<()>, confirm_duration: &metrics::Histogram) -> String {
        match durable {
            Ok(()) => {
                confirm_duration.record(self.t0.elapsed().as_secs_f64());
                self.span.in_scope(|| tracing::debug!("confirmed"));
                self.frame
            }
            Err(e) => {
                self.span
                    .in_scope(|| tracing::error!(error = %e, "not confirmed"));
                wire::error_frame(Some(self.id), &FrameError::new("not_durable", e.to_string()))
            }
        }
    }
}

/// A session's confirms: at most `bus.outbound_queue` outstanding (asked
/// for, not yet durable), and none asked for while the connection's
/// backlog is past its room (an app that does not read stops being read).
pub(super) struct Confirms {
    out: Arc<FrameOut>,
    slots: Arc<Semaphore>,
    max: u32,
    confirm_duration: metrics::Histogram,
}

impl Confirms {
    pub(super) fn new(bus: &Bus, out: Arc<FrameOut>) -> Self {
        let max = u32::try_from(bus.settings.outbound_queue.max(1)).unwrap_or(u32::MAX);
        Self {
            out,
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            confirm_duration: metrics::histogram!(crate::metrics::QUEUE_CONFIRM_DURATION),
        }
    }

    /// Sends `confirm` once `ticket` is durable. Waits first while the app
    /// has too much it has not read.
    pub(super) async fn send(&self, bus: &Bus, ticket: u64, confirm: Confirm) {
        self.out.wait_room().await;
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let hist = self.confirm_duration.clone();
        let out = self.out.clone();
        bus.queues.on_confirmed(
            ticket,
            Box::new(move |durable| {
                out.send_frame(&confirm.answer(&durable, &hist));
                drop(slot);
            }),
        );
    }

    /// Sends `frame` ahead of every confirm to come (the `welcome`).
    pub(super) fn send_first(&self, frame: &str) {
        self.out.send_frame(frame);
    }

    /// Waits (at most [`super::outbound::DRAIN_GRACE`]) until every confirm
    /// asked for is written or queued to the connection.
    pub(super) async fn finish(self) {
        let grace = super::outbound::DRAIN_GRACE;
        let _ = tokio::time::timeout(grace, self.slots.acquire_many(self.max)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::frame_out::Sock;
    use crate::bus::ws::{Incoming, Reader};
    use crate::queue::Publish;
    use crate::store::SledStore;
    use std::time::Duration;

    fn confirm(id: u64) -> Confirm {
        Confirm {
            id,
            frame: id.to_string(),
            t0: std::time::Instant::now(),
            span: tracing::Span::none(),
        }
    }

    #[tokio::test]
    async fn confirms_come_once_in_order_as_websocket_frames_after_their_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let bus = super::super::tests::bus(&store);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (node, _) = listener.accept().unwrap();
        let confirms = Confirms::new(&bus, FrameOut::new(Sock::WebSocket(node)).unwrap());
        confirms.send_first("welcome");
        // Twice as many as there are slots: slots come back as passes end.
        let n = 2 * bus.settings.outbound_queue as u64;
        for i in 0..n {
            let p = Publish {
                payload: i.to_string().into_bytes(),
                ..Publish::default()
            };
            let ticket = bus.queues.publish_nowait("jobs", p).unwrap().1;
            tokio::time::timeout(Duration::from_secs(10), confirms.send(&bus, ticket, confirm(i)))
                .await
                .expect("a slot once a pass ends");
        }
        let mut r = Reader::new(app, Vec::new(), 1024, false);
        let mut next = async || match tokio::time::timeout(Duration::from_secs(10), r.next()).await {
            Ok(Ok(Some(Incoming::Text(t)))) => t,
            other => panic!("expected a text frame: {other:?}"),
        };
        assert_eq!(next().await, "welcome");
        for i in 0..n {
            assert_eq!(next().await, i.to_string(), "in publish order");
        }
        tokio::time::timeout(Duration::from_secs(5), confirms.finish())
            .await
            .expect("every confirm written");
        // Finished, the session's handle is dropped: the stream ends there.
        assert!(
            matches!(r.next().await, Ok(None)),
            "each confirm once, nothing after"
        );
    }
}
