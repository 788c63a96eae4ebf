//! What a session sends besides durable deliveries and confirms
//! (`confirms.rs`): `ok` frames, live copies, and the last frames of a
//! closing session.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::router::Sink;
use super::wire::put_payload;
use crate::queue::Published;

pub(super) fn ok(id: u64, extra: Value) -> String {
    let mut v = json!({ "op": "ok", "id": id });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v.to_string()
}

/// The confirm of a durable publish, written directly: one per message on
/// the hot path, where building a `Value` map cost 2.6% of the node's CPU.
/// The digits are written by hand: `format!` went through `core::fmt`,
/// 2.8% of the node's CPU with 8 publishes in flight per publisher.
pub(super) fn ok_published(id: u64, p: Published) -> String {
    let mut s = String::with_capacity(64);
    s.push_str(r#"{"op":"ok","id":"#);
    push_u64(&mut s, id);
    s.push_str(r#","seq":"#);
    push_u64(&mut s, p.seq);
    s.push_str(if p.duplicate {
        r#","duplicate":true}"#
    } else {
        r#","duplicate":false}"#
    });
    s
}

/// Appends `n` in decimal.
fn push_u64(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    s.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// A `msg` frame for a live copy (`seq` set for a durable message's copy),
/// stamped with the sending app's name.
pub(super) fn msg_frame(
    sender: &str,
    sub: u64,
    topic: &str,
    seq: Option<u64>,
    correlation: &str,
    payload: &[u8],
    extra: Value,
) -> String {
    let mut v =
        json!({ "op": "msg", "sub": sub, "topic": topic, "sender": sender, "correlation": correlation });
    if let Some(seq) = seq {
        v["seq"] = seq.into();
    }
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    put_payload(&mut v, payload);
    v.to_string()
}

/// Copies to live subscribers (at most once: a full queue drops the copy);
/// returns how many were queued.
pub(super) fn fan_out(sinks: &[Sink], frame_for: impl Fn(u64) -> String) -> usize {
    let mut n = 0;
    for s in sinks {
        if s.tx.try_send(frame_for(s.sub)).is_ok() {
            n += 1;
        } else {
            metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
        }
    }
    n
}

/// How long the frames queued for a closing session may take to reach its
/// app: one that stopped reading must not hold the connection open forever.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Waits for a task that sends a closing session's last frames, for at most
/// [`DRAIN_GRACE`]; then ends it (dropping the connection's writer closes it).
pub(super) async fn drain(mut task: JoinHandle<()>) {
    if tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_err() {
        task.abort();
        tracing::debug!("a closing bus session's app stopped reading: its last frames are dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_confirm_is_the_ok_frame_with_seq_and_duplicate() {
        for (id, seq, duplicate) in [
            (0, 0, false),
            (7, u64::MAX, true),
            (u64::MAX, 42, false),
            (10, 100, true),
            (1_234_567_890, 9, false),
        ] {
            let direct: Value =
                serde_json::from_str(&ok_published(id, Published { seq, duplicate })).unwrap();
            let built: Value =
                serde_json::from_str(&ok(id, json!({ "seq": seq, "duplicate": duplicate }))).unwrap();
            assert_eq!(direct, built);
        }
    }
}
