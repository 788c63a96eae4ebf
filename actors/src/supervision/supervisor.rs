//! The supervisor task: carries out the decisions of [`Core`] for its children.
//!
//! A supervisor is itself a child of its parent (the root's parent is the
//! [`TreeHandle`]): it obeys `Start`/`Stop`/`Remove` and reports `Exited` when
//! it gives up. Events carry the child's incarnation, so a report from an
//! incarnation that has since been stopped and restarted is ignored.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::core::{Core, Decision};
use super::registry::{ActorEntry, ChildKind, Registry, Status};
use super::spec::{
    Backoff, BackoffState, ChildBody, ChildSpec, Cmd, Event, EventKind, Launch, SupervisorSpec,
};
use super::{install_panic_hook, Restart};

struct Child {
    entry: Arc<ActorEntry>,
    cmd: mpsc::Sender<Cmd>,
    incarnation: u64,
    backoff: BackoffState,
    shutdown: Duration,
}

struct Sup {
    name: &'static str,
    core: Core,
    backoff: Backoff,
    max_restarts: u32,
    period: Duration,
    children: Vec<Child>,
    events: mpsc::Receiver<Event>,
    deferred: VecDeque<Event>,
    pending: Vec<(Instant, usize)>,
    up: Launch,
    incarnation: u64,
    running: bool,
}

fn kind_of(body: &ChildBody) -> (ChildKind, Option<super::Strategy>) {
    match body {
        ChildBody::Actor(_) => (ChildKind::Actor, None),
        ChildBody::Worker(_) => (ChildKind::Worker, None),
        ChildBody::Supervisor(s) => (ChildKind::Supervisor, Some(s.strategy)),
    }
}

pub(crate) fn spawn_supervisor(spec: SupervisorSpec, up: Launch) -> mpsc::Sender<Cmd> {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let mut children = Vec::with_capacity(spec.children.len());
    let mut kinds = Vec::with_capacity(spec.children.len());
    for (i, c) in spec.children.into_iter().enumerate() {
        let ChildSpec {
            id,
            restart,
            shutdown,
            body,
        } = c;
        let (kind, strategy) = kind_of(&body);
        let entry = Arc::new(ActorEntry::new(id, Some(spec.name), kind, strategy, restart));
        // Names were checked unique by `start_tree`.
        let _ = up.registry.add_entry(entry.clone());
        entry.set_control(cmd_tx.clone(), i);
        entry.set_status(Status::Running);
        let launch = Launch {
            idx: i,
            events: ev_tx.clone(),
            entry: entry.clone(),
            registry: up.registry.clone(),
            shutdown,
        };
        let cmd = match body {
            ChildBody::Actor(start) => start(launch),
            ChildBody::Worker(f) => super::worker::spawn_worker(f, launch),
            ChildBody::Supervisor(s) => spawn_supervisor(s, launch),
        };
        kinds.push(restart);
        children.push(Child {
            entry,
            cmd,
            incarnation: 0,
            backoff: BackoffState::default(),
            shutdown,
        });
    }
    let sup = Sup {
        name: spec.name,
        core: Core::new(spec.strategy, spec.intensity, kinds),
        backoff: spec.backoff,
        max_restarts: spec.intensity.max_restarts,
        period: spec.intensity.period,
        children,
        events: ev_rx,
        deferred: VecDeque::new(),
        pending: Vec::new(),
        up,
        incarnation: 0,
        running: true,
    };
    tracing::debug!(
        supervisor = sup.name,
        children = sup.children.len(),
        "supervisor started"
    );
    actix_rt::spawn(sup.run(cmd_rx));
    cmd_tx
}

