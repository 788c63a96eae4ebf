//! The sending side of a Unix-socket session, shared by threads: a durable
//! publish's confirm is written by the flusher thread as soon as the pass
//! that covers it ends, without waking a runtime thread for it (that hop
//! and its task wake-ups were ~20% of the node's CPU per message at 16
//! sequential publishers; docs/benchmarks.md). Every other frame goes
//! through the session's writer task as before.
//!
//! Frames never interleave: every write happens under one lock, and once a
//! write is partial the rest of it, and everything after it, waits in a
//! backlog that only the writer task drains (when the socket is writable).

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};

/// Past this many bytes waiting in the backlog, the session reads no more
/// publishes until the app reads what it was sent.
pub(super) const BACKLOG_ROOM: usize = 256 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct LineOut {
    state: Mutex<Backlog>,
    /// The writer task: bytes wait in the backlog.
    wake: Notify,
    /// Sessions waiting for room: the backlog shrank or the connection broke.
    room: Notify,
}

#[derive(Debug, Default)]
struct Backlog {
    /// A second handle to the connection, non-blocking; closed with the line.
    sock: Option<UnixStream>,
    bytes: Vec<u8>,
    /// How much of `bytes` is written already.
    start: usize,
    /// A write failed (the app is gone) or the writer task ended: later
    /// frames are dropped, never half-written.
    broken: bool,
}

impl Backlog {
    fn waiting(&self) -> usize {
        self.bytes.len() - self.start
    }
}

impl LineOut {
    /// Wraps a second handle to the connection (made non-blocking here).
    pub(super) fn new(sock: UnixStream) -> io::Result<Arc<Self>> {
        sock.set_nonblocking(true)?;
        Ok(Arc::new(Self {
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

    /// Sends `frame` and a newline from any thread without blocking: written
    /// at once when nothing waits before it, else (or for what the socket
    /// does not take) queued for the writer task.
    pub(super) fn send_line(&self, frame: &str) {
        let mut b = self.lock();
        let Some(sock) = b.sock.as_ref().filter(|_| !b.broken) else {
            return;
        };
        if b.waiting() > 0 {
            b.bytes.extend_from_slice(frame.as_bytes());
            b.bytes.push(b'\n');
            return;
        }
        let mut line = Vec::with_capacity(frame.len() + 1);
        line.extend_from_slice(frame.as_bytes());
        line.push(b'\n');
        let mut at = 0;
        while at < line.len() {
            match (&*sock).write(&line[at..]) {
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
    fn drain(&self, half: &OwnedWriteHalf) -> io::Result<bool> {
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

/// The writer task of a Unix-socket session: the backlog first, then the
/// frames queued on `rx` (a burst in one write), until `rx` closes.
pub(super) async fn write_lines(half: OwnedWriteHalf, out: Arc<LineOut>, mut rx: mpsc::Receiver<String>) {
    write_until_closed(&half, &out, &mut rx).await;
    out.close();
}

async fn write_until_closed(half: &OwnedWriteHalf, out: &LineOut, rx: &mut mpsc::Receiver<String>) {
    let mut buf = String::new();
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
                    buf.push_str(&first);
                    while let Ok(more) = rx.try_recv() {
                        buf.push('\n');
                        buf.push_str(&more);
                    }
                    out.send_line(&buf);
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
        Arc<LineOut>,
        OwnedWriteHalf,
        tokio::net::unix::OwnedReadHalf,
        UnixStream,
    ) {
        let (node, app) = UnixStream::pair().unwrap();
        let out = LineOut::new(node.try_clone().unwrap()).unwrap();
        node.set_nonblocking(true).unwrap();
        let (read, write) = tokio::net::UnixStream::from_std(node).unwrap().into_split();
        (out, write, read, app)
    }

    #[tokio::test]
    async fn lines_from_threads_and_the_writer_task_arrive_whole_and_in_order_past_a_full_socket() {
        let (out, write, _read, app) = pair();
        let (tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_lines(write, out.clone(), rx));
        // Far more than a socket buffer, while the app does not read yet:
        // the backlog takes the rest, and the session is told to wait.
        let big = "x".repeat(64 * 1024);
        let sender = {
            let out = out.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    out.send_line(&format!("{i} {big}"));
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
        let writer = tokio::spawn(write_lines(write, out.clone(), rx));
        let big = "y".repeat(512 * 1024);
        out.send_line(&big);
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
        out.send_line("dropped, not queued");
        assert_eq!(out.lock().waiting(), 0);
    }
}
