//! The OTP decision rules, pure and synchronous: given "child i exited
//! (normally or not) at time t", what to stop, what to start, or whether to
//! give up. The supervisor task carries the decisions out; the property test in
//! `tests` checks these rules against an independent model.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a child that exits is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (a panic).
    Transient,
    /// Never; the child is removed when it exits or is stopped by a group restart.
    Temporary,
}

/// Which children restart with a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child: the others are stopped (reverse start order), then all start (start order).
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// Restart intensity: more than `max_restarts` within `period` makes the supervisor give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            period: Duration::from_secs(5),
        }
    }
}

/// What the supervisor must do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (a transient child exited normally and stays stopped).
    Keep,
    /// The child is gone for good (temporary).
    Remove(usize),
    /// Stop `stop` (in this order), remove `remove`, then start `start` (in this order).
    Restart {
        /// Running children to stop first, reverse start order.
        stop: Vec<usize>,
        /// Temporary children stopped by the group restart, removed for good.
        remove: Vec<usize>,
        /// Children to (re)start, start order.
        start: Vec<usize>,
    },
    /// Intensity exceeded: stop `stop` (reverse start order) and escalate to the parent.
    Escalate {
        /// Running children to stop, reverse start order.
        stop: Vec<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Running,
    Stopped,
    Removed,
}

/// Decision state of one supervisor.
#[derive(Debug, Clone)]
pub struct Core {
    strategy: Strategy,
    intensity: Intensity,
    restart: Vec<Restart>,
    slots: Vec<Slot>,
    history: VecDeque<Instant>,
}

impl Core {
    /// A supervisor whose children (in start order) have these restart types; all running.
    pub fn new(strategy: Strategy, intensity: Intensity, restart: Vec<Restart>) -> Self {
        let slots = vec![Slot::Running; restart.len()];
        Self {
            strategy,
            intensity,
            restart,
            slots,
            history: VecDeque::new(),
        }
    }