impl Sup {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        loop {
            if let Some(ev) = self.deferred.pop_front() {
                self.on_event(ev).await;
                continue;
            }
            let due = self.pending.iter().map(|p| p.0).min();
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => if !self.on_cmd(cmd).await { return },
                    None => return,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                    self.start_due().await;
                }
            }
        }
    }

    /// Handles a command; false when the supervisor must end.
    async fn on_cmd(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Start => {
                self.incarnation += 1;
                if !self.running {
                    self.running = true;
                    self.up.entry.set_status(Status::Running);
                    for j in self.core.start_all() {
                        self.start_child(j).await;
                    }
                }
            }
            Cmd::Stop => {
                self.stop_all().await;
                self.report(EventKind::Stopped).await;
            }
            Cmd::Remove => {
                self.stop_all().await;
                for c in &self.children {
                    let _ = c.cmd.send(Cmd::Remove).await;
                }
                return false;
            }
            Cmd::InjectPanic => {}
            Cmd::RestartChild(i, reply) => {
                let r = self.restart_child(i).await;
                let _ = reply.send(r);
            }
            Cmd::PanicChild(i, reply) => {
                let c = &self.children[i];
                let r = if c.entry.kind == ChildKind::Supervisor {
                    Err(format!(
                        "`{}` is a supervisor: inject the panic into one of its children",
                        c.entry.name
                    ))
                } else if c.entry.status() != Status::Running {
                    Err(format!(
                        "`{}` is not running ({:?})",
                        c.entry.name,
                        c.entry.status()
                    ))
                } else {
                    c.cmd
                        .send(Cmd::InjectPanic)
                        .await
                        .map_err(|_| "the child is gone".to_owned())
                };
                let _ = reply.send(r);
            }
        }
        true
    }

    async fn restart_child(&mut self, i: usize) -> Result<(), String> {
        if !self.running {
            return Err(format!("supervisor `{}` is stopped", self.name));
        }
        if self.core.is_removed(i) {
            return Err(format!(
                "`{}` was removed (temporary child)",
                self.children[i].entry.name
            ));
        }
        self.pending.retain(|p| p.1 != i);
        if self.core.is_running(i) {
            self.stop_children(&[i]).await;
        }
        self.core.mark_running(i);
        self.children[i].entry.record_restart();
        self.start_child(i).await;
        tracing::info!(
            actor = self.children[i].entry.name,
            "restarted by operator request"
        );
        Ok(())
    }

    async fn report(&self, kind: EventKind) {
        let ev = Event {
            child: self.up.idx,
            incarnation: self.incarnation,
            kind,
        };
        let _ = self.up.events.send(ev).await;
    }

    async fn on_event(&mut self, ev: Event) {
        let c = &self.children[ev.child];
        if ev.incarnation != c.incarnation {
            return;
        }
        let EventKind::Exited { abnormal, reason } = ev.kind else {
            return;
        };
        let name = c.entry.name;
        c.entry.set_status(Status::Stopped);
        if abnormal {
            tracing::error!(actor = name, supervisor = self.name, %reason, "actor crashed");
        } else {
            tracing::info!(actor = name, supervisor = self.name, %reason, "actor exited");
        }
        let now = Instant::now();
        match self.core.on_exit(ev.child, abnormal, now) {
            Decision::Keep => {}
            Decision::Remove(i) => self.remove(i).await,
            Decision::Restart { stop, remove, start } => {
                let touched: HashSet<usize> = stop.iter().chain(&start).copied().collect();
                self.pending.retain(|p| !touched.contains(&p.1));
                self.stop_children(&stop).await;
                for j in remove {
                    self.remove(j).await;
                }
                let delay = self.children[ev.child].backoff.next(&self.backoff, now);
                for j in start {
                    self.children[j].entry.record_restart();
                    if delay.is_zero() {
                        self.start_child(j).await;
                    } else {
                        self.children[j].entry.set_status(Status::Restarting);
                        self.pending.push((now + delay, j));
                    }
                }
                if !delay.is_zero() {
                    tracing::warn!(
                        actor = name,
                        delay_ms = delay.as_millis() as u64,
                        "restart delayed by backoff"
                    );
                }
            }
            Decision::Escalate { stop } => {
                self.pending.clear();
                self.stop_children(&stop).await;
                self.running = false;
                let why = format!(
                    "supervisor `{}` gave up: more than {} restarts in {:?}; last: `{name}`: {reason}",
                    self.name, self.max_restarts, self.period
                );
                tracing::error!(supervisor = self.name, %why, "restart intensity exceeded; escalating");
                self.up.entry.record_crash(&why);
                self.up.entry.set_status(Status::Stopped);
                self.report(EventKind::Exited {
                    abnormal: true,
                    reason: why,
                })
                .await;
            }
        }
    }

    async fn remove(&mut self, i: usize) {
        let c = &self.children[i];
        let _ = c.cmd.send(Cmd::Remove).await;
        c.entry.set_status(Status::Removed);
    }

    async fn start_child(&mut self, j: usize) {
        let c = &mut self.children[j];
        c.incarnation += 1;
        if c.cmd.send(Cmd::Start).await.is_ok() {
            c.entry.set_status(Status::Running);
        }
    }

    async fn start_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.0 <= now);
        self.pending = later;
        for (_, j) in due {
            self.start_child(j).await;
        }
    }

    async fn stop_all(&mut self) {
        self.pending.clear();
        let running: Vec<usize> = (0..self.children.len())
            .rev()
            .filter(|&j| self.core.is_running(j))
            .collect();
        self.stop_children(&running).await;
        self.core.stop_all();
        for c in &self.children {
            if c.entry.status() != Status::Removed {
                c.entry.set_status(Status::Stopped);
            }
        }
        self.running = false;
        self.up.entry.set_status(Status::Stopped);
    }

    /// Stops `list` in order, each within its shutdown timeout; other events wait.
    async fn stop_children(&mut self, list: &[usize]) {
        for &j in list {
            let (name, inc, grace) = {
                let c = &self.children[j];
                (c.entry.name, c.incarnation, c.shutdown + Duration::from_secs(2))
            };
            if self.children[j].cmd.send(Cmd::Stop).await.is_err() {
                continue;
            }
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Ok(Some(ev))
                        if ev.child == j
                            && ev.incarnation == inc
                            && matches!(ev.kind, EventKind::Stopped) =>
                    {
                        break
                    }
                    Ok(Some(ev)) => self.deferred.push_back(ev),
                    Ok(None) => return,
                    Err(_) => {
                        tracing::warn!(actor = name, "no stop confirmation in time; moving on");
                        break;
                    }
                }
            }
            self.children[j].entry.set_status(Status::Stopped);
            tracing::debug!(actor = name, "stopped");
        }
    }
}

