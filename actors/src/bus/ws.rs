//! WebSocket (RFC 6455) for the bus's hot path: the opening handshake, and
//! frames read and written directly on the socket, so that the flusher
//! thread can write a durable publish's confirm to the connection itself, as
//! it does on the Unix socket (`frame_out.rs`). Through tungstenite, each
//! confirm went through a writer task and a split stream: that cost the node
//! ~12 µs of CPU per message more than the Unix socket, where Redis's TCP and
//! Unix sockets differ by ~1 µs (docs/benchmarks.md). Clients (`vigil-tools`)
//! use the same reader and frame encoder, with masking.
//!
//! What is supported: text, binary, ping/pong and close frames, fragmented
//! messages, no extensions (a frame with a reserved bit set is a protocol
//! error, as RFC 6455 §5.2 requires when none was negotiated).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// A UTF-8 text message (every bus frame).
pub const OP_TEXT: u8 = 0x1;
/// A binary message.
pub const OP_BINARY: u8 = 0x2;
/// Close, with an optional status code and reason.
pub const OP_CLOSE: u8 = 0x8;
/// Ping: answered with a pong carrying the same bytes.
pub const OP_PING: u8 = 0x9;
/// Pong.
pub const OP_PONG: u8 = 0xA;

/// Close status: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close status: protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close status: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close status: try again later (too many connections).
pub const CLOSE_AGAIN: u16 = 1013;

/// Longest request head an upgrade may send.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Appends one final (unfragmented) frame to `out`; clients pass a `mask`
/// (RFC 6455 §5.3: every client frame is masked), servers `None`.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            out.extend_from_slice(&key);
            let at = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[at..], key);
        }
    }
}

/// The payload of a close frame: the status code and a reason cut to fit a
/// control frame (125 bytes) on a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// XORs `data` with the repeating 4-byte `key` (masking and unmasking alike).
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// A whole message (or control frame) read from a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping: the reader's owner answers with a pong of the same bytes.
    Ping(Vec<u8>),
    /// A close: the status code (if any) and reason.
    Close(Option<u16>, String),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A frame or message longer than the reader's limit; the connection
    /// cannot be read past it.
    TooLong(u64),
    /// The peer broke the protocol (what it did is named).
    Protocol(&'static str),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLong(n) => write!(f, "a frame of {n} bytes is over the limit"),
            ReadError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads messages from one side of a WebSocket connection.
#[derive(Debug)]
pub struct Reader<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    /// The message being reassembled from fragments: its opcode and bytes.
    partial: Option<(u8, Vec<u8>)>,
    max: usize,
    /// Frames must be masked (a server reading a client), or must not be.
    masked: bool,
}

