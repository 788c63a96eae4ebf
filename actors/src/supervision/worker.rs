//! Workers: CPU-bound loops on dedicated threads, each run inside
//! `catch_unwind`, supervised like actors. A worker checks
//! [`WorkerCtx::should_stop`] between units of work (and persists its progress
//! there, so a restart resumes instead of starting over).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::catch::catch;
use super::spec::{Cmd, Event, EventKind, Launch, WorkerFn};

/// What a worker sees of its supervision.
#[derive(Debug, Clone)]
pub struct WorkerCtx {
    name: &'static str,
    stop: Arc<AtomicBool>,
    inject: Arc<AtomicBool>,
}

impl WorkerCtx {
    /// True once the supervisor asked the worker to stop. Panics here when a
    /// panic was injected (`actors_inject_panic`), as a bug in the loop would.
    pub fn should_stop(&self) -> bool {
        if self.inject.swap(false, Ordering::AcqRel) {
            panic!("injected panic (actors_inject_panic) in worker {}", self.name);
        }
        self.stop.load(Ordering::Acquire)
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A context outside any supervisor (tests, tools): the worker stops
    /// when `stop` is set.
    pub fn standalone(name: &'static str, stop: Arc<AtomicBool>) -> Self {
        Self {
            name,
            stop,
            inject: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub(crate) fn spawn_worker(f: WorkerFn, launch: Launch) -> mpsc::Sender<Cmd> {
    let (tx, rx) = mpsc::channel(8);
    actix_rt::spawn(run(f, rx, launch));
    tx
}

type Done = oneshot::Receiver<Result<Result<(), String>, String>>;

fn start_thread(f: &WorkerFn, ctx: WorkerCtx) -> Done {
    let (tx, rx) = oneshot::channel();
    let f = f.clone();
    let name = format!("vigil-{}", ctx.name);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let r = catch(|| f(&ctx));
        let _ = tx.send(r);
    });
    if let Err(e) = spawned {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(Err(format!("cannot spawn the worker thread: {e}"))));
        return rx;
    }
    rx
}

async fn run(f: WorkerFn, mut cmds: mpsc::Receiver<Cmd>, launch: Launch) {
    let name = launch.entry.name;
    let mut incarnation = 0u64;
    let inject = Arc::new(AtomicBool::new(false));
    let mut current: Option<(Done, Arc<AtomicBool>)> = None;
    let spawn = |inject: &Arc<AtomicBool>| {
        let stop = Arc::new(AtomicBool::new(false));
        inject.store(false, Ordering::Release);
        let ctx = WorkerCtx {
            name,
            stop: stop.clone(),
            inject: inject.clone(),
        };
        (start_thread(&f, ctx), stop)
    };
    current.replace(spawn(&inject));
    loop {
        let cmd = match current.as_mut() {
            Some((done, _)) => tokio::select! {
                biased;
                cmd = cmds.recv() => cmd,
                r = done => {
                    current = None;
                    let kind = match r {
                        Ok(Ok(Ok(()))) => EventKind::Exited { abnormal: false, reason: "returned".into() },
                        Ok(Ok(Err(e))) => { launch.entry.record_crash(&e); EventKind::Exited { abnormal: true, reason: e } }
                        Ok(Err(panic)) => { launch.entry.record_crash(&panic); EventKind::Exited { abnormal: true, reason: panic } }
                        Err(_) => EventKind::Exited { abnormal: true, reason: "worker thread vanished".into() },
                    };
                    let _ = launch.events.send(Event { child: launch.idx, incarnation, kind }).await;
                    continue;
                }
            },
            None => cmds.recv().await,
        };
        match cmd {
            Some(Cmd::Start) => {
                incarnation += 1;
                if current.is_none() {
                    current = Some(spawn(&inject));
                }
            }
            Some(Cmd::Stop) => {
                if let Some((done, stop)) = current.take() {
                    stop.store(true, Ordering::Release);
                    if tokio::time::timeout(launch.shutdown, done).await.is_err() {
                        tracing::warn!(
                            worker = name,
                            timeout_ms = launch.shutdown.as_millis() as u64,
                            "did not stop in time; thread abandoned"
                        );
                    }
                }
                let ev = Event {
                    child: launch.idx,
                    incarnation,
                    kind: EventKind::Stopped,
                };
                let _ = launch.events.send(ev).await;
            }
            Some(Cmd::InjectPanic) => inject.store(true, Ordering::Release),
            Some(Cmd::RestartChild(_, r) | Cmd::PanicChild(_, r)) => {
                let _ = r.send(Err("not a supervisor".into()));
            }
            Some(Cmd::Remove) | None => {
                if let Some((_, stop)) = current.take() {
                    stop.store(true, Ordering::Release);
                }
                return;
            }
        }
    }
}
