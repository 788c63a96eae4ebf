//! Detections, the security rules that map them to actions, custom hooks,
//! and the pause switches of pausable actors. Every detection is a durable
//! bus message on `security.alerts` and an audit entry; every pause and
//! resume is audited with who asked (a rule, a hook, or the RPC).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::Audit;
use crate::queue::{Publish, Queues};

/// Bus topic of detections (durable).
pub const BUS_TOPIC: &str = "security.alerts";
/// Actors that can be paused.
pub const PAUSABLE: [&str; 2] = ["challenges", "layer2"];
const KEPT: usize = 1000;

/// Something a chain monitor noticed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    /// Source name.
    pub source: String,
    /// `reorg | height_regression | stall | outage | recovery | interval_anomaly | source_error`.
    pub kind: String,
    /// Unix ms.
    pub at_unix_ms: u64,
    /// Human summary.
    pub detail: String,
    /// Reorg depth.
    pub reorg_depth: Option<u64>,
    /// Reorg common ancestor height.
    pub ancestor: Option<u64>,
    /// Its hash.
    pub ancestor_hash: Option<String>,
    /// Replaced hashes.
    pub old_hashes: Vec<String>,
    /// New hashes.
    pub new_hashes: Vec<String>,
    /// Seconds without a head (stall).
    pub stall_secs: Option<f64>,
    /// Blocks the head went back (regression).
    pub regression_depth: Option<u64>,
    /// Robust z-score of a block interval.
    pub interval_z: Option<f64>,
    /// Actions the rules and hooks took.
    pub actions: Vec<String>,
}

fn parse_rules(rules: &[RuleConfig], pauses: &Pauses) -> Result<Vec<(RuleConfig, Cond, Action)>, String> {
    let mut parsed = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let c = Cond::parse(&r.when).map_err(|e| format!("security.rules[{i}].when: {e}"))?;
        let a = Action::parse(&r.action).map_err(|e| format!("security.rules[{i}].action: {e}"))?;
        if let Action::Pause(x) | Action::Resume(x) = &a {
            pauses.flag(x);
        }
        parsed.push((r.clone(), c, a));
    }
    Ok(parsed)
}

/// `[[security.rules]]`: `when` a detection matches, do `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `kind == reorg`, or `<metric> <op> <number>` with metric `reorg_depth`,
    /// `stall_secs`, `regression_depth` or `interval_z` and op `>= > <= < ==`.
    pub when: String,
    /// `alert`, `pause:<actor>` or `resume:<actor>`.
    pub action: String,
    /// Only detections from this source (default: any).
    #[serde(default)]
    pub source: Option<String>,
}

/// What a rule or hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond the alert every detection is.
    Alert,
    /// Pause an actor.
    Pause(String),
    /// Resume an actor.
    Resume(String),
}

impl Action {
    fn parse(s: &str) -> Result<Self, String> {
        let actor = |a: &str| {
            if PAUSABLE.contains(&a) {
                Ok(a.to_owned())
            } else {
                Err(format!(
                    "`{a}` cannot be paused; pausable: {}",
                    PAUSABLE.join(", ")
                ))
            }
        };
        match s.split_once(':') {
            None if s == "alert" => Ok(Self::Alert),
            Some(("pause", a)) => Ok(Self::Pause(actor(a)?)),
            Some(("resume", a)) => Ok(Self::Resume(actor(a)?)),
            _ => Err(format!(
                "action `{s}`: allowed alert, pause:<actor>, resume:<actor>"
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Alert => "alert".into(),
            Self::Pause(a) => format!("pause:{a}"),
            Self::Resume(a) => format!("resume:{a}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Kind(String),
    Metric(String, String, f64),
}

const METRICS: [&str; 4] = ["reorg_depth", "stall_secs", "regression_depth", "interval_z"];
const KINDS: [&str; 7] = [
    "reorg",
    "height_regression",
    "stall",
    "outage",
    "recovery",
    "interval_anomaly",
    "source_error",
];

impl Cond {
    fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let allowed = || {
            format!(
                "`kind == <{}>` or `<{}> <>=|>|<=|<|==> <number>`",
                KINDS.join("|"),
                METRICS.join("|")
            )
        };
        match parts.as_slice() {
            ["kind", "==", k] if KINDS.contains(k) => Ok(Self::Kind((*k).to_owned())),
            [m, op, v] if METRICS.contains(m) && [">=", ">", "<=", "<", "=="].contains(op) => {
                let v: f64 = v
                    .parse()
                    .map_err(|_| format!("condition `{s}`: `{v}` is not a number"))?;
                Ok(Self::Metric((*m).to_owned(), (*op).to_owned(), v))
            }
            _ => Err(format!("condition `{s}`: allowed {}", allowed())),
        }
    }

    fn matches(&self, d: &Detection) -> bool {
        match self {
            Self::Kind(k) => &d.kind == k,
            Self::Metric(m, op, v) => {
                let x = match m.as_str() {
                    "reorg_depth" => d.reorg_depth.map(|x| x as f64),
                    "stall_secs" => d.stall_secs,
                    "regression_depth" => d.regression_depth.map(|x| x as f64),
                    _ => d.interval_z.map(f64::abs),
                };
                x.is_some_and(|x| match op.as_str() {
                    ">=" => x >= *v,
                    ">" => x > *v,
                    "<=" => x <= *v,
                    "<" => x < *v,
                    _ => (x - v).abs() < f64::EPSILON,
                })
            }
        }
    }
}

/// A custom reaction to detections, in Rust.
pub trait SecurityHook: Send + Sync + std::fmt::Debug + 'static {
    /// Actions for a detection (empty: none).
    fn on_detection(&self, d: &Detection) -> Vec<Action>;
}

/// Pause switches of the pausable actors.
#[derive(Debug, Default)]
pub struct Pauses {
    flags: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
}

impl Pauses {
    /// The switch of `actor` (created on first use).
    pub fn flag(&self, actor: &str) -> Arc<AtomicBool> {
        self.flags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(actor.to_owned())
            .or_default()
            .clone()
    }

    /// Actor -> paused.
    pub fn list(&self) -> BTreeMap<String, bool> {
        self.flags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Acquire)))
            .collect()
    }

