//! Group commit: publishers ask for a flush and wait; one thread makes
//! durable, in one pass, everything asked before it started. In `always` mode
//! a publish's record goes to the queue's write-ahead log ([`super::wal`]):
//! a pass is one write and one `fdatasync` of it, and sled itself is flushed
//! about once a second (a checkpoint, after which the log starts over). Other writes
//! (dead-lettering, replays) ask for a full flush of sled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::done::{CloseOnExit, Done, OnDurable};
use super::wal::Wal;
use crate::store::{SledStore, Store};

/// Sled is flushed and the log started over at least this often while it holds records.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// ... or once the log is this large.
const CHECKPOINT_BYTES: u64 = super::wal::SIZE / 2;

/// How long a log pass may wait for the publishers the last pass confirmed
/// to send their next records, when fewer are in and nothing was waiting
/// when that pass ended. Publishers that wait for their confirm come back
/// together; a pass for each straggler costs a write and an `fdatasync`
/// (~80 µs of CPU on a virtio disk) for a few messages, and on a machine
/// whose cores the publishers share, that CPU is throughput. A lone
/// publisher never waits (the last pass carried one), nor do publishers
/// that keep several publishes in flight (records are waiting when a pass
/// ends: waiting would only lengthen the pipeline).
const GATHER: Duration = Duration::from_micros(200);

/// Writes the messages the queues still hold in memory to sled (see
/// `messages.rs`); called before every sled flush.
pub(crate) type Seal = Box<dyn Fn() -> Result<(), String> + Send>;

/// How often the open chunks go to sled in confirm mode `none` (sled's own
/// periodic flush then makes them durable).
const SEAL_EVERY: Duration = Duration::from_millis(200);

/// When a publish is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "ms")]
pub enum ConfirmMode {
    /// After an fsync that covers it; concurrent publishes share one fsync.
    Always,
    /// After the next periodic fsync (every `ms`).
    Interval(u64),
    /// At once: the message is written but a crash may lose it.
    None,
}

#[derive(Debug, Default)]
struct State {
    requested: u64,
    /// A request needs sled itself flushed (not only the log).
    full: bool,
    /// Log records (encoded envelopes) queued since the last pass.
    records: Vec<Vec<u8>>,
    stop: bool,
    /// The flusher thread is waiting on the condvar (else it will look at
    /// the state before it waits again): a publish wakes it only then, since
    /// every `notify_one` is a futex syscall.
    waiting: bool,
    /// While gathering: the record count that wakes the flusher (0: any request).
    want: usize,
}

/// The flusher thread's handle.
#[derive(Debug)]
pub(crate) struct Flusher {
    state: Arc<(Mutex<State>, Condvar)>,
    done: Arc<Done>,
    /// Consumer groups changed since the last checkpoint (see
    /// [`Flusher::groups_changed`]).
    groups_dirty: Arc<AtomicBool>,
    mode: ConfirmMode,
    /// Publishes go through the write-ahead log.
    logged: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread; `wal` is used in `always` mode only.
    pub(crate) fn start(store: SledStore, mode: ConfirmMode, wal: Option<Wal>, seal: Seal) -> Self {
        let wal = wal.filter(|_| mode == ConfirmMode::Always);
        let logged = wal.is_some();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let done = Arc::new(Done::default());
        let groups_dirty = Arc::new(AtomicBool::new(false));
        let (st, tx, dirty) = (state.clone(), done.clone(), groups_dirty.clone());
        let period = match mode {
            ConfirmMode::Interval(ms) => Some(Duration::from_millis(ms.max(1))),
            ConfirmMode::None => Some(SEAL_EVERY),
            ConfirmMode::Always => None,
        };
        let thread = std::thread::Builder::new()
            .name("vigil-flusher".into())
            .spawn(move || run(store, (st, tx, dirty), (mode, period), wal, seal))
            .expect("cannot spawn the flusher thread");
        Self {
            state,
            done,
            groups_dirty,
            mode,
            logged,
            thread: Some(thread),
        }
    }

    /// Asks for a flush of sled covering every write made before this call; returns its ticket.
    pub(crate) fn request(&self) -> u64 {
        self.ask(Ask::Full)
    }

    /// Asks for a pass covering every record logged before this call (a
    /// duplicate publish waits for its original this way).
    pub(crate) fn request_pass(&self) -> u64 {
        self.ask(Ask::Pass)
    }

    /// Asks for `record` (an encoded envelope already inserted into sled) to
    /// be made durable: through the log in `always` mode, else like [`Flusher::request`].
    pub(crate) fn request_logged(&self, record: Vec<u8>) -> u64 {
        self.ask(Ask::Record(record))
    }

