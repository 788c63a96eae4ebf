//! Named actors, their live state, and the supervised address.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::dead_letter::{DeadLetter, DeadLetters};
use super::spec::Cmd;
use super::{Restart, Strategy, POISON_AFTER};
use crate::store::SledStore;

/// What a tree node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    /// An actix actor.
    Actor,
    /// A worker on a dedicated thread.
    Worker,
    /// A supervisor.
    Supervisor,
}

/// Life-cycle state of a tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started and serving.
    Running,
    /// Crashed; waiting out its backoff before the restart.
    Restarting,
    /// Stopped (exited normally, stopped by its supervisor, or its supervisor gave up).
    Stopped,
    /// Gone for good (temporary child).
    Removed,
}

/// Live facts about one node of the tree, shared with the RPC.
#[derive(Debug)]
pub struct ActorEntry {
    /// Name, unique in the tree.
    pub name: &'static str,
    /// Supervisor's name (`None` for the root).
    pub parent: Option<&'static str>,
    /// Actor, worker or supervisor.
    pub kind: ChildKind,
    /// For supervisors, their strategy.
    pub strategy: Option<Strategy>,
    /// Restart type.
    pub restart: Restart,
    status: Mutex<Status>,
    restarts: AtomicU64,
    last_panic: Mutex<Option<String>>,
    started_at: Mutex<Option<Instant>>,
    crashes: watch::Sender<u64>,
    in_flight: AtomicI64,
    control: Mutex<Option<(mpsc::Sender<Cmd>, usize)>>,
}

impl ActorEntry {
    pub(crate) fn new(
        name: &'static str,
        parent: Option<&'static str>,
        kind: ChildKind,
        strategy: Option<Strategy>,
        restart: Restart,
    ) -> Self {
        // Every series exists from the start, so dashboards see zeros, not gaps.
        metrics::counter!(crate::metrics::ACTOR_RESTARTS, "actor" => name).absolute(0);
        metrics::gauge!(crate::metrics::ACTOR_MAILBOX, "actor" => name).set(0.0);
        Self {
            name,
            parent,
            kind,
            strategy,
            restart,
            status: Mutex::new(Status::Stopped),
            restarts: AtomicU64::new(0),
            last_panic: Mutex::new(None),
            started_at: Mutex::new(None),
            crashes: watch::channel(0).0,
            in_flight: AtomicI64::new(0),
            control: Mutex::new(None),
        }
    }

    /// Current status.
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Restarts so far (crash restarts and operator restarts).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The last panic or error exit message.
    pub fn last_panic(&self) -> Option<String> {
        lock(&self.last_panic).clone()
    }

    /// Time since the current incarnation started.
    pub fn uptime(&self) -> Option<Duration> {
        lock(&self.started_at).map(|t| t.elapsed())
    }

    /// Messages sent through [`SupervisedAddr`] and not yet answered.
    pub fn mailbox_depth(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_status(&self, s: Status) {
        *lock(&self.status) = s;
        let up = if s == Status::Running { 1.0 } else { 0.0 };
        metrics::gauge!(crate::metrics::ACTOR_UP, "actor" => self.name).set(up);
        if s == Status::Running {
            *lock(&self.started_at) = Some(Instant::now());
        } else {
            *lock(&self.started_at) = None;
        }
    }

    pub(crate) fn record_crash(&self, reason: &str) {
        *lock(&self.last_panic) = Some(reason.to_owned());
        self.crashes.send_modify(|c| *c += 1);
    }

    pub(crate) fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::ACTOR_RESTARTS, "actor" => self.name).increment(1);
        let now = crate::clock::unix_us() as f64 / 1e6;
        metrics::gauge!(crate::metrics::ACTOR_LAST_RESTART, "actor" => self.name).set(now);
    }

    pub(crate) fn set_control(&self, sup: mpsc::Sender<Cmd>, idx: usize) {
        *lock(&self.control) = Some((sup, idx));
    }

    fn add_in_flight(&self, d: i64) {
        let v = self.in_flight.fetch_add(d, Ordering::Relaxed) + d;
        metrics::gauge!(crate::metrics::ACTOR_MAILBOX, "actor" => self.name).set(v as f64);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic never happens while these small locks are held; recover anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Inner {
    addrs: RwLock<HashMap<&'static str, Box<dyn Any + Send + Sync>>>,
    entries: RwLock<Vec<Arc<ActorEntry>>>,
    dead: DeadLetters,
}

/// Named actors of the tree. Addresses never change across restarts, so the
/// address returned is always the live one.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("entries", &self.entries().len())
            .finish()
    }
}

impl Registry {
    /// A registry whose dead letters are persisted in `store` (tree `dlq/actors`).
    pub fn with_store(store: SledStore) -> Self {
        Self::with_sink(super::dead_letter::Sink::Tree(store))
    }

    /// A registry whose dead letters go to the durable bus topic `actors.dead-letters`.
    pub fn with_queues(queues: Arc<crate::queue::Queues>) -> Self {
        Self::with_sink(super::dead_letter::Sink::Topic(queues))
    }

    fn with_sink(sink: super::dead_letter::Sink) -> Self {
        Self {
            inner: Arc::new(Inner {
                dead: DeadLetters::new(sink),
                ..Inner::default()
            }),
        }
    }