    /// Whether `actor` is paused.
    pub fn is_paused(&self, actor: &str) -> bool {
        self.flags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(actor)
            .is_some_and(|f| f.load(Ordering::Acquire))
    }
}

/// Rules, hooks, pauses and the alert log.
#[derive(Debug)]
pub struct SecurityHub {
    rules: std::sync::RwLock<Vec<(RuleConfig, Cond, Action)>>,
    hooks: Mutex<Vec<Arc<dyn SecurityHook>>>,
    pauses: Arc<Pauses>,
    queues: Option<Arc<Queues>>,
    audit: Option<Audit>,
    alerts: Mutex<VecDeque<Detection>>,
}

fn now_ms() -> u64 {
    crate::queue::now_us() / 1000
}

impl SecurityHub {
    /// A hub with `rules` (every problem is reported with the rule's position).
    pub fn new(
        rules: &[RuleConfig],
        pauses: Arc<Pauses>,
        queues: Option<Arc<Queues>>,
        audit: Option<Audit>,
    ) -> Result<Self, String> {
        let parsed = parse_rules(rules, &pauses)?;
        for a in PAUSABLE {
            pauses.flag(a);
        }
        Ok(Self {
            rules: std::sync::RwLock::new(parsed),
            hooks: Mutex::new(Vec::new()),
            pauses,
            queues,
            audit,
            alerts: Mutex::new(VecDeque::new()),
        })
    }

    /// Replaces the rules (SIGHUP); refused whole if one is invalid.
    pub fn set_rules(&self, rules: &[RuleConfig]) -> Result<(), String> {
        let parsed = parse_rules(rules, &self.pauses)?;
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        Ok(())
    }

