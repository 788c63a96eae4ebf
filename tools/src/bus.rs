//! A small client of the vigil bus (the wire protocol of `docs/bus.md`) over
//! WebSocket or the node's Unix socket. Used by `vigilctl bus ...`, the tests and the benchmarks.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use vigil_tools::bus::BusClient;
//! let mut c = BusClient::connect("ws://127.0.0.1:8646", "shop", "TOKEN").await?;
//! let seq = c.publish("orders", b"hello").await?;
//! let sub = c.subscribe("orders", Some("shop.billing")).await?;
//! let msg = c.next_msg(std::time::Duration::from_secs(5)).await.expect("a message");
//! c.ack(sub, msg["seq"].as_u64().unwrap()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use std::pin::Pin;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// An error frame from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError {
    /// Stable code (`forbidden`, `malformed`, ...).
    pub code: String,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for BusError {}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Live copies and requests a client keeps waiting for the app before it
/// drops more (durable deliveries are bounded by credit and always kept).
pub const MAX_BUFFERED: u64 = 4096;

/// Durable deliveries a client keeps waiting beyond [`MAX_BUFFERED`].
const DURABLE_ROOM: u64 = 65_536;

/// Queues a frame for the app without waiting. `waiting` counts the frames
/// of its kind that may be dropped (live copies, requests): at most
/// [`MAX_BUFFERED`] of them wait. Anything else (answers, durable deliveries,
/// errors) is kept while the channel has room. Counts what it drops.
fn hand_over(tx: &mpsc::Sender<Value>, v: Value, waiting: Option<&AtomicU64>, dropped: &AtomicU64) {
    let kept = match waiting {
        Some(w) if w.load(Ordering::Relaxed) >= MAX_BUFFERED => false,
        Some(w) => {
            // Counted before it can be taken, so the taker's decrement never comes first.
            w.fetch_add(1, Ordering::Relaxed);
            let sent = tx.try_send(v).is_ok();
            if !sent {
                w.fetch_sub(1, Ordering::Relaxed);
            }
            sent
        }
        None => tx.try_send(v).is_ok(),
    };
    if !kept {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A live copy (at most once, may be dropped), not a durable delivery.
fn is_live_copy(v: &Value) -> bool {
    v["op"] == "msg" && v.get("delivery_count").is_none()
}

/// A connected app.
#[derive(Debug)]
pub struct BusClient {
    out: mpsc::Sender<String>,
    waiters: Waiters,
    msgs: mpsc::Receiver<Value>,
    requests: mpsc::Receiver<Value>,
    /// Live copies waiting in `msgs`, and requests in `requests`.
    live_waiting: Arc<AtomicU64>,
    requests_waiting: Arc<AtomicU64>,
    /// Live copies and requests dropped because too many were waiting.
    dropped: Arc<AtomicU64>,
    next_id: AtomicU64,
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Why the connection failed, when it did (not set for a clean close).
    failure: Arc<Mutex<Option<String>>>,
    /// The session id the node gave this connection.
    pub session: u64,
}

fn error_of(v: &Value) -> Option<BusError> {
    (v["op"] == "error").then(|| BusError {
        code: v["code"].as_str().unwrap_or("?").to_owned(),
        message: v["message"].as_str().unwrap_or("").to_owned(),
    })
}

/// The payload bytes of a `msg`, `request` or `reply` frame.
pub fn payload(v: &Value) -> Vec<u8> {
    if let Some(t) = v["payload"].as_str() {
        return t.as_bytes().to_vec();
    }
    v["payload_b64"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default()
}

fn with_payload(mut v: Value, bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(t) => v["payload"] = t.into(),
        Err(_) => v["payload_b64"] = base64::engine::general_purpose::STANDARD.encode(bytes).into(),
    }
    v
}

/// Frames the node sends, as text, until the connection ends (or fails: the error says why).
type Frames = Pin<Box<dyn Stream<Item = std::result::Result<String, String>> + Send>>;

/// The longest message a client reads from the node (its own frames are
/// bounded by `bus.max_frame_bytes`; deliveries by `bus.max_payload_bytes`).
const MAX_MESSAGE: usize = 64 << 20;

/// A WebSocket connection: frames to send go into the sender, one masked
/// text frame each (a burst in one write), read with the node's own frame
/// reader (`vigil_actors::bus::ws`).
async fn ws_transport(url: &str) -> Result<(mpsc::Sender<String>, Frames)> {
    use vigil_actors::bus::ws;
    let fail = || format!("cannot connect to the bus at {url}: is the node running with the bus enabled?");
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("bus URL {url} is neither ws://HOST:PORT nor unix:PATH"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(host).await.with_context(fail)?;
    stream.set_nodelay(true)?;
    let leftover = ws::connect(&mut stream, host, path)
        .await
        .map_err(|e| anyhow!("{}: {e}", fail()))?;
    let (read, mut write) = stream.into_split();
    let (out, mut out_rx) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut buf = Vec::new();
        while let Some(first) = out_rx.recv().await {
            buf.clear();
            for f in std::iter::once(first).chain(std::iter::from_fn(|| out_rx.try_recv().ok())) {
                ws::put_frame(&mut buf, ws::OP_TEXT, f.as_bytes(), Some(rand::random()));
            }
            if write.write_all(&buf).await.is_err() {
                return;
            }
        }
        buf.clear();
        ws::put_frame(
            &mut buf,
            ws::OP_CLOSE,
            &ws::close_payload(ws::CLOSE_NORMAL, ""),
            Some(rand::random()),
        );
        let _ = write.write_all(&buf).await;
    });
    // Text messages (anything else reads as an empty, unparsable frame)
    // until an error; a close with a reason is an error naming it.
    let reader = ws::Reader::new(read, leftover, MAX_MESSAGE, false);
    let frames = futures::stream::unfold(Some(reader), |reader| async move {
        let mut r = reader?;
        match r.next().await {
            Ok(Some(ws::Incoming::Close(_, reason))) if !reason.is_empty() => {
                Some((Err(format!("the bus closed the connection: {reason}")), None))
            }
            Ok(Some(ws::Incoming::Close(..))) | Ok(None) => None,
            Ok(Some(ws::Incoming::Text(t))) => Some((Ok(t), Some(r))),
            Ok(Some(_)) => Some((Ok(String::new()), Some(r))),
            Err(e) => Some((Err(e.to_string()), None)),
        }
    });
    Ok((out, Box::pin(frames)))
}

/// A Unix socket connection: one frame per line each way.
async fn unix_transport(path: &str) -> Result<(mpsc::Sender<String>, Frames)> {
    let stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
        format!("cannot connect to the bus socket {path}: is the node running with the bus enabled?")
    })?;
    let (read, write) = stream.into_split();
    let (out, out_rx) = mpsc::channel::<String>(1024);
    tokio::spawn(vigil_actors::bus::wire::write_lines(write, out_rx));
    let lines = futures::stream::unfold(BufReader::new(read).lines(), |mut l| async move {
        match l.next_line().await {
            Ok(Some(line)) => Some((Ok(line), l)),
            Ok(None) => None,
            Err(e) => Some((Err(e.to_string()), l)),
        }
    });
    Ok((out, Box::pin(lines)))
}

