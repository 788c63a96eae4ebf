use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_actors::supervision::*;

use crate::probe::eventually;

#[actix_rt::test]
async fn a_panicking_worker_restarts_on_a_new_thread_and_stops_on_request() {
    let runs = Arc::new(AtomicU64::new(0));
    let work = Arc::new(AtomicU64::new(0));
    let (r, w) = (runs.clone(), work.clone());
    let spec = SupervisorSpec::new("root", Strategy::OneForOne)
        .backoff(Backoff::none())
        .child(ChildSpec::worker("cruncher", move |ctx: &WorkerCtx| {
            let run = r.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(std::thread::current().name() == Some("vigil-cruncher"));
            while !ctx.should_stop() {
                let done = w.fetch_add(1, Ordering::SeqCst);
                if run == 1 && done == 50 {
                    panic!("worker bug at unit {done}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }));
    let reg = Registry::default();
    let mut tree = start_tree(spec, reg.clone()).unwrap();
    eventually("worker restarted after its panic", || {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    let entry = reg.entry("cruncher").unwrap();
    assert!(entry.last_panic().unwrap().contains("worker bug at unit 50"));
    assert_eq!(entry.restarts(), 1);

    reg.inject_panic("cruncher").await.unwrap();
    eventually("injected panic restarts the worker", || {
        runs.load(Ordering::SeqCst) == 3
    })
    .await;
    assert!(entry.last_panic().unwrap().contains("injected panic"));

    let before = work.load(Ordering::SeqCst);
    tree.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(entry.status(), Status::Stopped);
    let after = work.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        after >= before && work.load(Ordering::SeqCst) == after,
        "the worker kept running after stop"
    );
}