    fn ask(&self, what: Ask) -> u64 {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        match what {
            Ask::Record(r) if self.logged => s.records.push(r),
            Ask::Pass if self.logged => {}
            _ => s.full = true,
        }
        s.requested += 1;
        let ticket = s.requested;
        if self.mode == ConfirmMode::Always
            && s.waiting
            && (s.want == 0 || s.full || s.records.len() >= s.want)
        {
            cv.notify_one();
        }
        ticket
    }

    /// Waits until `ticket` is durable (per the confirm mode); fails if the
    /// flusher thread stopped first (a panic), so nothing is confirmed that
    /// is not durable.
    pub(crate) async fn wait(&self, ticket: u64) -> crate::Result<()> {
        if self.mode == ConfirmMode::None {
            return Ok(());
        }
        match self.done.watch(ticket)? {
            Some(rx) => rx.await.map_err(|_| crate::Error::NotDurable),
            None => Ok(()),
        }
    }

    /// Runs `f` once `ticket` is durable (per the confirm mode): on the
    /// flusher thread after the pass that covers it, or at once on this
    /// thread if it is already (or in mode `none`). See [`OnDurable`].
    pub(crate) fn on_durable(&self, ticket: u64, f: OnDurable) {
        if self.mode == ConfirmMode::None {
            return super::done::run_one(f, Ok(()));
        }
        self.done.on_durable(ticket, f)
    }

    /// A consumer group's state changed (a delivery, a settle): a
    /// checkpoint within [`CHECKPOINT_EVERY`] writes it, even when nothing
    /// is published.
    pub(crate) fn groups_changed(&self) {
        if !self.groups_dirty.swap(true, Ordering::AcqRel) {
            let (lock, cv) = &*self.state;
            if lock.lock().unwrap_or_else(|p| p.into_inner()).waiting {
                cv.notify_one();
            }
        }
    }

    pub(crate) fn mode(&self) -> ConfirmMode {
        self.mode
    }
}