impl BusClient {
    /// Connects and says hello; fails with the node's reason. `url` is
    /// `ws://HOST:PORT` (the address in `DATA_DIR/bus.url`) or
    /// `unix:PATH` (the node's `DATA_DIR/bus.sock`: one JSON frame per line,
    /// no WebSocket framing, for apps on the same host).
    pub async fn connect(url: &str, app: &str, token: &str) -> Result<Self> {
        let (out, mut frames) = match url.strip_prefix("unix:") {
            Some(path) => unix_transport(path).await?,
            None => ws_transport(url).await?,
        };
        out.send(json!({ "op": "hello", "app": app, "token": token }).to_string())
            .await?;
        let first = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .map_err(|_| anyhow!("no answer to hello within 10 s"))?
            .ok_or_else(|| anyhow!("the bus closed the connection"))?
            .map_err(|e| anyhow!("the bus connection failed before its answer to hello: {e}"))?;
        let v: Value = serde_json::from_str(&first)?;
        if let Some(e) = error_of(&v) {
            return Err(e.into());
        }
        let session = v["session"].as_u64().unwrap_or(0);
        let waiters: Waiters = Arc::default();
        // The reader never waits for the app to take a frame, so answers
        // always reach their calls. Durable deliveries are bounded by the
        // subscriptions' credit and kept (up to DURABLE_ROOM more: a
        // delivery dropped past that comes again when its lease ends); live
        // copies (at most once) and requests are dropped, and counted, once
        // MAX_BUFFERED of their kind wait.
        let (msg_tx, msgs) = mpsc::channel((MAX_BUFFERED + DURABLE_ROOM) as usize);
        let (req_tx, requests) = mpsc::channel(MAX_BUFFERED as usize);
        let live_waiting = Arc::new(AtomicU64::new(0));
        let requests_waiting = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (live, reqs, lost) = (live_waiting.clone(), requests_waiting.clone(), dropped.clone());
        let w = waiters.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (c, why) = (closed.clone(), failure.clone());
        tokio::spawn(async move {
            while let Some(frame) = frames.next().await {
                let text = match frame {
                    Ok(t) => t,
                    Err(e) => {
                        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let op = v["op"].as_str().unwrap_or("");
                let id = v["id"].as_u64();
                match (op, id) {
                    ("ok" | "error" | "reply", Some(id)) => {
                        let waiter = w.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(v);
                            }
                            // An answer to a frame sent with send_raw: hand it to the reader.
                            None => {
                                hand_over(&msg_tx, v, None, &lost);
                            }
                        }
                    }
                    ("request", _) => {
                        hand_over(&req_tx, v, Some(&reqs), &lost);
                    }
                    _ => {
                        let waiting = is_live_copy(&v).then_some(&*live);
                        hand_over(&msg_tx, v, waiting, &lost);
                    }
                }
            }
            // Connection gone: every waiting call fails instead of hanging.
            c.store(true, Ordering::SeqCst);
            w.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Self {
            out,
            waiters,
            msgs,
            requests,
            live_waiting,
            requests_waiting,
            dropped,
            next_id: AtomicU64::new(1),
            closed,
            failure,
            session,
        })
    }

    /// Sends a frame (an `id` is added) and returns a future of the node's answer.
    pub fn start(&self, mut frame: Value) -> impl std::future::Future<Output = Result<Value>> + 'static {
        self.start_text(move |id| {
            frame["id"] = id.into();
            frame.to_string()
        })
    }