    pub(crate) fn add_entry(&self, e: Arc<ActorEntry>) -> Result<(), String> {
        let mut entries = self.inner.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|x| x.name == e.name) {
            return Err(format!(
                "two children are named `{}`: names must be unique in the tree",
                e.name
            ));
        }
        entries.push(e);
        Ok(())
    }

    pub(crate) fn register<A: Actor>(&self, name: &'static str, addr: Addr<A>) {
        self.inner
            .addrs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Box::new(addr));
    }

    /// The supervised address of actor `name`, if it exists and is an `A`.
    pub fn get<A: Actor>(&self, name: &str) -> Option<SupervisedAddr<A>> {
        let addr = self
            .inner
            .addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)?
            .downcast_ref::<Addr<A>>()?
            .clone();
        Some(SupervisedAddr {
            addr,
            entry: self.entry(name)?,
            registry: self.clone(),
        })
    }

    /// The entry of `name`.
    pub fn entry(&self, name: &str) -> Option<Arc<ActorEntry>> {
        self.entries().into_iter().find(|e| e.name == name)
    }

    /// Every node of the tree, parents before children, in start order.
    pub fn entries(&self) -> Vec<Arc<ActorEntry>> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Dead letters recorded since start (and persisted, with a store).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead.list()
    }

    async fn control(
        &self,
        name: &str,
        make: fn(usize, oneshot::Sender<Result<(), String>>) -> Cmd,
    ) -> Result<(), String> {
        let entry = self
            .entry(name)
            .ok_or_else(|| format!("no actor named `{name}`: see actors_tree for the names"))?;
        let (sup, idx) = lock(&entry.control)
            .clone()
            .ok_or_else(|| format!("`{name}` is the root supervisor and cannot be controlled this way"))?;
        let (tx, rx) = oneshot::channel();
        sup.send(make(idx, tx))
            .await
            .map_err(|_| format!("the supervisor of `{name}` is gone"))?;
        tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .map_err(|_| format!("the supervisor of `{name}` did not answer in 120 s"))?
            .map_err(|_| format!("the supervisor of `{name}` is gone"))?
    }

    /// Stops and restarts `name` (does not count toward restart intensity).
    pub async fn restart(&self, name: &str) -> Result<(), String> {
        self.control(name, Cmd::RestartChild).await
    }

    /// Makes actor or worker `name` panic, as a real crash would.
    pub async fn inject_panic(&self, name: &str) -> Result<(), String> {
        self.control(name, Cmd::PanicChild).await
    }
}

/// Why a [`SupervisedAddr::call`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The message crashed the handler `POISON_AFTER` times and was dead-lettered.
    #[error("message dead-lettered after crashing `{actor}` {attempts} times; last panic: {panic}")]
    DeadLettered {
        /// The actor.
        actor: &'static str,
        /// Crashes.
        attempts: u32,
        /// Last panic message.
        panic: String,
    },
    /// The actor is stopped for good.
    #[error("actor `{0}` is stopped")]
    Stopped(&'static str),
    /// The send timed out.
    #[error("actor `{0}` did not answer in time")]
    Timeout(&'static str),
}

/// An actor address plus the supervision facts needed to survive its crashes.
#[derive(Debug)]
pub struct SupervisedAddr<A: Actor> {
    addr: Addr<A>,
    entry: Arc<ActorEntry>,
    registry: Registry,
}

impl<A: Actor> Clone for SupervisedAddr<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            entry: self.entry.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<A: Actor> SupervisedAddr<A> {
    /// The plain actix address (the same across restarts).
    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// Sends `msg` and waits for the reply. When the handler panics, the
    /// message is sent again after the restart; after [`POISON_AFTER`] crashes
    /// it goes to the dead-letter store with the panic message.
    pub async fn call<M>(&self, msg: M) -> Result<M::Result, CallError>
    where
        M: Message + Clone + fmt::Debug + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let name = self.entry.name;
        let mut crashes = self.entry.crashes.subscribe();
        for _ in 0..POISON_AFTER {
            crashes.mark_unchanged();
            self.entry.add_in_flight(1);
            let r = self.addr.send(msg.clone()).await;
            self.entry.add_in_flight(-1);
            match r {
                Ok(v) => return Ok(v),
                Err(MailboxError::Timeout) => return Err(CallError::Timeout(name)),
                Err(MailboxError::Closed) => {
                    if !self.addr.connected() {
                        return Err(CallError::Stopped(name));
                    }
                    // The handler crashed on this message: wait until the runner has
                    // recorded the panic, then try again (the restart keeps the mailbox).
                    let _ = tokio::time::timeout(Duration::from_secs(1), crashes.changed()).await;
                }
            }
        }
        let panic = self.entry.last_panic().unwrap_or_default();
        self.registry.inner.dead.record(DeadLetter::new(
            name,
            std::any::type_name::<M>(),
            format!("{msg:?}"),
            panic.clone(),
            POISON_AFTER,
        ));
        metrics::counter!(crate::metrics::ACTOR_DEAD_LETTERS, "actor" => name).increment(1);
        Err(CallError::DeadLettered {
            actor: name,
            attempts: POISON_AFTER,
            panic,
        })
    }
}
