//! The inter-application bus (anchor: OpenFin InterApplicationBus).
//!
//! Local apps connect over WebSocket (`bus.addr`, loopback) or the Unix socket
//! `DATA_DIR/bus.sock`, say `hello` with their name and token, then use the
//! verbs `publish`, `send`, `subscribe`, `request`/`serve`/`reply`, and settle
//! durable deliveries with `ack`, `nak`, `term`, `in_progress`. The node stamps
//! the sender on every message; permissions are per app, verb and topic
//! pattern, granted by the operator and never by default; every grant, revoke,
//! denial and violation goes to the audit log. Durable topics use the
//! [`crate::queue`] engine; topics matching `bus.ephemeral_topics` are
//! at-most-once and never touch disk. The wire protocol is in `docs/bus.md`.

mod actor;
mod apps;
mod confirms;
mod consumer;
mod frame_out;
pub(crate) mod guard;
mod leases;
mod outbound;
mod router;
mod server;
mod session;
pub mod wire;
pub mod ws;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use actor::BusActor;
pub use apps::{
    check_app_name, check_pattern, covers, owns_group, token_hash_hex, AppConfig, AppInfo, Apps, Grant, Verb,
};
pub use server::{start, RunningBus};

use crate::audit::Audit;
use crate::queue::Queues;
use crate::Result;
use router::Router;

/// Longest request deadline an app may ask for.
pub const MAX_DEADLINE_MS: u64 = 300_000;
/// Requests one session may have waiting for answers at once.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Subscriptions one session may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Deliveries one `ack` frame may settle (`seqs`).
pub const MAX_ACK_BATCH: usize = 4096;

/// Settings of the bus, from the node's `[bus]` config.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// WebSocket address (loopback).
    pub addr: SocketAddr,
    /// Unix socket path, if enabled.
    pub unix_socket: Option<PathBuf>,
    /// Largest frame accepted, bytes.
    pub max_frame_bytes: usize,
    /// Topics (`name` or `prefix.*`) that are ephemeral: at-most-once, never on disk.
    pub ephemeral_topics: Vec<String>,
    /// Frames queued to one slow app before live messages to it are dropped.
    pub outbound_queue: usize,
    /// Time an app has to say `hello`.
    pub hello_timeout: Duration,
    /// Connections (WebSocket and Unix) open at once at most.
    pub max_connections: usize,
    /// Browser origins allowed to open a WebSocket (`*`: any); a request
    /// with another `Origin` header is refused (403).
    pub allowed_origins: Vec<String>,
    /// Failed hellos from one source are audited once per this window, with their count.
    pub auth_failure_window: Duration,
}

impl Default for BusSettings {
    /// The node's defaults, on an ephemeral loopback port without a Unix socket.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            unix_socket: None,
            max_frame_bytes: 2 << 20,
            ephemeral_topics: vec!["live.*".into()],
            outbound_queue: 1024,
            hello_timeout: Duration::from_secs(10),
            max_connections: 256,
            allowed_origins: Vec::new(),
            auth_failure_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct SessionInfo {
    app: String,
    tx: mpsc::Sender<String>,
    serves: HashSet<String>,
    /// Dropped when the session is removed from the table (its app was
    /// removed): the session then closes.
    _kick: oneshot::Sender<()>,
}

type ReplySlot = oneshot::Sender<std::result::Result<Vec<u8>, String>>;

#[derive(Debug, Default)]
struct State {
    router: Router,
    sessions: HashMap<u64, SessionInfo>,
    next_session: u64,
    next_rid: u64,
    /// rid -> (serving session, requesting session, the requester's answer slot).
    requests: HashMap<u64, (u64, u64, ReplySlot)>,
}

/// One live topic or pattern and its subscribers.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTopic {
    /// Topic or `prefix.*` pattern.
    pub topic: String,
    /// Live subscriptions on it.
    pub subscribers: usize,
}

/// The bus: apps, routing, and the durable queues behind it.
#[derive(Debug)]
pub struct Bus {
    settings: BusSettings,
    queues: Arc<Queues>,
    apps: Apps,
    audit: Audit,
    state: Mutex<State>,
    /// Bumped by every revoke: each session checks its subscriptions and
    /// served actions against its grants again.
    revoked: tokio::sync::watch::Sender<u64>,
    auth_failures: guard::AuthFailures,
    connections: guard::Connections,
}

impl Bus {
    /// A bus over `queues`, with `apps` and writing to `audit`.
    pub fn new(settings: BusSettings, queues: Arc<Queues>, apps: Apps, audit: Audit) -> Arc<Self> {
        Arc::new(Self {
            queues,
            apps,
            audit,
            state: Mutex::new(State::default()),
            revoked: tokio::sync::watch::Sender::new(0),
            auth_failures: guard::AuthFailures::new(settings.auth_failure_window),
            connections: guard::Connections::default(),
            settings,
        })
    }

    /// A failed hello from `peer`: audited at once if it is the first from
    /// its source in the window, else counted into the window's entry.
    pub(crate) fn auth_failed(&self, peer: &str, detail: serde_json::Value) {
        if let Some(entry) = self.auth_failures.record(peer, detail, std::time::Instant::now()) {
            self.audit("?", "bus.auth_failed", entry);
        }
    }

