//! Delivery of one durable subscription: fetch within the credit, send, wait
//! for more. Runs as its own task; the session aborts it when the
//! subscription or the connection ends.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::leases::{Held, Unacked};
use super::session::lock;
use super::wire::{self, put_payload, FrameError};
use super::Bus;
use crate::queue::Delivery;

fn delivery_frame(sub: u64, d: &Delivery) -> String {
    let e = &d.envelope;
    let headers: serde_json::Map<String, Value> = e
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(String::from_utf8_lossy(v).into_owned())))
        .collect();
    let mut v = json!({
        "op": "msg", "sub": sub, "topic": e.topic, "seq": e.seq, "sender": e.sender,
        "correlation": e.correlation, "headers": headers, "ts_us": e.timestamp_us,
        "delivery_count": d.delivery_count,
    });
    put_payload(&mut v, &e.payload);
    v.to_string()
}

/// Delivers a durable subscription: fetch within the credit, send, wait for more.
#[allow(clippy::too_many_arguments)]
pub(super) async fn consume(
    bus: Arc<Bus>,
    topic: String,
    group: String,
    sub: u64,
    out: mpsc::Sender<String>,
    unacked: Unacked,
    auto_ack: bool,
    credit: usize,
) {
    let reject = |e: crate::Error| wire::error_frame(None, &FrameError::new("rejected", e.to_string()));
    let waker = match bus.queues.waker(&topic) {
        Ok(w) => w,
        Err(e) => {
            let _ = out.send(reject(e)).await;
            return;
        }
    };
    loop {
        let notified = waker.notified();
        // Deliveries whose lease expired no longer count: the group delivers
        // them again, maybe to another consumer, and this one may take more.
        let (in_flight, first_end) = lock(&unacked).in_flight(std::time::Instant::now());
        let room = credit.saturating_sub(in_flight);
        let fetched = if room == 0 {
            Ok((Vec::new(), first_end))
        } else {
            bus.queues.fetch(&topic, &group, room.min(256))
        };
        match fetched {
            Ok((ds, wake)) if ds.is_empty() => {
                // At least once a second: credit also comes back through
                // settles that wake no one (a delivery found settled elsewhere).
                let cap = tokio::time::Instant::now() + Duration::from_secs(1);
                let until = wake.map_or(cap, |w| tokio::time::Instant::from_std(w).min(cap));
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
            Ok((ds, _)) => {
                // The whole batch is held before the first send: if the
                // subscription ends while a send waits on a slow app, its end
                // hands every one of them back (none waits for `ack_wait`).
                {
                    let mut l = lock(&unacked);
                    if l.closed {
                        drop(l);
                        for d in &ds {
                            let _ = bus
                                .queues
                                .release(&topic, &group, d.envelope.seq, d.delivery_count);
                        }
                        return;
                    }
                    let now = std::time::Instant::now();
                    l.held
                        .extend(ds.iter().map(|d| (d.envelope.seq, Held::of(d, now))));
                }
                for d in &ds {
                    let span = tracing::debug_span!("bus_msg", correlation = %d.envelope.correlation, topic = %topic, group = %group);
                    span.in_scope(|| {
                        tracing::debug!(seq = d.envelope.seq, count = d.delivery_count, "deliver")
                    });
                    if out.send(delivery_frame(sub, d)).await.is_err() {
                        return;
                    }
                }
                if auto_ack {
                    // Each delivery still leased here is acked; one whose
                    // lease expired while a send waited on a slow app was
                    // delivered again and is not this one's to ack.
                    let leases: Vec<(u64, u32)> =
                        ds.iter().map(|d| (d.envelope.seq, d.delivery_count)).collect();
                    if let Err(e) = bus.queues.ack_leases(&topic, &group, &leases) {
                        tracing::warn!(topic = %topic, group = %group, error = %e, "auto-ack failed; the leases expire instead");
                    }
                    let mut l = lock(&unacked);
                    for (seq, count) in leases {
                        l.forget(seq, count);
                    }
                }
            }
            Err(e) => {
                let _ = out.send(reject(e)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
