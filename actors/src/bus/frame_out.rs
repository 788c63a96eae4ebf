//! The sending side of a session, shared by threads, on either transport
//! (one frame per line on the Unix socket, WebSocket text frames over TCP):
//! a durable publish's confirm is written by the flusher thread as soon as
//! the pass that covers it ends, without waking a runtime thread for it
//! (that hop and its task wake-ups were ~20% of the node's CPU per message
//! at 16 sequential publishers; docs/benchmarks.md). Every other frame goes
//! through the session's writer task.
//!
//! Frames never interleave: every write happens under one lock, and once a
//! write is partial the rest of it, and everything after it, waits in a
//! backlog that only the writer task drains (when the socket is writable).

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::ws;

/// A second, non-blocking handle to a session's connection.
#[derive(Debug)]
pub(super) enum Sock {
    /// The Unix socket: a frame is a line.
    Unix(UnixStream),
    /// A WebSocket over TCP: a frame is a text frame.
    WebSocket(TcpStream),
}

impl Sock {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_nonblocking(true),
            Sock::WebSocket(s) => s.set_nonblocking(true),
        }
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => (&*s).write(bytes),
            Sock::WebSocket(s) => (&*s).write(bytes),
        }
    }
}

/// The runtime's write half of a session's connection, for the writer task.
pub(super) trait WriteHalf: Send + Sync {
    /// Writes what the socket takes now.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
    /// Waits until the socket can take more.
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

impl WriteHalf for tokio::net::unix::OwnedWriteHalf {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        tokio::net::unix::OwnedWriteHalf::try_write(self, bytes)
    }
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        tokio::net::unix::OwnedWriteHalf::writable(self)
    }
}

impl WriteHalf for tokio::net::tcp::OwnedWriteHalf {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        tokio::net::tcp::OwnedWriteHalf::try_write(self, bytes)
    }
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        tokio::net::tcp::OwnedWriteHalf::writable(self)
    }
}

/// Past this many bytes waiting in the backlog, the session reads no more
/// publishes until the app reads what it was sent.
pub(super) const BACKLOG_ROOM: usize = 256 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct FrameOut {
    state: Mutex<Backlog>,
    /// The writer task: bytes wait in the backlog.
    wake: Notify,
    /// Sessions waiting for room: the backlog shrank or the connection broke.
    room: Notify,
    /// Frames are WebSocket text frames (else lines).
    websocket: bool,
}

#[derive(Debug, Default)]
struct Backlog {
    /// A second handle to the connection, non-blocking; closed with the line.
    sock: Option<Sock>,
    bytes: Vec<u8>,
    /// How much of `bytes` is written already.
    start: usize,
    /// A write failed (the app is gone) or the writer task ended: later
    /// frames are dropped, never half-written.
    broken: bool,
    /// A WebSocket close frame was sent: nothing may follow it.
    closing: bool,
    /// Confirms of the flusher pass running now, written once it ends
    /// ([`crate::queue::after_pass`]); anything sent later goes after them.
    corked: Vec<u8>,
}

impl Backlog {
    fn waiting(&self) -> usize {
        self.bytes.len() - self.start
    }
}

