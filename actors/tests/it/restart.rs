use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use vigil_actors::store::{SledStore, Store};
use vigil_actors::supervision::*;

use crate::probe::*;

fn tree(children: Vec<ChildSpec>, intensity: Intensity) -> (TreeHandle, Registry) {
    let mut spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(intensity)
        .backoff(Backoff::none());
    for c in children {
        spec = spec.child(c);
    }
    let registry = Registry::default();
    (start_tree(spec, registry.clone()).unwrap(), registry)
}

fn many() -> Intensity {
    Intensity {
        max_restarts: 1000,
        period: Duration::from_secs(1),
    }
}

#[actix_rt::test]
async fn handler_panic_restarts_in_place_keeps_queue_and_rebuilds_from_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
    let log = SharedLog::default();
    let (l1, l2, s1) = (log.clone(), log.clone(), store.clone());
    let (_tree, reg) = tree(
        vec![
            ChildSpec::actor("a", move || Probe {
                store: Some(s1),
                ..Probe::new("a", l1)
            }),
            ChildSpec::actor("b", move || Probe::new("b", l2)),
        ],
        many(),
    );
    let a = reg.get::<Probe>("a").unwrap();
    let b = reg.get::<Probe>("b").unwrap();
    assert_eq!(b.addr().send(Add(5)).await.unwrap(), 5);
    let before = a.addr().clone();
    assert_eq!(a.addr().send(Add(1)).await.unwrap(), 1);

    // Queue a crash between good messages without awaiting: every good one is answered.
    let r1 = a.addr().send(Add(2));
    let crash = a.addr().send(Add(13));
    let r2 = a.addr().send(Add(3));
    let r3 = a.addr().send(Add(4));
    assert_eq!(r1.await.unwrap(), 3);
    assert!(crash.await.is_err(), "the crashing message gets no reply");
    // The half-updated in-memory count (16) was discarded: restarting() reloaded 3 from sled.
    assert_eq!(r2.await.unwrap(), 6);
    assert_eq!(r3.await.unwrap(), 10);

    assert_eq!(reg.entry("a").unwrap().restarts(), 1);
    assert!(reg
        .entry("a")
        .unwrap()
        .last_panic()
        .unwrap()
        .contains("unlucky 13"));
    assert_eq!(count(&log, "start a"), 2);
    // Same address, and the other actor was untouched.
    assert!(reg.get::<Probe>("a").unwrap().addr() == &before);
    assert_eq!(count(&log, "start b"), 1);
    assert_eq!(b.addr().send(Get).await.unwrap(), 5);
    assert_eq!(store.get("probe", b"a").unwrap().unwrap(), 10u64.to_be_bytes());
}

#[actix_rt::test]
async fn panic_in_started_and_in_a_timer_are_caught() {
    let log = SharedLog::default();
    let l = log.clone();
    let fail_first = Arc::new(Mutex::new(1));
    let f = fail_first.clone();
    let (_tree, reg) = tree(
        vec![ChildSpec::actor("s", move || Probe {
            panic_in_started: f,
            ..Probe::new("s", l)
        })],
        many(),
    );
    let s = reg.get::<Probe>("s").unwrap();
    // A message queued while started() panics is delivered after the restart.
    assert_eq!(s.addr().send(Add(7)).await.unwrap(), 7);
    assert_eq!(count(&log, "start s"), 2);
    assert!(reg
        .entry("s")
        .unwrap()
        .last_panic()
        .unwrap()
        .contains("panic in started() of s"));

    s.addr().send(PanicLater).await.unwrap();
    eventually("timer panic restart", || count(&log, "start s") == 3).await;
    assert!(reg
        .entry("s")
        .unwrap()
        .last_panic()
        .unwrap()
        .contains("timer panic in s"));
    assert_eq!(
        s.addr().send(Add(1)).await.unwrap(),
        1,
        "state rebuilt (no store: zero)"
    );
    assert_eq!(reg.entry("s").unwrap().status(), Status::Running);
}

#[actix_rt::test]
async fn poison_message_is_dead_lettered_and_later_messages_still_flow() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
    let log = SharedLog::default();
    let l = log.clone();
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(Intensity {
            max_restarts: 10,
            period: Duration::from_secs(5),
        })
        .backoff(Backoff {
            initial: Duration::from_millis(5),
            ..Backoff::default()
        })
        .child(ChildSpec::actor("p", move || Probe::new("p", l)));
    let reg = Registry::with_store(store.clone());
    let _tree = start_tree(spec, reg.clone()).unwrap();
    let p = reg.get::<Probe>("p").unwrap();

    let later = p.clone();
    let poison = actix_rt::spawn(async move { p.call(Add(13)).await });
    let after = later.call(Add(2)).await.unwrap();
    let err = poison.await.unwrap().unwrap_err();
    match &err {
        CallError::DeadLettered {
            actor,
            attempts,
            panic,
        } => {
            assert_eq!((*actor, *attempts), ("p", POISON_AFTER));
            assert!(panic.contains("unlucky 13"), "{panic}");
        }
        other => panic!("expected DeadLettered, got {other}"),
    }
    assert!(
        after >= 2,
        "a later message was processed while the poison one was retried"
    );
    assert!(
        later.call(Add(1)).await.unwrap() >= 1,
        "and the actor serves after the dead-lettering"
    );
    assert_eq!(reg.entry("p").unwrap().restarts(), u64::from(POISON_AFTER));
    let dead = reg.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].message.contains("Add(13)") && dead[0].message_type.ends_with("Add"),
        "{:?}",
        dead[0]
    );
    let stored = store.scan_prefix(DLQ_TREE, b"").unwrap();
    assert_eq!(stored.len(), 1, "dead letter persisted in sled");
    assert!(String::from_utf8_lossy(&stored[0].1).contains("unlucky 13"));
}

