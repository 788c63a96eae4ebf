//! Delivery of one durable subscription: fetch within the credit, send, wait
//! for more. Runs as its own task; the session aborts it when the
//! subscription or the connection ends.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::mpsc;

use super::leases::{Held, Unacked};
use super::session::lock;
use super::wire::{self, FrameError};
use super::Bus;
use crate::queue::Delivery;

/// A delivery's `msg` frame, serialized straight from the envelope (one per
/// delivered message: no intermediate `Value` maps).
#[derive(Serialize)]
struct MsgFrame<'a> {
    op: &'static str,
    sub: u64,
    topic: &'a str,
    seq: u64,
    sender: &'a str,
    correlation: &'a str,
    headers: Headers<'a>,
    ts_us: u64,
    delivery_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// Header values as text (invalid UTF-8 replaced), as the wire carries them.
struct Headers<'a>(&'a std::collections::BTreeMap<String, Vec<u8>>);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
    }
}

fn delivery_frame(sub: u64, d: &Delivery) -> String {
    let e = &d.envelope;
    let text = std::str::from_utf8(&e.payload).ok();
    let frame = MsgFrame {
        op: "msg",
        sub,
        topic: &e.topic,
        seq: e.seq,
        sender: &e.sender,
        correlation: &e.correlation,
        headers: Headers(&e.headers),
        ts_us: e.timestamp_us,
        delivery_count: d.delivery_count,
        payload: text,
        payload_b64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.payload)),
    };
    serde_json::to_string(&frame).expect("a msg frame serializes")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Envelope;
    use serde_json::{json, Value};

    #[test]
    fn a_msg_frame_carries_every_field_text_or_base64() {
        let mut e = Envelope {
            seq: 42,
            timestamp_us: 1_700_000_000_000_000,
            topic: "orders.\"eu\"".into(),
            sender: "shop".into(),
            correlation: "c-1\n".into(),
            payload: "ünïcode \"quoted\"".as_bytes().to_vec(),
            ..Envelope::default()
        };
        e.headers.insert("k".into(), b"v".to_vec());
        e.headers.insert("bin".into(), vec![0xff, b'a']);
        let d = Delivery {
            envelope: e.clone(),
            delivery_count: 3,
            lease_until: std::time::Instant::now(),
        };
        let v: Value = serde_json::from_str(&delivery_frame(7, &d)).unwrap();
        assert_eq!(
            v,
            json!({
                "op": "msg", "sub": 7, "topic": "orders.\"eu\"", "seq": 42, "sender": "shop",
                "correlation": "c-1\n", "headers": { "k": "v", "bin": "\u{fffd}a" },
                "ts_us": 1_700_000_000_000_000u64, "delivery_count": 3,
                "payload": "ünïcode \"quoted\"",
            })
        );
        let bin = Delivery {
            envelope: Envelope {
                payload: vec![0, 0xff, 1],
                ..e
            },
            ..d
        };
        let v: Value = serde_json::from_str(&delivery_frame(7, &bin)).unwrap();
        assert_eq!(v["payload_b64"], "AP8B");
        assert!(v.get("payload").is_none());
    }
}
