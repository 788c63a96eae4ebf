//! Requests to one peer share round trips under load: while a request to a
//! peer is in flight, the next ones queue, and leave together as one
//! [`Request::Batch`] when it returns (at most [`MAX_BATCH`]). Alone, a
//! request leaves at once, by itself: no timer, no added latency. 16
//! channels paying between two nodes then cost a few round trips at a
//! time instead of 16.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Transport;
use crate::wire::{Reply, Request, MAX_BATCH};
use crate::Layer2Error;

type Waiting = (Request, oneshot::Sender<Result<Reply, Layer2Error>>);

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A sender task runs for this peer.
    busy: bool,
}

/// Per-peer queues over a transport.
#[derive(Debug)]
pub(super) struct Batcher {
    net: Arc<dyn Transport>,
    peers: Mutex<HashMap<String, Arc<Mutex<Queue>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher {
    pub(super) fn new(net: Arc<dyn Transport>) -> Self {
        Self {
            net,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to `peer` (alone or in a batch); its reply.
    pub(super) async fn ask(
        &self,
        peer: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Reply, Layer2Error> {
        let q = lock(&self.peers).entry(peer.to_owned()).or_default().clone();
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut g = lock(&q);
            g.waiting.push((req, tx));
            !std::mem::replace(&mut g.busy, true)
        };
        if lead {
            tokio::spawn(send_all(q, self.net.clone(), peer.to_owned(), timeout));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Layer2Error::Unreachable(format!(
                "{peer}: the request was dropped"
            ))),
            Err(_) => Err(Layer2Error::Unreachable(format!(
                "{peer} did not answer within {timeout:?}"
            ))),
        }
    }
}

/// Sends what waits for `peer` until nothing does.
async fn send_all(q: Arc<Mutex<Queue>>, net: Arc<dyn Transport>, peer: String, timeout: Duration) {
    loop {
        let batch: Vec<Waiting> = {
            let mut g = lock(&q);
            if g.waiting.is_empty() {
                g.busy = false;
                return;
            }
            let n = g.waiting.len().min(MAX_BATCH);
            g.waiting.drain(..n).collect()
        };
        let (reqs, txs): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
        let one = reqs.len() == 1;
        let frame = match one {
            true => reqs.into_iter().next().expect("one").encode(),
            false => Request::Batch(reqs).encode(),
        };
        let answer = match tokio::time::timeout(timeout, net.request(&peer, frame)).await {
            Err(_) => Err(Layer2Error::Unreachable(format!(
                "{peer} did not answer within {timeout:?}"
            ))),
            Ok(Err(e)) => Err(Layer2Error::Unreachable(e)),
            Ok(Ok(bytes)) => Reply::decode(&bytes)
                .map_err(|e| Layer2Error::Invalid(format!("{peer} answered a bad frame: {e}"))),
        };
        match answer {
            Ok(Reply::Batch(replies)) if !one && replies.len() == txs.len() => {
                for (tx, r) in txs.into_iter().zip(replies) {
                    let _ = tx.send(Ok(r));
                }
            }
            Ok(r) if one => {
                let _ = txs.into_iter().next().expect("one").send(Ok(r));
            }
            Ok(other) => {
                for tx in txs {
                    let _ = tx.send(Err(Layer2Error::Invalid(format!(
                        "{peer} answered a batch with {other:?}"
                    ))));
                }
            }
            Err(e) => {
                let (unreachable, msg) = match e {
                    Layer2Error::Unreachable(m) => (true, m),
                    other => (false, other.to_string()),
                };
                for tx in txs {
                    let _ = tx.send(Err(match unreachable {
                        true => Layer2Error::Unreachable(msg.clone()),
                        false => Layer2Error::Invalid(msg.clone()),
                    }));
                }
            }
        }
    }
}