/// One parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
    /// Header bytes.
    size: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of `r` that starts with `leftover` (bytes read past the
    /// handshake); messages longer than `max` bytes end the reading.
    /// A server reads `masked` frames.
    pub fn new(r: R, leftover: Vec<u8>, max: usize, masked: bool) -> Self {
        Self {
            r,
            buf: leftover,
            start: 0,
            partial: None,
            max,
            masked,
        }
    }

    /// The next message; `Ok(None)` when the connection ended cleanly
    /// between frames.
    pub async fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(h) = self.header()? else {
                if !self.fill().await? {
                    return if self.buf.len() == self.start {
                        Ok(None)
                    } else {
                        Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
                    };
                }
                continue;
            };
            while self.buf.len() - self.start < h.size + h.len {
                if !self.fill().await? {
                    return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            let from = self.start + h.size;
            let payload = &mut self.buf[from..from + h.len];
            if let Some(key) = h.mask {
                apply_mask(payload, key);
            }
            let payload = payload.to_vec();
            self.start = from + h.len;
            if let Some(m) = self.frame(h, payload)? {
                return Ok(Some(m));
            }
        }
    }

    /// A complete message from a frame, or `None` while fragments remain
    /// (or for a pong, which needs nothing).
    fn frame(&mut self, h: Header, payload: Vec<u8>) -> Result<Option<Incoming>, ReadError> {
        match h.opcode {
            OP_PING => Ok(Some(Incoming::Ping(payload))),
            OP_PONG => Ok(None),
            OP_CLOSE => {
                let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                Ok(Some(Incoming::Close(code, reason)))
            }
            OP_TEXT | OP_BINARY if self.partial.is_some() => Err(ReadError::Protocol(
                "a new message began before the fragmented one ended",
            )),
            OP_TEXT | OP_BINARY if h.fin => Ok(Some(whole(h.opcode, payload)?)),
            OP_TEXT | OP_BINARY => {
                self.partial = Some((h.opcode, payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((op, mut bytes)) = self.partial.take() else {
                    return Err(ReadError::Protocol(
                        "a continuation frame without a message to continue",
                    ));
                };
                bytes.extend_from_slice(&payload);
                if bytes.len() > self.max {
                    return Err(ReadError::TooLong(bytes.len() as u64));
                }
                if h.fin {
                    Ok(Some(whole(op, bytes)?))
                } else {
                    self.partial = Some((op, bytes));
                    Ok(None)
                }
            }
            _ => Err(ReadError::Protocol("unknown opcode")),
        }
    }

    /// Parses the header at the read position, if all of it is buffered.
    fn header(&self) -> Result<Option<Header>, ReadError> {
        let b = &self.buf[self.start..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0F);
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol(
                "reserved bits set, but no extension was negotiated",
            ));
        }
        let masked = b[1] & 0x80 != 0;
        if masked != self.masked {
            return Err(ReadError::Protocol(if self.masked {
                "a client frame must be masked"
            } else {
                "a server frame must not be masked"
            }));
        }
        let (len, mut size) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")), 10),
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        if opcode & 0x08 != 0 && (!fin || len > 125) {
            return Err(ReadError::Protocol(
                "a control frame must be whole and at most 125 bytes",
            ));
        }
        if len > self.max as u64 {
            return Err(ReadError::TooLong(len));
        }
        let mask = if masked {
            if b.len() < size + 4 {
                return Ok(None);
            }
            let k = [b[size], b[size + 1], b[size + 2], b[size + 3]];
            size += 4;
            Some(k)
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            len: len as usize,
            mask,
            size,
        }))
    }

    /// Reads more bytes; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        if self.start > 0 && (self.start == self.buf.len() || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        let n = self.r.read_buf(&mut self.buf).await.map_err(ReadError::Io)?;
        Ok(n > 0)
    }
}

fn whole(opcode: u8, bytes: Vec<u8>) -> Result<Incoming, ReadError> {
    if opcode == OP_BINARY {
        return Ok(Incoming::Binary(bytes));
    }
    String::from_utf8(bytes)
        .map(Incoming::Text)
        .map_err(|_| ReadError::Protocol("a text message that is not UTF-8"))
}

/// Why an upgrade request was refused.
#[derive(Debug)]
pub enum Refused {
    /// The browser origin is not allowed (answered 403 with this reason).
    Origin(String),
    /// Not a WebSocket upgrade (answered 400 or 426), or the socket failed.
    NotWebSocket(String),
}

/// Reads an HTTP upgrade request from `stream` and answers it: 101 when it
/// is a WebSocket handshake from an allowed origin (`origin_ok` sees the
/// `Origin` header). Returns the bytes read past the request (frames the
/// client sent without waiting for the answer).
pub async fn accept<S>(
    stream: &mut S,
    origin_ok: impl FnOnce(Option<&str>) -> Result<(), String>,
) -> Result<Vec<u8>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut origin_ok = Some(origin_ok);
    let (head, answer) = loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| Refused::NotWebSocket(e.to_string()))?;
        if n == 0 {
            return Err(Refused::NotWebSocket("closed before the request ended".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let check = origin_ok.take().expect("one complete request");
                break (head, upgrade(&req, check));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                break (
                    buf.len(),
                    Err((400, Refused::NotWebSocket("request head over 8 KiB".into()))),
                )
            }
            Err(e) => {
                break (
                    buf.len(),
                    Err((400, Refused::NotWebSocket(format!("not HTTP: {e}")))),
                )
            }
        }
    };
    match answer {
        Ok(accept) => {
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream
                .write_all(resp.as_bytes())
                .await
                .map_err(|e| Refused::NotWebSocket(e.to_string()))?;
            Ok(buf.split_off(head))
        }
        Err((status, why)) => {
            let (text, body) = match &why {
                Refused::Origin(w) => ("Forbidden", w.as_str()),
                Refused::NotWebSocket(w) => ("Bad Request", w.as_str()),
            };
            let extra = if status == 426 {
                "Sec-WebSocket-Version: 13\r\n"
            } else {
                ""
            };
            let resp = format!(
                "HTTP/1.1 {status} {text}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
            Err(why)
        }
    }
}

