//! Bus frames: one JSON object per WebSocket text message (or per line on the
//! Unix socket), tagged by `op`. `docs/bus.md` is the reference for apps.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Every op an app may send.
pub const OPS: [&str; 12] = [
    "hello",
    "publish",
    "send",
    "subscribe",
    "unsubscribe",
    "ack",
    "nak",
    "term",
    "in_progress",
    "request",
    "serve",
    "reply",
];

/// A payload as text (`payload`) or base64 (`payload_b64`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Body {
    /// UTF-8 payload.
    #[serde(default)]
    pub payload: Option<String>,
    /// Binary payload, standard base64.
    #[serde(default)]
    pub payload_b64: Option<String>,
}

impl Body {
    /// The payload bytes; an error names the bad field.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.payload, &self.payload_b64) {
            (Some(_), Some(_)) => Err("give `payload` or `payload_b64`, not both".into()),
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("`payload_b64` is not standard base64: {e}")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// A frame from an app.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum In {
    /// First frame: who the app is.
    Hello { app: String, token: String },
    /// Publish to a topic (fan-out).
    Publish {
        id: u64,
        topic: String,
        #[serde(flatten)]
        body: Body,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        correlation: Option<String>,
        #[serde(default)]
        msg_id: Option<String>,
        /// Ignored: the node stamps the sender. Present = a forgery attempt.
        #[serde(default)]
        sender: Option<String>,
    },
    /// Send to one app's subscriptions of a topic.
    Send {
        id: u64,
        app: String,
        topic: String,
        #[serde(flatten)]
        body: Body,
        #[serde(default)]
        correlation: Option<String>,
        #[serde(default)]
        sender: Option<String>,
    },
    /// Subscribe to a topic (durable with `group`) or a `prefix.*` pattern.
    Subscribe {
        id: u64,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        pattern: Option<String>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        auto_ack: bool,
        #[serde(default)]
        max_in_flight: Option<u32>,
    },
    /// End a subscription; `ack` lists held deliveries to ack as it ends (no
    /// delivery is leased after them, as there would be after plain acks).
    Unsubscribe {
        id: u64,
        sub: u64,
        #[serde(default)]
        ack: Vec<u64>,
    },
    /// Settle a durable delivery (`seq`), or several in one write (`seqs`).
    Ack {
        id: u64,
        sub: u64,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        seqs: Vec<u64>,
    },
    /// Deliver again after `delay_ms`.
    Nak {
        id: u64,
        sub: u64,
        seq: u64,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Dead-letter now.
    Term {
        id: u64,
        sub: u64,
        seq: u64,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Extend the lease.
    InProgress { id: u64, sub: u64, seq: u64 },
    /// Ask an app to perform an action.
    Request {
        id: u64,
        app: String,
        action: String,
        #[serde(flatten)]
        body: Body,
        #[serde(default = "default_deadline")]
        deadline_ms: u64,
        #[serde(default)]
        correlation: Option<String>,
    },
    /// Declare that this session serves `action`.
    Serve { id: u64, action: String },
    /// Answer a request the node forwarded (`rid`).
    Reply {
        id: u64,
        rid: u64,
        #[serde(flatten)]
        body: Body,
        #[serde(default)]
        error: Option<String>,
    },
}

fn default_deadline() -> u64 {
    5_000
}

/// The hot frame, parsed in one pass: for an internally tagged enum with a
/// flattened body, serde first buffers the whole frame (`Content`), which
/// was ~5% of the node's CPU with 8 publishes in flight per publisher. Same
/// fields, defaults and leniency as [`In::Publish`].
#[derive(Deserialize)]
struct FastPublish {
    #[allow(dead_code)]
    op: PublishOp,
    id: u64,
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_b64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    correlation: Option<String>,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    sender: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PublishOp {
    Publish,
}

impl From<FastPublish> for In {
    fn from(p: FastPublish) -> Self {
        In::Publish {
            id: p.id,
            topic: p.topic,
            body: Body {
                payload: p.payload,
                payload_b64: p.payload_b64,
            },
            headers: p.headers,
            correlation: p.correlation,
            msg_id: p.msg_id,
            sender: p.sender,
        }
    }
}

impl In {
    /// The frame's `id`, echoed by the node's answer.
    pub fn id(&self) -> Option<u64> {
        match self {
            In::Hello { .. } => None,
            In::Publish { id, .. }
            | In::Send { id, .. }
            | In::Subscribe { id, .. }
            | In::Unsubscribe { id, .. }
            | In::Ack { id, .. }
            | In::Nak { id, .. }
            | In::Term { id, .. }
            | In::InProgress { id, .. }
            | In::Request { id, .. }
            | In::Serve { id, .. }
            | In::Reply { id, .. } => Some(*id),
        }
    }
}

/// Why a frame was refused: a stable code and a message that names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Stable code (`malformed`, `unknown_op`, `forbidden`, ...).
    pub code: &'static str,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl FrameError {
    /// A new error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The `"id": N` of a frame from its first bytes (an overlong Unix line
/// is never kept whole); `None` if it is not among them.
pub(crate) fn id_in_prefix(prefix: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(prefix);
    let mut rest = text.as_ref();
    while let Some(at) = rest.find("\"id\"") {
        let after = rest[at + 4..].trim_start();
        if let Some(value) = after.strip_prefix(':') {
            let digits: String = value
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(id) = digits.parse() {
                return Some(id);
            }
        }
        rest = &rest[at + 4..];
    }
    None
}

/// Parses one frame, naming what is wrong: not JSON, no or unknown `op`, bad fields.
pub fn parse(text: &str, max_bytes: usize) -> Result<In, (Option<u64>, FrameError)> {
    if text.len() > max_bytes {
        // Answered with the frame's id when it has one (the text is here,
        // at most about twice the limit), so the caller's call gets its
        // error instead of waiting for an answer that never comes.
        #[derive(Deserialize)]
        struct IdOnly {
            id: Option<u64>,
        }
        let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id);
        return Err((
            id,
            FrameError::new(
                "oversized",
                format!(
                    "frame is {} bytes; the limit (bus.max_frame_bytes) is {max_bytes}",
                    text.len()
                ),
            ),
        ));
    }
    // Fast paths: a well-formed frame parses once; only a bad one is examined further.
    if text.contains("\"publish\"") {
        if let Ok(p) = serde_json::from_str::<FastPublish>(text) {
            return Ok(p.into());
        }
    }
    if let Ok(frame) = serde_json::from_str::<In>(text) {
        return Ok(frame);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            FrameError::new("malformed", format!("frame is not a JSON object: {e}")),
        )
    })?;
    let id = v.get("id").and_then(Value::as_u64);
    let op = v
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| (id, FrameError::new("bad_frame", "frame has no string field `op`")))?
        .to_owned();
    if !OPS.contains(&op.as_str()) {
        return Err((
            id,
            FrameError::new(
                "unknown_op",
                format!("unknown op `{op}`; allowed: {}", OPS.join(", ")),
            ),
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| (id, FrameError::new("bad_frame", format!("bad `{op}` frame: {e}"))))
}

/// The node's error frame.
pub fn error_frame(id: Option<u64>, e: &FrameError) -> String {
    json!({ "op": "error", "id": id, "code": e.code, "message": e.message }).to_string()
}

/// Puts `bytes` into `obj` as `payload` (UTF-8) or `payload_b64`.
pub fn put_payload(obj: &mut Value, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(t) => obj["payload"] = Value::String(t.to_owned()),
        Err(_) => obj["payload_b64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// Writes queued frames to a Unix socket, one per line, until the queue
/// closes or the socket fails. Frames queued together go out in one write.
pub async fn write_lines<W>(write: W, mut rx: tokio::sync::mpsc::Receiver<String>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut write = tokio::io::BufWriter::new(write);
    'outer: while let Some(frame) = rx.recv().await {
        for f in std::iter::once(frame).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if write.write_all(f.as_bytes()).await.is_err() || write.write_all(b"\n").await.is_err() {
                break 'outer;
            }
        }
        if write.flush().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_frame_names_its_problem() {
        let e = |t: &str| parse(t, 100).unwrap_err().1;
        assert_eq!(e("{nope").code, "malformed");
        assert_eq!(e(&"x".repeat(101)).code, "oversized");
        assert_eq!(
            id_in_prefix(br#"{"op":"publish","id" : 42,"payload":"xx"#),
            Some(42)
        );
        assert_eq!(
            id_in_prefix(br#"{"headers":{"id":"h"},"payload":"say \"id\": 7","id":3"#),
            Some(3),
            "only a field named id with a number counts"
        );
        assert_eq!(id_in_prefix(br#"{"op":"publish","payload":"xxxx"#), None);
        let big = format!(
            r#"{{"op":"publish","topic":"t","payload":"{}","id":7}}"#,
            "x".repeat(100)
        );
        assert_eq!(
            parse(&big, 100).unwrap_err().0,
            Some(7),
            "an oversized frame is answered with its id"
        );
        assert_eq!(e(r#"{"id":1}"#).code, "bad_frame");
        let u = e(r#"{"op":"explode","id":3}"#);
        assert_eq!(u.code, "unknown_op");
        assert!(u.message.contains("publish"), "{}", u.message);
        let b = parse(r#"{"op":"publish","id":4}"#, 100).unwrap_err();
        assert_eq!(b.0, Some(4));
        assert!(b.1.message.contains("topic"), "{}", b.1.message);
        assert!(matches!(
            parse(r#"{"op":"publish","id":5,"topic":"t","payload":"hi"}"#, 100),
            Ok(In::Publish { .. })
        ));
    }

    #[test]
    fn the_fast_publish_path_reads_what_the_general_one_does() {
        let frames = [
            r#"{"op":"publish","id":5,"topic":"t","payload":"hi"}"#,
            r#"{"topic":"t","id":6,"op":"publish","payload_b64":"AAEC","headers":{"k":"v"},"msg_id":"m","correlation":"c","sender":"x","extra":1}"#,
            r#"{"op":"publish","id":7,"topic":"t"}"#,
        ];
        for f in frames {
            let fast: In = serde_json::from_str::<FastPublish>(f).unwrap().into();
            let general: In = serde_json::from_str(f).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{general:?}"), "{f}");
        }
        // Not a publish, or a bad one: the general path answers, naming the problem.
        assert!(serde_json::from_str::<FastPublish>(r#"{"op":"send","id":1,"topic":"t"}"#).is_err());
        let e = parse(r#"{"op":"publish","id":8,"payload":"publish"}"#, 100).unwrap_err();
        assert!(e.1.message.contains("topic"), "{}", e.1.message);
    }

    #[test]
    fn payload_is_text_or_base64() {
        let b = Body {
            payload_b64: Some("AAEC".into()),
            ..Body::default()
        };
        assert_eq!(b.bytes().unwrap(), [0, 1, 2]);
        let bad = Body {
            payload_b64: Some("***".into()),
            ..Body::default()
        };
        assert!(bad.bytes().unwrap_err().contains("base64"));
        let mut v = json!({});
        put_payload(&mut v, &[0xff, 0]);
        assert_eq!(v["payload_b64"], "/wA=");
    }
}