/// The running tree, as seen by the node.
#[derive(Debug)]
pub struct TreeHandle {
    root: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<Event>,
    registry: Registry,
}

fn collect_names(spec: &SupervisorSpec, out: &mut Vec<&'static str>) {
    out.push(spec.name);
    for c in &spec.children {
        match &c.body {
            ChildBody::Supervisor(s) => collect_names(s, out),
            _ => out.push(c.id),
        }
    }
}

/// Starts the tree on the current actix arbiter. Fails on duplicate names.
pub fn start_tree(spec: SupervisorSpec, registry: Registry) -> Result<TreeHandle, String> {
    install_panic_hook();
    let mut names = Vec::new();
    collect_names(&spec, &mut names);
    let mut seen = HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(**n)) {
        return Err(format!(
            "two nodes of the actor tree are named `{dup}`: names must be unique"
        ));
    }
    let entry = Arc::new(ActorEntry::new(
        spec.name,
        None,
        ChildKind::Supervisor,
        Some(spec.strategy),
        Restart::Permanent,
    ));
    registry.add_entry(entry.clone())?;
    entry.set_status(Status::Running);
    let (tx, rx) = mpsc::channel(4);
    let launch = Launch {
        idx: 0,
        events: tx,
        entry,
        registry: registry.clone(),
        shutdown: Duration::from_secs(60),
    };
    let root = spawn_supervisor(spec, launch);
    Ok(TreeHandle {
        root,
        events: rx,
        registry,
    })
}

impl TreeHandle {
    /// The registry of this tree.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolves when the root supervisor gives up; returns why (naming the actor and its last panic).
    pub async fn gave_up(&mut self) -> String {
        loop {
            match self.events.recv().await {
                Some(Event {
                    kind: EventKind::Exited { reason, .. },
                    ..
                }) => return reason,
                Some(_) => continue,
                None => return "the actor tree vanished".to_owned(),
            }
        }
    }

    /// Stops the whole tree in reverse start order, each child within its timeout.
    pub async fn stop(&mut self, timeout: Duration) -> Result<(), String> {
        self.root
            .send(Cmd::Stop)
            .await
            .map_err(|_| "the root supervisor is gone".to_owned())?;
        let wait = async {
            while let Some(ev) = self.events.recv().await {
                if matches!(ev.kind, EventKind::Stopped) {
                    return Ok(());
                }
            }
            Err("the root supervisor vanished while stopping".to_owned())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| format!("the actor tree did not stop within {timeout:?}"))?
    }
}