/// Opens a WebSocket on a connected `stream` (the client's side of the
/// handshake) for `host` and `path`; returns the bytes read past the
/// server's answer (frames it sent at once, such as a close naming why).
pub async fn connect<S>(stream: &mut S, host: &str, path: &str) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed the connection during the WebSocket handshake".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let code = resp.code.unwrap_or(0);
                if code != 101 {
                    let body = String::from_utf8_lossy(&buf[head..]).trim().to_owned();
                    return Err(format!(
                        "the server refused the WebSocket upgrade ({code}): {body}"
                    ));
                }
                let expected = accept_key(key.as_bytes());
                let accept = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value);
                if accept != Some(expected.as_bytes()) {
                    return Err("the server's Sec-WebSocket-Accept does not match the key".into());
                }
                return Ok(buf.split_off(head));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("the server's answer head is over 8 KiB".into()),
            Err(e) => return Err(format!("the server's answer is not HTTP: {e}")),
        }
    }
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request, or the
/// status and reason to refuse it with.
fn upgrade(
    req: &httparse::Request<'_, '_>,
    origin_ok: impl FnOnce(Option<&str>) -> Result<(), String>,
) -> Result<String, (u16, Refused)> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let bad = |why: &str| Err((400, Refused::NotWebSocket(why.to_owned())));
    if req.method != Some("GET") {
        return bad("a WebSocket upgrade is a GET request");
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return bad("expected `Upgrade: websocket` and `Connection: Upgrade`: the bus speaks WebSocket");
    }
    if header("sec-websocket-version") != Some("13") {
        return Err((
            426,
            Refused::NotWebSocket("only WebSocket version 13 is supported".into()),
        ));
    }
    let Some(key) = header("sec-websocket-key") else {
        return bad("no Sec-WebSocket-Key header");
    };
    origin_ok(header("origin")).map_err(|why| (403, Refused::Origin(why)))?;
    Ok(accept_key(key.trim().as_bytes()))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: Vec<u8>, max: usize, masked: bool) -> Vec<Result<Incoming, String>> {
        let mut r = Reader::new(&bytes[..], Vec::new(), max, masked);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn frames_of_every_size_round_trip_masked_or_not() {
        for masked in [false, true] {
            let mask = masked.then_some([1, 2, 3, 4]);
            let mut bytes = Vec::new();
            let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 200_000];
            for n in sizes {
                put_frame(&mut bytes, OP_TEXT, "é".repeat(n / 2).as_bytes(), mask);
            }
            put_frame(&mut bytes, OP_BINARY, &[0, 255], mask);
            put_frame(&mut bytes, OP_PING, b"p", mask);
            put_frame(&mut bytes, OP_CLOSE, &close_payload(CLOSE_NORMAL, "bye"), mask);
            let got = read_all(bytes, 1 << 20, masked).await;
            for (i, n) in sizes.iter().enumerate() {
                assert_eq!(got[i], Ok(Incoming::Text("é".repeat(n / 2))), "size {n}");
            }
            let rest = &got[sizes.len()..];
            assert_eq!(rest[0], Ok(Incoming::Binary(vec![0, 255])));
            assert_eq!(rest[1], Ok(Incoming::Ping(b"p".to_vec())));
            assert_eq!(rest[2], Ok(Incoming::Close(Some(1000), "bye".into())));
            assert_eq!(rest.len(), 3);
        }
    }

    #[tokio::test]
    async fn fragments_are_joined_and_protocol_errors_are_named() {
        // "hel" + ping + "lo", as a fragmented text message from a client.
        let mut b = vec![0x01, 0x83, 0, 0, 0, 0];
        b.extend_from_slice(b"hel");
        put_frame(&mut b, OP_PING, b"", Some([9, 9, 9, 9]));
        b.extend_from_slice(&[0x80, 0x82, 0, 0, 0, 0]);
        b.extend_from_slice(b"lo");
        let got = read_all(b, 100, true).await;
        assert_eq!(
            got,
            [Ok(Incoming::Ping(vec![])), Ok(Incoming::Text("hello".into()))]
        );

        let cases: [(Vec<u8>, bool, &str); 6] = [
            (vec![0x81, 0x01, b'x'], true, "must be masked"),
            (vec![0x81, 0x81, 0, 0, 0, 0, b'x'], false, "must not be masked"),
            (vec![0xC1, 0x00], false, "reserved bits"),
            (vec![0x80, 0x00], false, "continuation frame without"),
            (vec![0x09, 0x00], false, "control frame"),
            (vec![0x81, 0x02, 0xff, 0xfe], false, "not UTF-8"),
        ];
        for (bytes, masked, why) in cases {
            let got = read_all(bytes, 100, masked).await;
            assert!(matches!(&got[..], [Err(e)] if e.contains(why)), "{why}: {got:?}");
        }
        let mut long = Vec::new();
        put_frame(&mut long, OP_TEXT, &[b'x'; 101], None);
        assert!(read_all(long, 100, false).await[0]
            .as_ref()
            .unwrap_err()
            .contains("101 bytes"));
        // A stream cut inside a frame is an error, between frames the end.
        assert!(read_all(vec![0x81, 0x05, b'x'], 100, false).await[0].is_err());
        assert!(read_all(vec![], 100, false).await.is_empty());
    }

    #[tokio::test]
    async fn the_handshake_answers_101_and_keeps_early_frames_or_refuses_with_a_reason() {
        use tokio::io::AsyncReadExt;
        let req = |extra: &str| {
            format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
        };
        let run = |request: String| async move {
            let (mut client, mut server) = tokio::io::duplex(16 * 1024);
            client.write_all(request.as_bytes()).await.unwrap();
            let r = accept(&mut server, |o| match o {
                Some(o) => Err(format!("origin {o} is not allowed")),
                None => Ok(()),
            })
            .await;
            drop(server);
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            (r, answer)
        };
        let (r, answer) = run(req("") + "early").await;
        assert_eq!(r.unwrap(), b"early");
        // The RFC 6455 §1.3 example key and answer.
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        assert!(
            answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{answer}"
        );
        let (r, answer) = run(req("Origin: https://evil.example\r\n")).await;
        assert!(matches!(r, Err(Refused::Origin(_))));
        assert!(
            answer.starts_with("HTTP/1.1 403") && answer.ends_with("is not allowed"),
            "{answer}"
        );
        let (r, answer) = run("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into()).await;
        assert!(matches!(r, Err(Refused::NotWebSocket(_))));
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("Upgrade: websocket"),
            "{answer}"
        );
        let (_, answer) = run(req("").replace("Version: 13", "Version: 8")).await;
        assert!(
            answer.starts_with("HTTP/1.1 426") && answer.contains("Sec-WebSocket-Version: 13"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_client_handshake_keeps_what_the_server_sent_at_once_and_names_a_refusal() {
        let (mut client, mut server) = tokio::io::duplex(16 * 1024);
        let node = tokio::spawn(async move {
            let r = accept(&mut server, |_| Ok(())).await.map_err(|_| ()).unwrap();
            let mut close = Vec::new();
            put_frame(&mut close, OP_CLOSE, &close_payload(CLOSE_AGAIN, "full"), None);
            server.write_all(&close).await.unwrap();
            (r, server)
        });
        let leftover = connect(&mut client, "h:1", "/").await.unwrap();
        let (early, _server) = node.await.unwrap();
        assert!(early.is_empty());
        let mut r = Reader::new(client, leftover, 100, false);
        assert_eq!(
            r.next().await.unwrap(),
            Some(Incoming::Close(Some(CLOSE_AGAIN), "full".into()))
        );

        let (mut client, mut server) = tokio::io::duplex(16 * 1024);
        tokio::spawn(async move {
            let _ = accept(&mut server, |_| Err("no browsers".into())).await;
        });
        // A client sends no Origin: this server refuses everyone.
        let e = connect(&mut client, "h:1", "/").await.unwrap_err();
        assert!(e.contains("(403): no browsers"), "{e}");
    }
}