    /// Whether child `i` should be running.
    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i] == Slot::Running
    }

    /// Whether child `i` was removed (temporary).
    pub fn is_removed(&self, i: usize) -> bool {
        self.slots[i] == Slot::Removed
    }

    /// Marks child `i` running again (operator restart of a stopped child).
    pub fn mark_running(&mut self, i: usize) {
        if self.slots[i] != Slot::Removed {
            self.slots[i] = Slot::Running;
        }
    }

    /// Marks every child stopped (supervisor stopped or gave up); keeps removals.
    pub fn stop_all(&mut self) {
        for s in &mut self.slots {
            if *s == Slot::Running {
                *s = Slot::Stopped;
            }
        }
    }

    /// Starts every child that is not removed, with a fresh intensity window
    /// (the supervisor itself was restarted). Returns them in start order.
    pub fn start_all(&mut self) -> Vec<usize> {
        self.history.clear();
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if *s != Slot::Removed {
                *s = Slot::Running;
                out.push(i);
            }
        }
        out
    }

    /// Child `i` exited at `now`; `abnormal` when it panicked.
    pub fn on_exit(&mut self, i: usize, abnormal: bool, now: Instant) -> Decision {
        if self.slots[i] != Slot::Running {
            return Decision::Keep;
        }
        self.slots[i] = Slot::Stopped;
        let restart = match self.restart[i] {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart {
            if self.restart[i] == Restart::Temporary {
                self.slots[i] = Slot::Removed;
                return Decision::Remove(i);
            }
            return Decision::Keep;
        }
        self.history.push_back(now);
        while let Some(&t) = self.history.front() {
            if now.duration_since(t) > self.intensity.period {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if self.history.len() > self.intensity.max_restarts as usize {
            let stop = self.running_rev(0..self.slots.len());
            self.stop_all();
            return Decision::Escalate { stop };
        }
        let affected = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..self.slots.len(),
            Strategy::RestForOne => i..self.slots.len(),
        };
        let stop = self.running_rev(affected.clone());
        let mut remove = Vec::new();
        let mut start = Vec::new();
        for j in affected {
            if self.slots[j] == Slot::Removed {
                continue;
            }
            if j != i && self.restart[j] == Restart::Temporary {
                self.slots[j] = Slot::Removed;
                remove.push(j);
                continue;
            }
            self.slots[j] = Slot::Running;
            start.push(j);
        }
        Decision::Restart { stop, remove, start }
    }

    fn running_rev(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        range.rev().filter(|&j| self.slots[j] == Slot::Running).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{
        any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
    };
    use proptest::strategy::Strategy as Gen;

    use super::*;

    /// An independent model of OTP's rules, written from the OTP docs as sets
    /// rather than slots, to check `Core` against.
    #[derive(Debug)]
    struct Model {
        strategy: Strategy,
        max: usize,
        period_ms: u64,
        kinds: Vec<Restart>,
        running: Vec<bool>,
        gone: Vec<bool>,
        restarts_at: Vec<u64>,
        escalated: bool,
    }

    impl Model {
        fn exit(&mut self, i: usize, crashed: bool, t: u64) -> (Vec<usize>, bool) {
            // returns (children started by this event, escalated)
            if !self.running[i] || self.escalated {
                return (vec![], false);
            }
            self.running[i] = false;
            let wants = match self.kinds[i] {
                Restart::Permanent => true,
                Restart::Transient => crashed,
                Restart::Temporary => false,
            };
            if !wants {
                if self.kinds[i] == Restart::Temporary {
                    self.gone[i] = true;
                }
                return (vec![], false);
            }
            self.restarts_at.push(t);
            let window: Vec<u64> = self
                .restarts_at
                .iter()
                .copied()
                .filter(|&x| t - x <= self.period_ms)
                .collect();
            self.restarts_at = window;
            if self.restarts_at.len() > self.max {
                self.running = vec![false; self.running.len()];
                self.escalated = true;
                return (vec![], true);
            }
            let group: Vec<usize> = match self.strategy {
                Strategy::OneForOne => vec![i],
                Strategy::OneForAll => (0..self.kinds.len()).collect(),
                Strategy::RestForOne => (i..self.kinds.len()).collect(),
            };
            let mut started = vec![];
            for j in group {
                if self.gone[j] {
                    continue;
                }
                if j != i && self.kinds[j] == Restart::Temporary {
                    self.gone[j] = true;
                    self.running[j] = false;
                } else {
                    self.running[j] = true;
                    started.push(j);
                }
            }
            (started, false)
        }
    }

    fn restart_kind() -> impl Gen<Value = Restart> {
        prop_oneof![
            Just(Restart::Permanent),
            Just(Restart::Transient),
            Just(Restart::Temporary)
        ]
    }

    fn strategy() -> impl Gen<Value = super::Strategy> {
        prop_oneof![
            Just(super::Strategy::OneForOne),
            Just(super::Strategy::OneForAll),
            Just(super::Strategy::RestForOne)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn core_matches_the_model(
            strat in strategy(),
            kinds in prop::collection::vec(restart_kind(), 1..6),
            max in 0u32..5,
            period_ms in 1u64..3000,
            events in prop::collection::vec((0usize..6, any::<bool>(), 0u64..1500), 1..40),
        ) {
            let t0 = Instant::now();
            let intensity = Intensity { max_restarts: max, period: Duration::from_millis(period_ms) };
            let mut core = Core::new(strat, intensity, kinds.clone());
            let n = kinds.len();
            let mut model = Model {
                strategy: strat, max: max as usize, period_ms, kinds: kinds.clone(),
                running: vec![true; n], gone: vec![false; n], restarts_at: vec![], escalated: false,
            };
            let mut t = 0u64;
            for (child, crashed, dt) in events {
                let i = child % n;
                t += dt;
                let (model_started, model_escalated) = model.exit(i, crashed, t);
                if model.escalated && !model_escalated {
                    break; // the supervisor is gone; nothing more happens
                }
                let d = core.on_exit(i, crashed, t0 + Duration::from_millis(t));
                match &d {
                    Decision::Escalate { .. } => prop_assert!(model_escalated, "core escalated, model did not: {d:?}"),
                    Decision::Restart { start, .. } => prop_assert_eq!(start, &model_started),
                    Decision::Keep | Decision::Remove(_) => prop_assert!(model_started.is_empty() && !model_escalated, "{d:?}"),
                }
                for j in 0..n {
                    prop_assert_eq!(core.is_running(j), model.running[j], "child {} running", j);
                    prop_assert_eq!(core.is_removed(j), model.gone[j], "child {} removed", j);
                }
                if model_escalated { break; }
            }
        }
    }

    #[test]
    fn fourth_restart_in_the_window_escalates_and_stops_in_reverse() {
        let mut c = Core::new(
            Strategy::OneForOne,
            Intensity::default(),
            vec![Restart::Permanent; 3],
        );
        let t = Instant::now();
        for k in 0..3 {
            assert_eq!(
                c.on_exit(1, true, t + Duration::from_millis(k)),
                Decision::Restart {
                    stop: vec![],
                    remove: vec![],
                    start: vec![1]
                }
            );
        }
        assert_eq!(
            c.on_exit(1, true, t + Duration::from_millis(4)),
            Decision::Escalate { stop: vec![2, 0] }
        );
    }

    #[test]
    fn rest_for_one_stops_later_children_and_drops_temporary_ones() {
        let kinds = vec![
            Restart::Permanent,
            Restart::Permanent,
            Restart::Temporary,
            Restart::Transient,
        ];
        let mut c = Core::new(Strategy::RestForOne, Intensity::default(), kinds);
        let d = c.on_exit(1, true, Instant::now());
        assert_eq!(
            d,
            Decision::Restart {
                stop: vec![3, 2],
                remove: vec![2],
                start: vec![1, 3]
            }
        );
        assert!(c.is_removed(2) && c.is_running(0));
    }
}
