//! A durable publish's confirm, sent from the flusher thread as soon as the
//! pass that covers it ends (`Queues::on_confirmed`), with no runtime task
//! waiting for the pass: over the Unix socket the flusher writes it to the
//! connection itself (`line_out.rs`); over WebSocket it hands it to the
//! session's writer task, which frames it. Either way one connection's
//! confirms leave in publish order (callbacks run in ticket order).

use std::sync::Arc;

use futures::{Sink, SinkExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::line_out::LineOut;
use super::outbound::DRAIN_GRACE;
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

/// A confirm for the WebSocket writer task, with its slot (freed once written).
pub(super) type Framed = (String, OwnedSemaphorePermit);

/// Where a session's confirms go.
pub(super) enum Via {
    /// Written by the flusher thread to the Unix socket.
    Line(Arc<LineOut>),
    /// Handed to the WebSocket writer task.
    Writer(mpsc::Sender<Framed>),
}

/// A session's confirms: at most `bus.outbound_queue` outstanding (sent
/// for, not yet written or queued to the connection).
pub(super) struct Confirms {
    via: Via,
    slots: Arc<Semaphore>,
    max: u32,
    confirm_duration: metrics::Histogram,
}

impl Confirms {
    pub(super) fn new(bus: &Bus, via: Via) -> Self {
        let max = u32::try_from(bus.settings.outbound_queue.max(1)).unwrap_or(u32::MAX);
        Self {
            via,
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            confirm_duration: metrics::histogram!(crate::metrics::QUEUE_CONFIRM_DURATION),
        }
    }

    /// Sends `confirm` once `ticket` is durable. Waits first while the app
    /// has too many confirms it has not read: such an app stops being read.
    pub(super) async fn send(&self, bus: &Bus, ticket: u64, confirm: Confirm) {
        if let Via::Line(out) = &self.via {
            out.wait_room().await;
        }
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let hist = self.confirm_duration.clone();
        let f: crate::queue::OnDurable = match &self.via {
            Via::Line(out) => {
                let out = out.clone();
                Box::new(move |durable| {
                    out.send_line(&confirm.answer(&durable, &hist));
                    drop(slot);
                })
            }
            Via::Writer(tx) => {
                let tx = tx.clone();
                // Never full: the channel holds as many as there are slots.
                Box::new(move |durable| {
                    let _ = tx.try_send((confirm.answer(&durable, &hist), slot));
                })
            }
        };
        bus.queues.on_confirmed(ticket, f);
    }

    /// Sends `frame` ahead of every confirm to come (the `welcome`).
    pub(super) async fn send_first(&self, frame: String) {
        match &self.via {
            Via::Line(out) => out.send_line(&frame),
            Via::Writer(tx) => {
                if let Ok(slot) = self.slots.clone().acquire_owned().await {
                    let _ = tx.send((frame, slot)).await;
                }
            }
        }
    }

    /// Waits (at most [`DRAIN_GRACE`]) until every confirm sent for is
    /// written, or queued to a connection that may be half-closed.
    pub(super) async fn finish(self) {
        let _ = tokio::time::timeout(DRAIN_GRACE, self.slots.acquire_many(self.max)).await;
    }
}

/// Frames fed before one flush, at most.
const BURST: usize = 256;

/// The writer task of a WebSocket session: its frames and its confirms,
/// every burst already queued in one flush (one `send` syscall), until the
/// frames' queue closes or the socket fails; then closes the socket.
pub(super) async fn write_ws<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<String>,
    mut confirms: mpsc::Receiver<Framed>,
) where
    S: Sink<Message> + Unpin,
{
    let mut written = Vec::new();
    let mut confirms_open = true;
    'outer: loop {
        let first = tokio::select! {
            biased;
            c = confirms.recv(), if confirms_open => match c {
                Some((frame, slot)) => {
                    written.push(slot);
                    frame
                }
                None => {
                    confirms_open = false;
                    continue;
                }
            },
            f = rx.recv() => match f {
                Some(frame) => frame,
                None => break,
            },
        };
        if sink.feed(Message::text(first)).await.is_err() {
            break;
        }
        // A bounded burst: confirms' slots come back at each flush.
        for _ in 0..BURST {
            let next = match confirms.try_recv() {
                Ok((frame, slot)) => {
                    written.push(slot);
                    frame
                }
                Err(_) => match rx.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            if sink.feed(Message::text(next)).await.is_err() {
                break 'outer;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
        written.clear();
    }
    // The session ended (it waited for its confirms first).
    while let Ok((frame, _slot)) = confirms.try_recv() {
        if sink.feed(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
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
    async fn confirms_come_once_in_order_and_a_session_has_at_most_outbound_queue_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let bus = super::super::tests::bus(&store);
        let max = bus.settings.outbound_queue as u64;
        let (tx, mut rx) = mpsc::channel(bus.settings.outbound_queue);
        let confirms = Confirms::new(&bus, Via::Writer(tx));
        let publish = |i: u64| {
            let p = Publish {
                payload: i.to_string().into_bytes(),
                ..Publish::default()
            };
            bus.queues.publish_nowait("jobs", p).unwrap().1
        };
        for i in 0..max {
            confirms.send(&bus, publish(i), confirm(i)).await;
        }
        // No writer takes them: the next publish's confirm must wait.
        let next = publish(max);
        assert!(
            tokio::time::timeout(
                Duration::from_millis(300),
                confirms.send(&bus, next, confirm(max))
            )
            .await
            .is_err(),
            "a confirm past bus.outbound_queue unwritten ones must wait"
        );
        for i in 0..max {
            let (frame, slot) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("confirmed after its pass")
                .unwrap();
            assert_eq!(frame, i.to_string(), "in publish order");
            drop(slot);
        }
        // Written: room again.
        let next = publish(max + 1);
        tokio::time::timeout(
            Duration::from_secs(5),
            confirms.send(&bus, next, confirm(max + 1)),
        )
        .await
        .expect("room once the writer wrote");
        assert_eq!(rx.recv().await.unwrap().0, (max + 1).to_string());
        assert!(rx.try_recv().is_err(), "each confirm once");
    }
}
