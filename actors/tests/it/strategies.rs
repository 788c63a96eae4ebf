//! The real runtime against the OTP rules: random crash / normal-exit sequences
//! on real actors, for every strategy and restart type; the start counts and
//! statuses the actors report must equal what the rules say.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vigil_actors::supervision::*;

use crate::probe::*;

const NAMES: [&str; 4] = ["c0", "c1", "c2", "c3"];

fn kinds() -> impl proptest::strategy::Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ]
}

fn strategies() -> impl proptest::strategy::Strategy<Value = vigil_actors::supervision::Strategy> {
    use vigil_actors::supervision::Strategy as S;
    prop_oneof![Just(S::OneForOne), Just(S::OneForAll), Just(S::RestForOne)]
}

#[allow(clippy::needless_range_loop)]
async fn run_case(
    strategy: vigil_actors::supervision::Strategy,
    restart: Vec<Restart>,
    ops: Vec<(usize, bool)>,
) {
    let log = SharedLog::default();
    let intensity = Intensity {
        max_restarts: 10_000,
        period: Duration::from_secs(60),
    };
    let mut spec = SupervisorSpec::new("root", strategy)
        .intensity(intensity)
        .backoff(Backoff::none());
    for (i, r) in restart.iter().enumerate() {
        let l = log.clone();
        let name = NAMES[i];
        spec = spec.child(ChildSpec::actor(name, move || Probe::new(name, l)).restart(*r));
    }
    let reg = Registry::default();
    let _tree = start_tree(spec, reg.clone()).unwrap();
    let n = restart.len();
    let mut model = Core::new(strategy, intensity, restart.clone());
    let mut starts = vec![1usize; n];
    for (child, crash) in ops {
        let i = child % n;
        if !model.is_running(i) {
            continue;
        }
        let addr = reg.get::<Probe>(NAMES[i]).unwrap();
        if crash {
            let _ = addr.addr().send(Crash).await;
        } else {
            let _ = addr.addr().send(Exit).await;
        }
        if let Decision::Restart { start, .. } = model.on_exit(i, crash, Instant::now()) {
            for j in start {
                starts[j] += 1;
            }
        }
        for j in 0..n {
            let want_status = if model.is_removed(j) {
                Status::Removed
            } else if model.is_running(j) {
                Status::Running
            } else {
                Status::Stopped
            };
            let entry = reg.entry(NAMES[j]).unwrap();
            let what = format!(
                "{} after op on {}: starts {} status {:?}",
                NAMES[j], NAMES[i], starts[j], want_status
            );
            eventually(&what, || {
                count(&log, &format!("start {}", NAMES[j])) == starts[j] && entry.status() == want_status
            })
            .await;
        }
    }
    // A running child answers through the same address it always had.
    for j in 0..n {
        if model.is_running(j) {
            reg.get::<Probe>(NAMES[j])
                .unwrap()
                .addr()
                .send(Get)
                .await
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn runtime_follows_the_rules(
        strategy in strategies(),
        restart in prop::collection::vec(kinds(), 1..=4),
        ops in prop::collection::vec((0usize..4, any::<bool>()), 1..14),
    ) {
        actix_rt::System::new().block_on(run_case(strategy, restart, ops));
    }
}

#[actix_rt::test]
async fn nested_supervisor_escalates_and_its_parent_restarts_it() {
    let log = SharedLog::default();
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let inner = SupervisorSpec::new("inner", vigil_actors::supervision::Strategy::OneForAll)
        .intensity(Intensity {
            max_restarts: 1,
            period: Duration::from_secs(10),
        })
        .backoff(Backoff::none())
        .child(ChildSpec::actor("i0", move || Probe::new("i0", l1)))
        .child(ChildSpec::actor("i1", move || Probe::new("i1", l2)));
    let root = SupervisorSpec::new("root", vigil_actors::supervision::Strategy::OneForOne)
        .backoff(Backoff::none())
        .child(ChildSpec::actor("outer", move || Probe::new("outer", l3)))
        .child(ChildSpec::supervisor(inner));
    let reg = Registry::default();
    let _tree = start_tree(root, reg.clone()).unwrap();
    let i1 = reg.get::<Probe>("i1").unwrap();

    let _ = i1.addr().send(Crash).await; // restart 1 of inner: one_for_all restarts both
    eventually("one_for_all", || {
        count(&log, "start i0") == 2 && count(&log, "start i1") == 2
    })
    .await;
    let _ = i1.addr().send(Crash).await; // restart 2 > 1: inner gives up, root restarts inner
    eventually("escalated and restarted", || {
        count(&log, "start i0") == 3 && count(&log, "start i1") == 3
    })
    .await;
    assert_eq!(reg.entry("inner").unwrap().restarts(), 1);
    assert!(reg
        .entry("inner")
        .unwrap()
        .last_panic()
        .unwrap()
        .contains("supervisor `inner` gave up"));
    assert_eq!(
        count(&log, "start outer"),
        1,
        "the sibling of the failed supervisor is untouched"
    );
    assert_eq!(i1.addr().send(Add(2)).await.unwrap(), 2);
    let tree = reg.entries();
    let parents: Vec<_> = tree.iter().map(|e| (e.name, e.parent)).collect();
    assert_eq!(
        parents,
        [
            ("root", None),
            ("outer", Some("root")),
            ("inner", Some("root")),
            ("i0", Some("inner")),
            ("i1", Some("inner"))
        ]
    );
}