impl FrameOut {
    /// Wraps a second handle to the connection (made non-blocking here).
    pub(super) fn new(sock: Sock) -> io::Result<Arc<Self>> {
        sock.set_nonblocking()?;
        let websocket = matches!(sock, Sock::WebSocket(_));
        Ok(Arc::new(Self {
            websocket,
            state: Mutex::new(Backlog {
                sock: Some(sock),
                ..Backlog::default()
            }),
            wake: Notify::new(),
            room: Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `frame` (a line, or a WebSocket text frame) from any thread
    /// without blocking: written at once when nothing waits before it, else
    /// (or for what the socket does not take) queued for the writer task.
    pub(super) fn send_frame(self: &Arc<Self>, frame: &str) {
        if crate::queue::in_pass() {
            let mut b = self.lock();
            if b.broken || b.closing {
                return;
            }
            let first = b.corked.is_empty();
            self.put(&mut b.corked, frame);
            drop(b);
            if first {
                let me = self.clone();
                crate::queue::after_pass(move || me.uncork());
            }
            return;
        }
        self.send_with(|out| self.put(out, frame), frame.len() + 10, false);
    }

    /// Writes the confirms held back for the end of a pass.
    pub(super) fn uncork(&self) {
        self.send_with(|_| {}, 0, false);
    }

    /// Appends `frame` framed for this transport.
    pub(super) fn put(&self, out: &mut Vec<u8>, frame: &str) {
        if self.websocket {
            ws::put_frame(out, ws::OP_TEXT, frame.as_bytes(), None);
        } else {
            out.extend_from_slice(frame.as_bytes());
            out.push(b'\n');
        }
    }

    /// Sends frames already framed for the transport (several frames the
    /// writer task gathered, a WebSocket pong or close).
    pub(super) fn send_raw(&self, bytes: &[u8]) {
        self.send_with(|out| out.extend_from_slice(bytes), bytes.len(), false);
    }

    /// Sends a WebSocket control frame (nothing on the Unix socket); after
    /// a close frame nothing more is sent.
    pub(super) fn send_control(&self, opcode: u8, payload: &[u8]) {
        if self.websocket {
            let mut bytes = Vec::with_capacity(payload.len() + 2);
            ws::put_frame(&mut bytes, opcode, payload, None);
            self.send_with(
                |out| out.extend_from_slice(&bytes),
                bytes.len(),
                opcode == ws::OP_CLOSE,
            );
        }
    }

    fn send_with(&self, put: impl FnOnce(&mut Vec<u8>), size: usize, close: bool) {
        let mut b = self.lock();
        if b.broken || b.sock.is_none() || b.closing {
            return;
        }
        b.closing = close;
        // Frames held back for the end of a pass go before anything later.
        let mut line = std::mem::take(&mut b.corked);
        if b.waiting() > 0 {
            b.bytes.extend_from_slice(&line);
            put(&mut b.bytes);
            return;
        }
        line.reserve(size);
        put(&mut line);
        if line.is_empty() {
            return;
        }
        let mut at = 0;
        while at < line.len() {
            let Some(sock) = b.sock.as_ref() else { return };
            match sock.write(&line[at..]) {
                Ok(0) => return self.break_off(b),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return self.break_off(b),
            }
        }
        if at < line.len() {
            b.bytes.clear();
            b.start = 0;
            b.bytes.extend_from_slice(&line[at..]);
            drop(b);
            self.wake.notify_one();
        }
    }

    fn break_off(&self, mut b: MutexGuard<'_, Backlog>) {
        b.broken = true;
        b.sock = None;
        b.bytes = Vec::new();
        b.start = 0;
        drop(b);
        self.room.notify_waiters();
    }

    /// No more writes: the session's writer task ended. A confirm that
    /// comes later (its pass took longer than the session's grace) is
    /// dropped whole rather than written half before the connection closes.
    fn close(&self) {
        self.break_off(self.lock());
    }

    /// Writes what the backlog holds through the runtime's handle (so a full
    /// socket is seen by its readiness); `Ok(true)` once it is empty.
    fn drain(&self, half: &impl WriteHalf) -> io::Result<bool> {
        let mut b = self.lock();
        if b.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        while b.waiting() > 0 {
            match half.try_write(&b.bytes[b.start..]) {
                Ok(0) => {
                    self.break_off(b);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => b.start += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    self.break_off(b);
                    return Err(e);
                }
            }
        }
        b.start = 0;
        b.bytes.clear();
        if b.bytes.capacity() > BACKLOG_ROOM {
            b.bytes.shrink_to(BACKLOG_ROOM);
        }
        drop(b);
        self.room.notify_waiters();
        Ok(true)
    }

    /// Waits until the backlog holds at most [`BACKLOG_ROOM`] bytes (or the
    /// connection broke).
    pub(super) async fn wait_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let b = self.lock();
                if b.broken || b.waiting() <= BACKLOG_ROOM {
                    return;
                }
            }
            room.await;
        }
    }
}

/// The writer task of a session: the backlog first, then the frames
/// queued on `rx` (a burst in one write), until `rx` closes; a WebSocket
/// session ends with a close frame.
pub(super) async fn write_frames(half: impl WriteHalf, out: Arc<FrameOut>, mut rx: mpsc::Receiver<String>) {
    write_until_closed(&half, &out, &mut rx).await;
    out.uncork();
    out.send_control(ws::OP_CLOSE, &ws::close_payload(ws::CLOSE_NORMAL, ""));
    while let Ok(false) = out.drain(&half) {
        if half.writable().await.is_err() {
            break;
        }
    }
    out.close();
}

async fn write_until_closed(half: &impl WriteHalf, out: &FrameOut, rx: &mut mpsc::Receiver<String>) {
    let mut buf = Vec::new();
    loop {
        // Everything already in the backlog goes before anything newer.
        loop {
            match out.drain(half) {
                Ok(true) => break,
                Ok(false) => {
                    if half.writable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        tokio::select! {
            biased;
            _ = out.wake.notified() => {}
            frame = rx.recv() => match frame {
                Some(first) => {
                    buf.clear();
                    out.put(&mut buf, &first);
                    while let Ok(more) = rx.try_recv() {
                        out.put(&mut buf, &more);
                    }
                    out.send_raw(&buf);
                }
                None => break,
            },
        }
    }
    // The session ended: what is left still goes, if the app reads it.
    while let Ok(false) = out.drain(half) {
        if half.writable().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A connected pair: the node's side split as the server splits it, and
    /// the app's side.
    fn pair() -> (
        Arc<FrameOut>,
        tokio::net::unix::OwnedWriteHalf,
        tokio::net::unix::OwnedReadHalf,
        UnixStream,
    ) {
        let (node, app) = UnixStream::pair().unwrap();
        let out = FrameOut::new(Sock::Unix(node.try_clone().unwrap())).unwrap();
        node.set_nonblocking(true).unwrap();
        let (read, write) = tokio::net::UnixStream::from_std(node).unwrap().into_split();
        (out, write, read, app)
    }

    #[tokio::test]
    async fn lines_from_threads_and_the_writer_task_arrive_whole_and_in_order_past_a_full_socket() {
        let (out, write, _read, app) = pair();
        let (tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_frames(write, out.clone(), rx));
        // Far more than a socket buffer, while the app does not read yet:
        // the backlog takes the rest, and the session is told to wait.
        let big = "x".repeat(64 * 1024);
        let sender = {
            let out = out.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    out.send_frame(&format!("{i} {big}"));
                }
            })
        };
        sender.join().unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), out.wait_room())
                .await
                .is_err(),
            "the backlog is over its room: a session must wait"
        );
        tx.send("from the task".into()).await.unwrap();
        drop(tx);
        app.set_nonblocking(true).unwrap();
        let mut lines = BufReader::new(tokio::net::UnixStream::from_std(app).unwrap()).lines();
        for i in 0..40 {
            let line = lines.next_line().await.unwrap().unwrap();
            assert_eq!(line, format!("{i} {big}"), "line {i} whole and in order");
        }
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("from the task"));
        writer.await.unwrap();
        out.wait_room().await;
        assert_eq!(
            lines.next_line().await.unwrap(),
            None,
            "the writer's end closes the stream"
        );
    }

    #[tokio::test]
    async fn a_gone_app_breaks_the_line_and_frees_waiting_sessions() {
        let (out, write, read, app) = pair();
        let (_tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_frames(write, out.clone(), rx));
        let big = "y".repeat(512 * 1024);
        out.send_frame(&big);
        drop(app);
        drop(read);
        // The writer task finds the broken pipe; waiting sessions go on.
        tokio::time::timeout(std::time::Duration::from_secs(5), out.wait_room())
            .await
            .expect("room once the app is gone");
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer ends")
            .unwrap();
        out.send_frame("dropped, not queued");
        assert_eq!(out.lock().waiting(), 0);
    }
}
