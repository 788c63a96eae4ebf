//! Child and supervisor specifications, and the messages between a supervisor
//! and its children.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Supervised};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use super::registry::{ActorEntry, Registry};
use super::worker::WorkerCtx;
use super::{Intensity, Restart, Strategy};

/// Delay between consecutive restarts of a crashing child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second consecutive restart; doubles after each.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// A child that ran this long since its last restart starts over at no delay.
    pub stable_after: Duration,
    /// Relative jitter applied to every delay (0.2 = ±20%).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Always restart at once (benchmarks, tests of the restart path itself).
    pub fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            stable_after: Duration::ZERO,
            jitter: 0.0,
        }
    }
}

/// Per-child backoff state.
#[derive(Debug, Default, Clone)]
pub(crate) struct BackoffState {
    consecutive: u32,
    last: Option<Instant>,
}

impl BackoffState {
    /// The delay before the restart that happens at `now`.
    pub(crate) fn next(&mut self, b: &Backoff, now: Instant) -> Duration {
        if self.last.is_none_or(|t| now.duration_since(t) >= b.stable_after) {
            self.consecutive = 0;
        }
        self.consecutive += 1;
        self.last = Some(now);
        if self.consecutive == 1 || b.initial.is_zero() {
            return Duration::ZERO;
        }
        let exp = (self.consecutive - 2).min(30);
        let base = b.initial.saturating_mul(1u32 << exp.min(31)).min(b.max);
        let factor = if b.jitter > 0.0 {
            rand::thread_rng().gen_range(1.0 - b.jitter..=1.0 + b.jitter)
        } else {
            1.0
        };
        base.mul_f64(factor).min(b.max)
    }
}

/// Commands a supervisor sends to a child, and the control API sends to a supervisor.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// (Re)start a stopped child.
    Start,
    /// Stop gracefully within the child's shutdown timeout; answer `Stopped`.
    Stop,
    /// The child is gone for good: drop it.
    Remove,
    /// Make the running actor or worker panic (fault injection).
    InjectPanic,
    /// To a supervisor: restart its child `usize` (operator request).
    RestartChild(usize, oneshot::Sender<Result<(), String>>),
    /// To a supervisor: inject a panic into its child `usize`.
    PanicChild(usize, oneshot::Sender<Result<(), String>>),
}

/// What a child reports to its supervisor.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) child: usize,
    pub(crate) incarnation: u64,
    pub(crate) kind: EventKind,
}

#[derive(Debug)]
pub(crate) enum EventKind {
    /// The child stopped by itself (`abnormal` = panicked or returned an error).
    Exited { abnormal: bool, reason: String },
    /// The child finished a requested stop.
    Stopped,
}

/// What a runner needs to start.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) idx: usize,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) entry: Arc<ActorEntry>,
    pub(crate) registry: Registry,
    pub(crate) shutdown: Duration,
}

type ActorStarter = Box<dyn FnOnce(Launch) -> mpsc::Sender<Cmd>>;
pub(crate) type WorkerFn = Arc<dyn Fn(&WorkerCtx) -> Result<(), String> + Send + Sync>;

pub(crate) enum ChildBody {
    Actor(ActorStarter),
    Worker(WorkerFn),
    Supervisor(SupervisorSpec),
}

impl std::fmt::Debug for ChildBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Actor(_) => f.write_str("Actor"),
            Self::Worker(_) => f.write_str("Worker"),
            Self::Supervisor(s) => write!(f, "Supervisor({})", s.name),
        }
    }
}

/// One child of a supervisor.
#[derive(Debug)]
pub struct ChildSpec {
    /// Unique name in the whole tree; the registry key.
    pub id: &'static str,
    /// When it is restarted.
    pub restart: Restart,
    /// Time it gets to stop.
    pub shutdown: Duration,
    pub(crate) body: ChildBody,
}

impl ChildSpec {
    /// An actix actor built once by `factory`; restarts go through
    /// `Supervised::restarting`, which must rebuild its state from storage.
    pub fn actor<A, F>(id: &'static str, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Supervised,
        F: FnOnce() -> A + 'static,
    {
        let start: ActorStarter = Box::new(move |launch| super::runner::spawn_actor(factory(), launch));
        Self::with_body(id, ChildBody::Actor(start))
    }

    /// A CPU-bound worker on a dedicated thread. It should return when
    /// [`WorkerCtx::should_stop`] is true; `Err` or a panic is an abnormal exit.
    pub fn worker<F>(id: &'static str, f: F) -> Self
    where
        F: Fn(&WorkerCtx) -> Result<(), String> + Send + Sync + 'static,
    {
        Self::with_body(id, ChildBody::Worker(Arc::new(f)))
    }

    /// A nested supervisor.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let id = spec.name;
        let mut s = Self::with_body(id, ChildBody::Supervisor(spec));
        s.shutdown = Duration::from_secs(60);
        s
    }

    fn with_body(id: &'static str, body: ChildBody) -> Self {
        Self {
            id,
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            body,
        }
    }

    /// Sets the restart type (default permanent).
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Sets the shutdown timeout (default 5 s; 60 s for supervisors).
    pub fn shutdown(mut self, d: Duration) -> Self {
        self.shutdown = d;
        self
    }
}

/// A supervisor and its children, in start order.
#[derive(Debug)]
pub struct SupervisorSpec {
    /// Unique name in the tree.
    pub name: &'static str,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Delay between consecutive restarts.
    pub backoff: Backoff,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with default intensity (3 in 5 s) and backoff.
    pub fn new(name: &'static str, strategy: Strategy) -> Self {
        Self {
            name,
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
        }
    }

    /// Adds a child (started after those added before).
    pub fn child(mut self, c: ChildSpec) -> Self {
        self.children.push(c);
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, i: Intensity) -> Self {
        self.intensity = i;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_then_doubles_then_resets() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let mut s = BackoffState::default();
        let t = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(s.next(&b, t)), 0);
        assert_eq!(ms(s.next(&b, t + Duration::from_secs(1))), 100);
        assert_eq!(ms(s.next(&b, t + Duration::from_secs(2))), 200);
        assert_eq!(ms(s.next(&b, t + Duration::from_secs(3))), 400);
        let mut later = t + Duration::from_secs(3);
        for _ in 0..20 {
            later += Duration::from_secs(1);
            assert!(s.next(&b, later) <= b.max);
        }
        assert_eq!(s.next(&b, later + Duration::from_secs(1)), b.max);
        // Stable for 10 s: immediate again.
        assert_eq!(ms(s.next(&b, later + Duration::from_secs(20))), 0);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::default();
        for _ in 0..200 {
            let mut s = BackoffState::default();
            let t = Instant::now();
            s.next(&b, t);
            let d = s.next(&b, t + Duration::from_millis(1));
            assert!(
                d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
    }
}