    /// Sends the frame `text(id)` and returns a future of the node's answer.
    fn start_text(
        &self,
        text: impl FnOnce(u64) -> String,
    ) -> impl std::future::Future<Output = Result<Value>> + 'static {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = text(id);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        if self.closed.load(Ordering::SeqCst) {
            // The connection is gone: dropping the slot makes the call fail at once.
            self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
        // Sent now, not when the future is first polled, so that several calls
        // started before awaiting any are really in flight together.
        let unsent = match self.out.try_send(frame) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(f)) => Some(f),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(String::new()),
        };
        let out = self.out.clone();
        let failure = self.failure.clone();
        // "closed", with why when the connection failed rather than closed.
        let gone = move |what: &str| match &*failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => anyhow!("{what}: {why}"),
            None => anyhow!("{what}"),
        };
        async move {
            if let Some(f) = unsent {
                if f.is_empty() {
                    return Err(gone("the bus connection is closed"));
                }
                out.send(f)
                    .await
                    .map_err(|_| gone("the bus connection is closed"))?;
            }
            let v = rx
                .await
                .map_err(|_| gone("the bus connection closed before the answer"))?;
            match error_of(&v) {
                Some(e) => Err(e.into()),
                None => Ok(v),
            }
        }
    }

    /// Sends a frame and waits for the answer.
    pub async fn call(&self, frame: Value) -> Result<Value> {
        self.start(frame).await
    }

    /// Sends raw text (for testing the node's handling of bad frames).
    pub async fn send_raw(&self, text: String) -> Result<()> {
        self.out
            .send(text)
            .await
            .map_err(|_| anyhow!("the bus connection is closed"))
    }

    /// Publishes and waits for the confirm; returns the sequence number.
    pub async fn publish(&self, topic: &str, bytes: &[u8]) -> Result<u64> {
        let v = self.publish_start(topic, bytes).await?;
        Ok(v["seq"].as_u64().unwrap_or(0))
    }

    /// A publish future, for pipelining several before awaiting them.
    pub fn publish_start(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> impl std::future::Future<Output = Result<Value>> + 'static {
        // Written directly: the publish loop of every benchmark and app.
        let topic = serde_json::to_string(topic).unwrap_or_default();
        let payload = match std::str::from_utf8(bytes) {
            Ok(t) => format!(r#""payload":{}"#, serde_json::to_string(t).unwrap_or_default()),
            Err(_) => format!(
                r#""payload_b64":"{}""#,
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        };
        self.start_text(move |id| format!(r#"{{"op":"publish","id":{id},"topic":{topic},{payload}}}"#))
    }

    /// Subscribes to a topic (durable, with `group`; default group = app name); returns the sub id.
    pub async fn subscribe(&self, topic: &str, group: Option<&str>) -> Result<u64> {
        self.subscribe_with(topic, group, None).await
    }

    /// Subscribes with a credit: at most `max_in_flight` unacked deliveries leased to this
    /// session at a time (node default 256).
    pub async fn subscribe_with(
        &self,
        topic: &str,
        group: Option<&str>,
        max_in_flight: Option<u32>,
    ) -> Result<u64> {
        let mut f = json!({ "op": "subscribe", "topic": topic });
        if let Some(g) = group {
            f["group"] = g.into();
        }
        if let Some(n) = max_in_flight {
            f["max_in_flight"] = n.into();
        }
        Ok(self.call(f).await?["sub"].as_u64().unwrap_or(0))
    }

    /// Ends a subscription; the node releases its unacked leases before it answers, so the
    /// group's next consumer gets them at once.
    pub async fn unsubscribe(&self, sub: u64) -> Result<()> {
        self.unsubscribe_acking(sub, &[]).await.map(drop)
    }

    /// Ends a subscription and acks these deliveries it holds as it ends
    /// (acking them first would free credit for more deliveries, which the
    /// end would then hand back); returns how many were acked.
    pub async fn unsubscribe_acking(&self, sub: u64, ack: &[u64]) -> Result<u64> {
        let v = self
            .call(json!({ "op": "unsubscribe", "sub": sub, "ack": ack }))
            .await?;
        Ok(v["acked"].as_u64().unwrap_or(0))
    }

    /// Subscribes to a `prefix.*` pattern (live copies).
    pub async fn subscribe_pattern(&self, pattern: &str) -> Result<u64> {
        Ok(self
            .call(json!({ "op": "subscribe", "pattern": pattern }))
            .await?["sub"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Acks a durable delivery.
    pub async fn ack(&self, sub: u64, seq: u64) -> Result<()> {
        self.call(json!({ "op": "ack", "sub": sub, "seq": seq }))
            .await
            .map(|_| ())
    }

    /// Acks several durable deliveries in one frame (and one write on the
    /// node); returns how many were acked and the seqs that were not (not
    /// held by this subscription, or delivered again since).
    pub async fn ack_many(&self, sub: u64, seqs: &[u64]) -> Result<(u64, Vec<u64>)> {
        if seqs.is_empty() {
            return Ok((0, Vec::new()));
        }
        let v = self
            .call(json!({ "op": "ack", "sub": sub, "seqs": seqs }))
            .await?;
        let acked = v["acked"]
            .as_u64()
            .ok_or_else(|| anyhow!("the node's answer to a batch ack has no `acked`: {v}"))?;
        let not_acked = v["not_acked"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        Ok((acked, not_acked))
    }

    /// Naks a durable delivery.
    pub async fn nak(&self, sub: u64, seq: u64, delay_ms: u64) -> Result<()> {
        self.call(json!({ "op": "nak", "sub": sub, "seq": seq, "delay_ms": delay_ms }))
            .await
            .map(|_| ())
    }

    /// The next `msg` frame (or unsolicited error frame), if one comes within `timeout`.
    pub async fn next_msg(&mut self, timeout: Duration) -> Option<Value> {
        let v = tokio::time::timeout(timeout, self.msgs.recv())
            .await
            .ok()
            .flatten();
        if v.as_ref().is_some_and(is_live_copy) {
            self.live_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        v
    }

    /// Live copies and requests dropped because more than [`MAX_BUFFERED`]
    /// frames were waiting to be taken.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Declares that this session serves `action`.
    pub async fn serve(&self, action: &str) -> Result<()> {
        self.call(json!({ "op": "serve", "action": action }))
            .await
            .map(|_| ())
    }

    /// The next request forwarded to this session.
    pub async fn next_request(&mut self, timeout: Duration) -> Option<Value> {
        let v = tokio::time::timeout(timeout, self.requests.recv())
            .await
            .ok()
            .flatten();
        if v.is_some() {
            self.requests_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        v
    }

    /// Answers request `rid`.
    pub async fn reply(&self, rid: u64, bytes: &[u8]) -> Result<()> {
        self.call(with_payload(json!({ "op": "reply", "rid": rid }), bytes))
            .await
            .map(|_| ())
    }

    /// Asks `app` to perform `action`; returns the reply's payload.
    pub async fn request(&self, app: &str, action: &str, bytes: &[u8], deadline_ms: u64) -> Result<Vec<u8>> {
        let f = with_payload(
            json!({ "op": "request", "app": app, "action": action, "deadline_ms": deadline_ms }),
            bytes,
        );
        Ok(payload(&self.call(f).await?))
    }
}
