//! Listeners: WebSocket on `bus.addr` and newline-delimited JSON on the Unix socket.
//! Both count against `bus.max_connections`; a WebSocket upgrade from a
//! browser needs its origin in `bus.allowed_origins` ([`super::guard`]).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::confirms::{self, Via};
use super::line_out::{self, LineOut};
use super::wire::FrameError;
use super::{outbound, session, Bus};
use crate::{Error, Result};

/// The bus listeners; dropping it (or [`RunningBus::stop`]) stops accepting.
#[derive(Debug)]
pub struct RunningBus {
    /// WebSocket address actually bound.
    pub ws_addr: SocketAddr,
    /// Unix socket path, if enabled.
    pub unix_path: Option<PathBuf>,
    stop: watch::Sender<bool>,
}

impl RunningBus {
    /// Stops accepting connections and removes the Unix socket file.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for RunningBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the listeners (WebSocket on `addr`) and starts accepting on the current tokio runtime.
pub async fn start(bus: Arc<Bus>, addr: SocketAddr) -> Result<RunningBus> {
    let tcp = TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        what: "bus",
        addr,
        source,
    })?;
    let ws_addr = tcp.local_addr().map_err(|source| Error::Bind {
        what: "bus",
        addr,
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(accept_ws(bus.clone(), tcp, stopped.clone()));
    tokio::spawn(flush_auth_failures(bus.clone(), stopped.clone()));
    let unix_path = match &bus.settings.unix_socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
                Error::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            tokio::spawn(accept_unix(bus.clone(), listener, stopped));
            Some(path.clone())
        }
        None => None,
    };
    tracing::info!(
        ws = %ws_addr,
        unix = unix_path.as_ref().map(|p| p.display().to_string()).as_deref(),
        "bus listening"
    );
    Ok(RunningBus {
        ws_addr,
        unix_path,
        stop,
    })
}

/// Writes the failed-hello windows that ended, until the bus stops.
async fn flush_auth_failures(bus: Arc<Bus>, mut stopped: watch::Receiver<bool>) {
    let every = (bus.settings.auth_failure_window / 4).max(std::time::Duration::from_millis(250));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stopped.changed() => return bus.flush_auth_failures(),
            _ = tick.tick() => bus.flush_auth_failures(),
        }
    }
}

/// Why a connection over the cap is closed.
fn too_many(max: usize) -> String {
    format!("too many connections: the bus allows {max} at once (bus.max_connections); try again later")
}

async fn accept_ws(bus: Arc<Bus>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => { tokio::spawn(ws_conn(bus.clone(), stream, peer)); }
                Err(e) => tracing::warn!(error = %e, "bus accept failed"),
            }
        }
    }
}

async fn ws_conn(bus: Arc<Bus>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let max = bus.settings.max_frame_bytes;
    // Small request/answer frames: Nagle's algorithm would hold them back.
    let _ = stream.set_nodelay(true);
    // Frames a little over the limit still reach us so the error can name the
    // limit; far larger ones are cut by the WebSocket layer itself.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(super::wire::WS_READ_BUFFER)
        .max_message_size(Some(max * 2 + 4096))
        .max_frame_size(Some(max * 2 + 4096));
    let allowed = bus.settings.allowed_origins.clone();
    let mut refused_origin = None;
    // The shape tungstenite's handshake callback must have.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> std::result::Result<Response, ErrorResponse> {
        let origin = req
            .headers()
            .get("origin")
            .map(|o| o.to_str().unwrap_or("?").to_owned());
        if super::guard::origin_allowed(origin.as_deref(), &allowed) {
            return Ok(resp);
        }
        let why = format!(
            "origin {} may not open the bus: browsers are refused unless their origin is listed in bus.allowed_origins",
            origin.as_deref().unwrap_or("?")
        );
        refused_origin = Some(why.clone());
        let mut r = ErrorResponse::new(Some(why));
        *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
        Err(r)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(cfg)).await;
    if let Some(why) = refused_origin {
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => "forbidden_origin").increment(1);
        bus.auth_failed(
            &peer.to_string(),
            serde_json::json!({ "peer": peer.to_string(), "code": "forbidden_origin", "why": why }),
        );
        return;
    }
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "not a WebSocket handshake");
            return;
        }
    };
    let max_conns = bus.settings.max_connections;
    let Some(_slot) = bus.connections.take(max_conns) else {
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => "too_many_connections").increment(1);
        tracing::warn!(%peer, max = max_conns, "bus connection refused: too many open");
        let close = CloseFrame {
            code: CloseCode::Again,
            reason: too_many(max_conns).into(),
        };
        let _ = futures::SinkExt::send(&mut ws, Message::Close(Some(close))).await;
        return;
    };
    let (write, read) = ws.split();
    let (tx, rx) = mpsc::channel::<String>(bus.settings.outbound_queue);
    // Never full: each confirm in it holds one of the session's
    // `outbound_queue` slots (`confirms.rs`).
    let (confirm_tx, confirm_rx) = mpsc::channel(bus.settings.outbound_queue.max(1));
    let writer = tokio::spawn(confirms::write_ws(write, rx, confirm_rx));
    // Ends at a close frame or a read error; a frame the WebSocket layer
    // refused as too long ends it too (it cannot be skipped), but the app is
    // told why first.
    let frames = read
        .scan(false, move |ended, m| {
            let item = match m {
                _ if *ended => None,
                Ok(Message::Text(t)) => Some(Some(Ok(t.as_str().to_owned()))),
                Ok(Message::Binary(_)) => Some(Some(Err((
                    None,
                    FrameError::new(
                        "bad_frame",
                        "binary WebSocket frames are not supported: send JSON text",
                    ),
                )))),
                Ok(Message::Close(_)) => None,
                Ok(_) => Some(None),
                Err(tokio_tungstenite::tungstenite::Error::Capacity(e)) => {
                    *ended = true;
                    Some(Some(Err((None, FrameError::new(
                        "oversized",
                        format!("frame is far over the limit (bus.max_frame_bytes) of {max} bytes ({e}): the connection is closed"),
                    )))))
                }
                Err(_) => None,
            };
            futures::future::ready(item)
        })
        .filter_map(futures::future::ready);
    session::run(
        bus,
        Box::pin(frames),
        tx,
        peer.to_string(),
        Via::Writer(confirm_tx),
    )
    .await;
    outbound::drain(writer).await;
}