    /// Checks rules without a hub (config validation).
    pub fn check_rules(rules: &[RuleConfig]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if let Err(e) = Cond::parse(&r.when) {
                out.push(format!("security.rules[{i}].when: {e}"));
            }
            if let Err(e) = Action::parse(&r.action) {
                out.push(format!("security.rules[{i}].action: {e}"));
            }
        }
        out
    }

    /// Adds a custom hook.
    pub fn add_hook(&self, h: Arc<dyn SecurityHook>) {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).push(h);
    }

    /// The rules as configured.
    pub fn rules(&self) -> Vec<RuleConfig> {
        self.rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(r, _, _)| r.clone())
            .collect()
    }

    /// The pause switches.
    pub fn pauses(&self) -> &Arc<Pauses> {
        &self.pauses
    }

    /// The newest detections, newest last.
    pub fn alerts(&self, limit: usize) -> Vec<Detection> {
        let a = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        a.iter().skip(a.len().saturating_sub(limit)).cloned().collect()
    }

    /// Pauses (`true`) or resumes an actor; audited with `by`.
    pub fn set_paused(&self, actor: &str, paused: bool, by: &str) -> Result<bool, String> {
        if !PAUSABLE.contains(&actor) {
            return Err(format!(
                "`{actor}` cannot be paused; pausable: {}",
                PAUSABLE.join(", ")
            ));
        }
        let was = self.pauses.flag(actor).swap(paused, Ordering::AcqRel);
        let action = if paused {
            "security.pause"
        } else {
            "security.resume"
        };
        if let Some(a) = &self.audit {
            a.append_or_log(by, action, json!({ "actor": actor, "was_paused": was }));
        }
        tracing::warn!(
            actor,
            paused,
            by,
            "actor {}",
            if paused { "paused" } else { "resumed" }
        );
        Ok(was)
    }

    /// Records a detection: rules and hooks act, then it is logged, kept,
    /// published on `security.alerts` and audited.
    pub async fn raise(&self, mut d: Detection) {
        if d.at_unix_ms == 0 {
            d.at_unix_ms = now_ms();
        }
        let mut actions: Vec<(Action, String)> = self
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(r, c, _)| r.source.as_ref().is_none_or(|s| *s == d.source) && c.matches(&d))
            .map(|(r, _, a)| (a.clone(), format!("rule:{}", r.when)))
            .collect();
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for h in hooks {
            actions.extend(h.on_detection(&d).into_iter().map(|a| (a, "hook".to_owned())));
        }
        for (a, by) in &actions {
            let r = match a {
                Action::Alert => Ok(false),
                Action::Pause(x) => self.set_paused(x, true, by),
                Action::Resume(x) => self.set_paused(x, false, by),
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "security action failed");
            }
            d.actions.push(a.describe());
        }
        tracing::warn!(source = %d.source, kind = %d.kind, detail = %d.detail, actions = %d.actions.join(","), "security detection");
        metrics::counter!(crate::metrics::SECURITY_DETECTIONS, "kind" => d.kind.clone()).increment(1);
        if let Some(a) = &self.audit {
            a.append_or_log("chain-monitor", "security.detection", json!(d));
        }
        {
            let mut al = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
            if al.len() == KEPT {
                al.pop_front();
            }
            al.push_back(d.clone());
        }
        if let Some(q) = &self.queues {
            let p = Publish {
                sender: "node:security".into(),
                correlation: format!("{}-{}-{}", d.source, d.kind, d.at_unix_ms),
                headers: Default::default(),
                payload: serde_json::to_vec(&d).unwrap_or_default(),
            };
            if let Err(e) = q.publish(BUS_TOPIC, p).await {
                tracing::error!(error = %e, "cannot publish a detection on the bus");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct PauseOnOutage;

    impl SecurityHook for PauseOnOutage {
        fn on_detection(&self, d: &Detection) -> Vec<Action> {
            match d.kind.as_str() {
                "outage" => vec![Action::Pause("challenges".into())],
                "recovery" => vec![Action::Resume("challenges".into())],
                _ => vec![],
            }
        }
    }

    fn det(kind: &str) -> Detection {
        Detection {
            source: "s".into(),
            kind: kind.into(),
            ..Detection::default()
        }
    }

    #[tokio::test]
    async fn rules_and_hooks_pause_and_resume() {
        let rules = [RuleConfig {
            when: "kind == stall".into(),
            action: "pause:challenges".into(),
            source: Some("other".into()),
        }];
        let hub = SecurityHub::new(&rules, Arc::new(Pauses::default()), None, None).unwrap();
        hub.raise(det("stall")).await;
        assert!(
            !hub.pauses().is_paused("challenges"),
            "the rule is for another source"
        );
        hub.add_hook(Arc::new(PauseOnOutage));
        hub.raise(det("outage")).await;
        assert!(hub.pauses().is_paused("challenges"));
        hub.raise(det("recovery")).await;
        assert!(!hub.pauses().is_paused("challenges"));
        assert_eq!(hub.alerts(10).len(), 3);
        assert_eq!(hub.alerts(10)[1].actions, vec!["pause:challenges"]);
    }

    #[test]
    fn bad_rules_name_what_is_allowed() {
        let bad = [
            RuleConfig {
                when: "reorg_depth >> 3".into(),
                action: "alert".into(),
                source: None,
            },
            RuleConfig {
                when: "kind == reorg".into(),
                action: "pause:store".into(),
                source: None,
            },
        ];
        let errs = SecurityHub::check_rules(&bad);
        assert!(
            errs[0].contains("security.rules[0].when") && errs[0].contains("reorg_depth"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("security.rules[1].action") && errs[1].contains("pausable: challenges"),
            "{errs:?}"
        );
    }
}