enum Ask {
    Full,
    Record(Vec<u8>),
    Pass,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        cv.notify_one();
        // The thread flushes once more and releases its database handle.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the flusher thread shares with [`Flusher`].
type Shared = (Arc<(Mutex<State>, Condvar)>, Arc<Done>, Arc<AtomicBool>);

fn run(
    store: SledStore,
    (state, done, groups_dirty): Shared,
    (mode, period): (ConfirmMode, Option<Duration>),
    mut wal: Option<Wal>,
    seal: Seal,
) {
    let _close = CloseOnExit(done.clone());
    let (lock, cv) = &*state;
    let mut flushed = 0u64;
    let mut last_checkpoint = Instant::now();
    let mut force_checkpoint = false;
    let mut frame_buf = Vec::new();
    // Records the last log pass carried: publishers that were confirmed
    // together and will be back together (see `GATHER`).
    let mut last_batch = 0usize;
    loop {
        // A checkpoint is due when the log or the consumer groups hold
        // changes sled does not have yet, once a second (or a half-full log).
        let checkpoint_due = |wal: &Option<Wal>, at: Instant| {
            let logged = wal.as_ref().map_or(0, |w| w.len());
            (logged > 0 || groups_dirty.load(Ordering::Acquire))
                && (at.elapsed() >= CHECKPOINT_EVERY || logged >= CHECKPOINT_BYTES)
        };
        let (target, full, records, stop) = {
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            match period {
                None => {
                    // Nothing was waiting when the last pass ended: its
                    // publishers wait for their confirms (see `GATHER`).
                    let mut idle = false;
                    while s.requested == flushed && !s.stop && !checkpoint_due(&wal, last_checkpoint) {
                        idle = true;
                        s.waiting = true;
                        let dirty = groups_dirty.load(Ordering::Acquire);
                        s = match &wal {
                            // Wake for the checkpoint of a log that holds
                            // records, or of changed groups.
                            _ if dirty => {
                                let left = CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed());
                                cv.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0
                            }
                            Some(w) if w.len() > 0 => {
                                let left = CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed());
                                cv.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0
                            }
                            _ => cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                        };
                    }
                    // Group commit that waits for the group: see `GATHER`.
                    if idle && s.records.len() < last_batch && !s.full {
                        let until = Instant::now() + GATHER;
                        s.want = last_batch;
                        while s.records.len() < s.want && !s.full && !s.stop {
                            let now = Instant::now();
                            if now >= until {
                                break;
                            }
                            s.waiting = true;
                            s = cv
                                .wait_timeout(s, until - now)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        s.want = 0;
                    }
                }
                Some(p) => {
                    let until = Instant::now() + p;
                    while !s.stop {
                        let now = Instant::now();
                        if now >= until {
                            break;
                        }
                        s = cv
                            .wait_timeout(s, until - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
            s.waiting = false;
            (
                s.requested,
                std::mem::take(&mut s.full),
                std::mem::take(&mut s.records),
                s.stop,
            )
        };
        if stop {
            // Every record is in memory: one flush covers them all.
            match checkpoint(&store, &mut wal, &seal) {
                Ok(()) => done.advance(target),
                // What waits now is not durable: `CloseOnExit` tells it so.
                Err(e) => {
                    tracing::error!(error = %e, "queue flush at shutdown failed; the log still holds what was confirmed, publishes still waiting get not_durable")
                }
            }
            return;
        }
        let due = checkpoint_due(&wal, last_checkpoint);
        if target == flushed && !due && !force_checkpoint {
            continue;
        }
        let t0 = Instant::now();
        if !records.is_empty() {
            last_batch = records.len();
        }
        // Through the log: Some(result); None when this pass is a checkpoint.
        let logged = match &mut wal {
            Some(w) if !full && !due && !force_checkpoint => {
                frame_buf.clear();
                for r in &records {
                    w.frame(r, &mut frame_buf);
                }
                match w.append(&frame_buf).and_then(|fit| w.sync().map(|()| fit)) {
                    Ok(true) => Some(Ok(())),
                    // The file is full: a checkpoint covers these records.
                    Ok(false) => None,
                    Err(e) => {
                        // A failed or partial write may leave a torn record: only a
                        // checkpoint (sled flushed, log restarted) confirms from now on.
                        force_checkpoint = true;
                        Some(Err(format!("queue log write failed: {e}")))
                    }
                }
            }
            _ => None,
        };
        // A pass that seals writes the groups' state too: what changes from
        // here on marks them changed again.
        let seals = logged.is_none();
        if seals {
            groups_dirty.store(false, Ordering::Release);
        }
        let r = match (logged, wal.is_some()) {
            (Some(r), _) => r,
            // The records taken are in memory already: the checkpoint covers them.
            (None, true) => checkpoint(&store, &mut wal, &seal).map(|()| {
                force_checkpoint = false;
            }),
            // Mode `none`: sled's own periodic flush makes the chunks durable.
            (None, false) if mode == ConfirmMode::None => seal(),
            (None, false) => seal().and_then(|()| store.flush().map(|_| ()).map_err(|e| e.to_string())),
        };
        if seals {
            match &r {
                Ok(()) => last_checkpoint = Instant::now(),
                Err(_) => groups_dirty.store(true, Ordering::Release),
            }
        }
        match r {
            Ok(()) => {
                metrics::histogram!(crate::metrics::QUEUE_FLUSH_DURATION).record(t0.elapsed().as_secs_f64());
                flushed = target;
                done.advance(flushed);
            }
            Err(e) => {
                // Confirms wait: a publish is never confirmed before it is durable.
                // The records and the full-flush request this pass took are
                // gone from the state: only a checkpoint covers them now.
                force_checkpoint = wal.is_some();
                tracing::error!(error = %e, "queue flush failed; retrying in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Writes the open chunks, flushes sled (with its `fdatasync`) and restarts
/// the log it now covers.
fn checkpoint(store: &SledStore, wal: &mut Option<Wal>, seal: &Seal) -> Result<(), String> {
    seal()?;
    store.flush().map_err(|e| format!("queue checkpoint: {e}"))?;
    if let Some(w) = wal {
        w.restart()
            .map_err(|e| format!("cannot restart the queue log: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_checkpoint_is_retried_as_a_checkpoint() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 1 << 20, None).unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        // The first seal fails (a full disk, say); later ones succeed.
        let (calls, sealed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (c, ok) = (calls.clone(), sealed.clone());
        let seal: Seal = Box::new(move || {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("no space left (expected in this test)".into());
            }
            ok.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let f = Flusher::start(store, ConfirmMode::Always, Some(wal), seal);
        let ticket = f.request();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), f.wait(ticket)).await });
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
        // The retry of the failed full flush was a checkpoint, not a log
        // pass that holds none of what the request asked for.
        assert!(
            sealed.load(Ordering::SeqCst) >= 1,
            "confirmed without a successful seal"
        );
    }

    #[test]
    fn a_publish_is_not_confirmed_when_the_flusher_thread_dies() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        // A bug in the hook run before every sled flush kills the thread.
        let seal: Seal = Box::new(|| panic!("seal hook bug (expected in this test)"));
        let f = Flusher::start(store, ConfirmMode::Always, None, seal);
        let ticket = f.request();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), f.wait(ticket)).await });
        assert!(matches!(r, Ok(Err(crate::Error::NotDurable))), "{r:?}");
        // A later request fails at once too.
        let later = f.request();
        assert!(matches!(
            rt.block_on(f.wait(later)),
            Err(crate::Error::NotDurable)
        ));
    }
}