#[actix_rt::test]
async fn exceeding_root_intensity_gives_up_naming_the_actor_and_panic() {
    let log = SharedLog::default();
    let (l1, l2) = (log.clone(), log.clone());
    let (mut tree, reg) = tree(
        vec![
            ChildSpec::actor("first", move || Probe::new("first", l1)),
            ChildSpec::actor("flaky", move || Probe::new("flaky", l2)),
        ],
        Intensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        },
    );
    let flaky = reg.get::<Probe>("flaky").unwrap();
    for _ in 0..4 {
        let _ = flaky.addr().send(Crash).await;
    }
    let why = tokio::time::timeout(Duration::from_secs(5), tree.gave_up())
        .await
        .expect("root gave up");
    assert!(
        why.contains("root") && why.contains("`flaky`") && why.contains("crash requested for flaky"),
        "{why}"
    );
    // Children were stopped in reverse start order.
    eventually("both stopped", || count(&log, "stop first") == 1).await;
    assert_eq!(reg.entry("first").unwrap().status(), Status::Stopped);
}

#[actix_rt::test]
async fn stop_goes_in_reverse_start_order() {
    let log = SharedLog::default();
    let kids: Vec<ChildSpec> = ["one", "two", "three"]
        .into_iter()
        .map(|n| {
            let l = log.clone();
            ChildSpec::actor(n, move || Probe::new(n, l))
        })
        .collect();
    let (mut tree, reg) = tree(kids, many());
    reg.get::<Probe>("three").unwrap().addr().send(Get).await.unwrap();
    tree.stop(Duration::from_secs(10)).await.unwrap();
    let events = log.lock().unwrap().events.clone();
    let stops: Vec<_> = events.iter().filter(|e| e.starts_with("stop")).cloned().collect();
    assert_eq!(stops, ["stop three", "stop two", "stop one"]);
}

#[actix_rt::test]
async fn operator_restart_and_injected_panic() {
    let log = SharedLog::default();
    let l = log.clone();
    let (_tree, reg) = tree(vec![ChildSpec::actor("x", move || Probe::new("x", l))], many());
    reg.get::<Probe>("x").unwrap().addr().send(Get).await.unwrap();
    reg.restart("x").await.unwrap();
    assert_eq!(count(&log, "stop x"), 1);
    reg.inject_panic("x").await.unwrap();
    eventually("injected panic restarts x", || count(&log, "start x") == 3).await;
    assert!(reg
        .entry("x")
        .unwrap()
        .last_panic()
        .unwrap()
        .contains("injected panic"));
    assert_eq!(reg.entry("x").unwrap().restarts(), 2);
    assert!(reg
        .restart("nope")
        .await
        .unwrap_err()
        .contains("no actor named `nope`"));
    assert!(reg.inject_panic("root").await.is_err());
}

#[actix_rt::test]
async fn duplicate_names_are_refused() {
    let log = SharedLog::default();
    let (l1, l2) = (log.clone(), log.clone());
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .child(ChildSpec::actor("same", move || Probe::new("same", l1)))
        .child(ChildSpec::actor("same", move || Probe::new("same", l2)));
    let err = start_tree(spec, Registry::default()).unwrap_err();
    assert!(err.contains("`same`"), "{err}");
}

/// Refuses to stop: `stopping()` always answers `Continue`.
struct Stubborn;

impl Actor for Stubborn {
    type Context = Context<Self>;
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        Running::Continue
    }
}

impl Supervised for Stubborn {}

#[actix_rt::test]
async fn a_child_that_will_not_stop_costs_only_its_own_timeout() {
    let log = SharedLog::default();
    let (l1, l2) = (log.clone(), log.clone());
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .child(ChildSpec::actor("first", move || Probe::new("first", l1)))
        .child(ChildSpec::actor("stubborn", || Stubborn).shutdown(Duration::from_millis(200)))
        .child(ChildSpec::actor("last", move || Probe::new("last", l2)));
    let reg = Registry::default();
    let mut tree = start_tree(spec, reg.clone()).unwrap();
    let t0 = std::time::Instant::now();
    tree.stop(Duration::from_secs(10)).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let stops: Vec<_> = log
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| e.starts_with("stop"))
        .cloned()
        .collect();
    assert_eq!(
        stops,
        ["stop last", "stop first"],
        "the children around the stuck one still stopped in order"
    );
}

#[actix_rt::test]
async fn with_the_bus_dead_letters_go_to_a_durable_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
    let queues = vigil_actors::queue::Queues::open(store, Default::default()).unwrap();
    let log = SharedLog::default();
    let l = log.clone();
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(Intensity {
            max_restarts: 10,
            period: Duration::from_secs(5),
        })
        .backoff(Backoff::none())
        .child(ChildSpec::actor("p", move || Probe::new("p", l)));
    let reg = Registry::with_queues(queues.clone());
    let _tree = start_tree(spec, reg.clone()).unwrap();
    let p = reg.get::<Probe>("p").unwrap();
    assert!(matches!(
        p.call(Add(13)).await,
        Err(CallError::DeadLettered { .. })
    ));
    let (d, _) = queues.fetch(DLQ_TOPIC, "ops", 10).unwrap();
    assert_eq!(d.len(), 1);
    let letter: DeadLetter = serde_json::from_slice(&d[0].envelope.payload).unwrap();
    assert_eq!(letter.actor, "p");
    assert!(
        letter.panic.contains("unlucky 13") && letter.message.contains("Add(13)"),
        "{letter:?}"
    );
    assert_eq!(d[0].envelope.sender, "node");
}
