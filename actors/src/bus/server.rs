//! Listeners: WebSocket on `bus.addr` and newline-delimited JSON on the Unix socket.
//! Both count against `bus.max_connections`; a WebSocket upgrade from a
//! browser needs its origin in `bus.allowed_origins` ([`super::guard`]).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};

use super::frame_out::{self, FrameOut, Sock};
use super::wire::FrameError;
use super::ws::{self, Incoming, ReadError};
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

async fn ws_conn(bus: Arc<Bus>, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    let max = bus.settings.max_frame_bytes;
    // Small request/answer frames: Nagle's algorithm would hold them back.
    let _ = stream.set_nodelay(true);
    let allowed = bus.settings.allowed_origins.clone();
    let check = |origin: Option<&str>| {
        if super::guard::origin_allowed(origin, &allowed) {
            return Ok(());
        }
        Err(format!(
            "origin {} may not open the bus: browsers are refused unless their origin is listed in bus.allowed_origins",
            origin.unwrap_or("?")
        ))
    };
    let shake = tokio::time::timeout(bus.settings.hello_timeout, ws::accept(&mut stream, check)).await;
    let leftover = match shake {
        Ok(Ok(leftover)) => leftover,
        Ok(Err(ws::Refused::Origin(why))) => {
            metrics::counter!(crate::metrics::BUS_ERRORS, "code" => "forbidden_origin").increment(1);
            bus.auth_failed(
                &peer.to_string(),
                serde_json::json!({ "peer": peer.to_string(), "code": "forbidden_origin", "why": why }),
            );
            return;
        }
        Ok(Err(ws::Refused::NotWebSocket(why))) => {
            return tracing::debug!(%peer, error = %why, "not a WebSocket handshake");
        }
        Err(_) => return tracing::debug!(%peer, "no WebSocket handshake within bus.hello_timeout"),
    };
    let max_conns = bus.settings.max_connections;
    let Some(_slot) = bus.connections.take(max_conns) else {
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => "too_many_connections").increment(1);
        tracing::warn!(%peer, max = max_conns, "bus connection refused: too many open");
        let mut close = Vec::new();
        let reason = ws::close_payload(ws::CLOSE_AGAIN, &too_many(max_conns));
        ws::put_frame(&mut close, ws::OP_CLOSE, &reason, None);
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &close).await;
        return;
    };
    // A second handle for the flusher thread to write confirms through.
    let (out, stream) = match stream.into_std().and_then(|s| {
        let out = FrameOut::new(Sock::WebSocket(s.try_clone()?))?;
        s.set_nonblocking(true)?;
        Ok((out, tokio::net::TcpStream::from_std(s)?))
    }) {
        Ok(pair) => pair,
        Err(e) => return tracing::warn!(%peer, error = %e, "bus connection dropped: cannot set it up"),
    };
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel::<String>(bus.settings.outbound_queue);
    let writer = tokio::spawn(frame_out::write_frames(write, out.clone(), rx));
    // Frames a little over the limit still reach the session so the error
    // can name the limit and the frame's id; far larger ones end the
    // connection (it cannot be read past them), after the app is told why.
    let reader = ws::Reader::new(read, leftover, max * 2 + 4096, true);
    let control = out.clone();
    let frames = futures::stream::unfold(Some(reader), move |reader| {
        let control = control.clone();
        async move {
            let mut r = reader?;
            loop {
                let item = match r.next().await {
                    Ok(Some(Incoming::Text(t))) => Ok(t),
                    Ok(Some(Incoming::Binary(_))) => Err((
                        None,
                        FrameError::new(
                            "bad_frame",
                            "binary WebSocket frames are not supported: send JSON text",
                        ),
                    )),
                    Ok(Some(Incoming::Ping(p))) => {
                        control.send_control(ws::OP_PONG, &p);
                        continue;
                    }
                    Ok(Some(Incoming::Close(code, _))) => {
                        let code = code.unwrap_or(ws::CLOSE_NORMAL);
                        control.send_control(ws::OP_CLOSE, &ws::close_payload(code, ""));
                        return None;
                    }
                    Ok(None) | Err(ReadError::Io(_)) => return None,
                    Err(ReadError::TooLong(n)) => {
                        let e = FrameError::new(
                            "oversized",
                            format!("frame is far over the limit (bus.max_frame_bytes) of {max} bytes ({n} bytes): the connection is closed"),
                        );
                        return Some((Err((None, e)), None));
                    }
                    Err(ReadError::Protocol(why)) => {
                        tracing::debug!(%why, "bus WebSocket protocol error: closing");
                        control.send_control(ws::OP_CLOSE, &ws::close_payload(ws::CLOSE_PROTOCOL, why));
                        return None;
                    }
                };
                return Some((item, Some(r)));
            }
        }
    });
    session::run(bus, Box::pin(frames), tx, peer.to_string(), out).await;
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
        Ok((second, stream)) => match FrameOut::new(Sock::Unix(second)).and_then(|out| {
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
    let writer = tokio::spawn(frame_out::write_frames(write, out.clone(), rx));
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
            // The line's end is cut off in place, without a second copy.
            while buf.last().is_some_and(u8::is_ascii_whitespace) {
                buf.pop();
            }
            String::from_utf8(buf).map_err(|_| (None, FrameError::new("malformed", "frame is not UTF-8")))
        };
        Some((item, r))
    });
    session::run(bus, Box::pin(lines), tx, "unix".into(), out).await;
    outbound::drain(writer).await;
}