    /// Writes the entries of failed-hello windows that ended.
    pub(crate) fn flush_auth_failures(&self) {
        for entry in self.auth_failures.flush(std::time::Instant::now()) {
            self.audit("?", "bus.auth_failed", entry);
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.open()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue engine.
    pub fn queues(&self) -> &Arc<Queues> {
        &self.queues
    }

    /// The settings.
    pub fn settings(&self) -> &BusSettings {
        &self.settings
    }

    /// The audit log.
    pub fn audit_log(&self) -> &Audit {
        &self.audit
    }

    /// The app table.
    pub fn apps(&self) -> &Apps {
        &self.apps
    }

    /// Whether `topic` is ephemeral.
    pub fn is_ephemeral(&self, topic: &str) -> bool {
        self.settings.ephemeral_topics.iter().any(|p| covers(p, topic))
    }

    /// Appends to the audit log; a failure is logged, never hidden.
    pub fn audit(&self, who: &str, action: &str, detail: serde_json::Value) {
        self.audit.append_or_log(who, action, detail);
    }

    /// Operator grant, written with its audit entry or refused.
    pub fn grant(&self, app: &str, verb: Verb, pattern: &str, who: &str) -> Result<bool> {
        self.apps.grant(app, verb, pattern, who, &self.audit)
    }

    /// Operator revoke, written with its audit entry or refused.
    pub fn revoke(&self, app: &str, verb: Verb, pattern: &str, who: &str) -> Result<()> {
        let r = self.apps.revoke(app, verb, pattern, who, &self.audit);
        // What was subscribed or served under the grant ends now, not at
        // the app's next connection (also when the revoke is in effect but
        // not yet durable).
        if matches!(r, Ok(()) | Err(crate::Error::ChangeNotDurable(_))) {
            self.revoked.send_modify(|n| *n += 1);
        }
        r
    }

    /// Operator: new app, returns its token (audited, token not logged).
    pub fn add_app(&self, name: &str, who: &str) -> Result<String> {
        self.apps.add(name, who, &self.audit)
    }

    /// Operator: remove an app (audited); its sessions are closed at once
    /// (a token issued again for the name must not find the old one's
    /// connections still open).
    pub fn remove_app(&self, name: &str, who: &str) -> Result<()> {
        // Gone from memory before the sessions are scanned; a session still
        // saying hello checks its token again under the state lock before it
        // is listed, so it either sees the app gone or is listed and closed.
        let removed = self.apps.remove(name, who, &self.audit);
        if let Err(e) = &removed {
            if !matches!(e, crate::Error::ChangeNotDurable(_)) {
                return removed;
            }
        }
        // Out of memory (durable or not): its sessions end now.
        let closed = {
            let mut st = self.state();
            let ids: Vec<u64> = st
                .sessions
                .iter()
                .filter(|(_, s)| s.app == name)
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                // Dropping the entry drops its kick sender: the session ends.
                st.sessions.remove(id);
                st.router.remove_session(*id);
            }
            ids.len()
        };
        if closed > 0 {
            self.audit(
                "rpc",
                "bus.sessions_closed",
                serde_json::json!({ "app": name, "sessions": closed, "why": "app removed" }),
            );
        }
        removed
    }

    /// Live topics and patterns with their subscriber counts.
    pub fn live_topics(&self) -> Vec<LiveTopic> {
        self.state()
            .router
            .table()
            .into_iter()
            .map(|(topic, subscribers)| LiveTopic { topic, subscribers })
            .collect()
    }

    /// Live subscriptions in the table (0 once every app is gone).
    pub fn live_subscriptions(&self) -> usize {
        self.state().router.len()
    }

    /// Connected sessions per app.
    pub fn connected(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for s in self.state().sessions.values() {
            *m.entry(s.app.clone()).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::SledStore;
    use crate::Error;

    /// A bus on `store` with `outbound_queue = 16`, no listeners.
    pub(crate) fn bus(store: &SledStore) -> Arc<Bus> {
        let queues = Queues::open(store.clone(), crate::queue::QueueConfig::default()).unwrap();
        let settings = BusSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            unix_socket: None,
            max_frame_bytes: 1 << 20,
            ephemeral_topics: vec![],
            outbound_queue: 16,
            hello_timeout: std::time::Duration::from_secs(1),
            ..BusSettings::default()
        };
        let apps = Apps::open(store.clone(), &[]).unwrap();
        Bus::new(settings, queues, apps, Audit::open(store.clone()).unwrap())
    }

    #[test]
    fn a_change_in_effect_but_not_durable_still_ends_what_it_took_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let b = bus(&store);
        b.add_app("shop", "rpc").unwrap();
        b.grant("shop", Verb::Subscribe, "orders.*", "rpc").unwrap();
        let mut revokes = b.revoked.subscribe();
        revokes.mark_unchanged();

        // The change and its audit entry are written; the flush after fails.
        store.fail_writes_after(1);
        let e = b.revoke("shop", Verb::Subscribe, "orders.*", "rpc").unwrap_err();
        assert!(matches!(e, Error::ChangeNotDurable(_)), "{e}");
        assert!(e.to_string().contains("vigilctl bus apps"), "{e}");
        assert!(
            revokes.has_changed().unwrap(),
            "open subscriptions under the grant are ended"
        );
        assert!(!b.apps.allowed("shop", Verb::Subscribe, "orders.new"));

        store.fail_writes_after(1);
        let e = b.remove_app("shop", "rpc").unwrap_err();
        assert!(matches!(e, Error::ChangeNotDurable(_)), "{e}");
        assert!(b.apps.list().iter().all(|a| a.name != "shop"), "gone from memory");
        store.fail_writes_after(-1);
        let actions: Vec<String> = b
            .audit
            .list(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            ["bus.app_add", "bus.grant", "bus.revoke", "bus.app_remove"]
        );
    }
}