async fn accept_unix(bus: Arc<Bus>, listener: UnixListener, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(unix_conn(bus.clone(), stream)); }
                Err(e) => tracing::warn!(error = %e, "bus unix accept failed"),
            }
        }
    }
}

/// How much of an overlong Unix line is searched for its `"id"`.
const ID_PREFIX_BYTES: usize = 4096;

async fn unix_conn(bus: Arc<Bus>, mut stream: tokio::net::UnixStream) {
    let max = bus.settings.max_frame_bytes;
    let max_conns = bus.settings.max_connections;
    let Some(_slot) = bus.connections.take(max_conns) else {
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => "too_many_connections").increment(1);
        tracing::warn!(max = max_conns, "bus unix connection refused: too many open");
        let e = FrameError::new("too_many_connections", too_many(max_conns));
        let line = format!("{}\n", super::wire::error_frame(None, &e));
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, line.as_bytes()).await;
        return;
    };
    // A second handle for the flusher thread to write confirms through.
    let direct = match stream.into_std().and_then(|s| Ok((s.try_clone()?, s))) {
        Ok((second, stream)) => match LineOut::new(second).and_then(|out| {
            stream.set_nonblocking(true)?;
            Ok((out, tokio::net::UnixStream::from_std(stream)?))
        }) {
            Ok(pair) => pair,
            Err(e) => return tracing::warn!(error = %e, "bus unix connection dropped: cannot set it up"),
        },
        Err(e) => {
            return tracing::warn!(error = %e, "bus unix connection dropped: cannot duplicate its handle")
        }
    };
    let (out, stream) = direct;
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel::<String>(bus.settings.outbound_queue);
    let writer = tokio::spawn(line_out::write_lines(write, out.clone(), rx));
    // Lines longer than the limit are reported and skipped, never buffered whole.
    let lines = futures::stream::unfold(BufReader::new(read), move |mut r| async move {
        let mut buf = Vec::new();
        let mut too_long = false;
        // An overlong line's id, read from its start, so its error is answered with it.
        let mut id = None;
        loop {
            let chunk = match r.fill_buf().await {
                Ok([]) => return None,
                Ok(c) => c,
                Err(_) => return None,
            };
            let (line_end, take) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, chunk.len()),
            };
            if !too_long {
                buf.extend_from_slice(&chunk[..take]);
                if buf.len() > max + 1 {
                    too_long = true;
                    id = super::wire::id_in_prefix(&buf[..buf.len().min(ID_PREFIX_BYTES)]);
                    buf.clear();
                }
            }
            r.consume(take);
            if line_end {
                break;
            }
        }
        let item = if too_long {
            Err((
                id,
                FrameError::new(
                    "oversized",
                    format!("frame is over the limit (bus.max_frame_bytes) of {max} bytes"),
                ),
            ))
        } else {
            String::from_utf8(buf)
                .map(|s| s.trim_end().to_owned())
                .map_err(|_| (None, FrameError::new("malformed", "frame is not UTF-8")))
        };
        Some((item, r))
    });
    session::run(bus, Box::pin(lines), tx, "unix".into(), Via::Line(out)).await;
    outbound::drain(writer).await;
}
