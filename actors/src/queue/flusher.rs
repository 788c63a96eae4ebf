//! Group commit: publishers ask for a flush and wait; one thread runs
//! `flush()` for everyone who asked before it started.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{SledStore, Store};

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
    stop: bool,
}

/// The flusher thread's handle.
#[derive(Debug)]
pub(crate) struct Flusher {
    state: Arc<(Mutex<State>, Condvar)>,
    flushed: watch::Receiver<u64>,
    mode: ConfirmMode,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(store: SledStore, mode: ConfirmMode) -> Self {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let (tx, rx) = watch::channel(0u64);
        let st = state.clone();
        let period = match mode {
            ConfirmMode::Interval(ms) => Some(Duration::from_millis(ms.max(1))),
            _ => None,
        };
        let thread = std::thread::Builder::new()
            .name("vigil-flusher".into())
            .spawn(move || run(store, st, tx, period))
            .expect("cannot spawn the flusher thread");
        Self {
            state,
            flushed: rx,
            mode,
            thread: Some(thread),
        }
    }

    /// Asks for a flush covering every write made before this call; returns its ticket.
    pub(crate) fn request(&self) -> u64 {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        s.requested += 1;
        let ticket = s.requested;
        if self.mode == ConfirmMode::Always {
            cv.notify_one();
        }
        ticket
    }

    /// Waits until `ticket` is durable (per the confirm mode).
    pub(crate) async fn wait(&self, ticket: u64) {
        if self.mode == ConfirmMode::None {
            return;
        }
        let mut rx = self.flushed.clone();
        // The sender lives as long as the flusher thread, which outlives every publisher.
        let _ = rx.wait_for(|done| *done >= ticket).await;
    }

    pub(crate) fn mode(&self) -> ConfirmMode {
        self.mode
    }
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

fn run(
    store: SledStore,
    state: Arc<(Mutex<State>, Condvar)>,
    done: watch::Sender<u64>,
    period: Option<Duration>,
) {
    let (lock, cv) = &*state;
    let mut flushed = 0u64;
    loop {
        let target = {
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            match period {
                None => {
                    while s.requested == flushed && !s.stop {
                        s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
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
            if s.stop {
                let _ = store.flush();
                let _ = done.send(s.requested);
                return;
            }
            s.requested
        };
        if target == flushed {
            continue;
        }
        let t0 = Instant::now();
        match store.flush() {
            Ok(_) => {
                metrics::histogram!(crate::metrics::QUEUE_FLUSH_DURATION).record(t0.elapsed().as_secs_f64());
                flushed = target;
                let _ = done.send(flushed);
            }
            Err(e) => {
                // Confirms wait: a publish is never confirmed without its fsync.
                tracing::error!(error = %e, "queue flush failed; retrying in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
