//! What the queues do when the store stops taking writes part way
//! (`SledStore::fail_writes_after`, a test hook): the operation fails with
//! an error that says so, and nothing stored is lost or doubled, before and
//! after a reopen.

use super::*;

fn open(store: &SledStore) -> Arc<Queues> {
    Queues::open(store.clone(), QueueConfig::default()).unwrap()
}

fn msg(p: &str) -> Publish {
    Publish {
        sender: "test".into(),
        payload: p.as_bytes().to_vec(),
        ..Publish::default()
    }
}

fn payloads(d: &[Delivery]) -> Vec<String> {
    d.iter()
        .map(|d| String::from_utf8(d.envelope.payload.clone()).unwrap())
        .collect()
}

/// Publishes `n` messages to `t` and terms each: all in `t.dlq`.
async fn dead_letters(q: &Queues, n: usize) {
    for i in 0..n {
        q.publish("t", msg(&format!("m-{i}"))).await.unwrap();
    }
    let (d, _) = q.fetch("t", "g", n).unwrap();
    assert_eq!(d.len(), n);
    for d in d {
        q.term("t", "g", d.envelope.seq, "test").unwrap();
    }
}

#[tokio::test]
async fn a_replay_the_store_stops_part_way_loses_nothing_and_finishes_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 8 << 20, None).unwrap();
    let q = open(&store);
    // More than one batch of 256 moves.
    dead_letters(&q, 600).await;
    assert_eq!(q.dlq_list("t", 0, 1000).unwrap().items.len(), 600);

    store.fail_writes_after(300);
    let e = q.dlq_replay("t").await.unwrap_err();
    let Error::ReplayStopped { moved, .. } = e else {
        panic!("not a stopped replay: {e}")
    };
    assert!(moved > 0 && moved < 600, "moved {moved}");
    assert!(e.to_string().contains("injected"), "{e}");

    // A restart in between: what moved stays moved, the rest is still dead.
    store.fail_writes_after(-1);
    drop(q);
    let q = open(&store);
    let left = q.dlq_list("t", 0, 1000).unwrap().items;
    assert_eq!(left.len() as u64, 600 - moved);
    assert_eq!(q.dlq_replay("t").await.unwrap(), 600 - moved);
    assert!(q.dlq_list("t", 0, 1000).unwrap().items.is_empty());

    // Each dead letter is back exactly once, in its order.
    let (d, _) = q.fetch("t", "g", 1000).unwrap();
    let want: Vec<String> = (0..600).map(|i| format!("m-{i}")).collect();
    assert_eq!(payloads(&d), want);
}

#[tokio::test]
async fn a_term_the_store_cannot_write_leaves_the_delivery_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 8 << 20, None).unwrap();
    let q = open(&store);
    for i in 0..3 {
        q.publish("t", msg(&format!("m-{i}"))).await.unwrap();
    }
    let (d, _) = q.fetch("t", "g", 3).unwrap();
    store.fail_writes_after(0);
    let e = q.term("t", "g", d[0].envelope.seq, "bad").unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    store.fail_writes_after(-1);
    assert!(
        q.dlq_list("t", 0, 10).unwrap().items.is_empty(),
        "not dead-lettered"
    );
    // Still this consumer's delivery: it can settle it now.
    q.term("t", "g", d[0].envelope.seq, "bad").unwrap();
    q.ack("t", "g", d[1].envelope.seq).unwrap();
    let dlq = q.dlq_list("t", 0, 10).unwrap().items;
    assert_eq!(dlq.len(), 1, "dead-lettered once");
    assert_eq!(dlq[0].payload, b"m-0");

    // After a restart the dead letter is there once and m-2 comes again.
    drop(q);
    let q = open(&store);
    assert_eq!(q.dlq_list("t", 0, 10).unwrap().items.len(), 1);
    let (d, _) = q.fetch("t", "g", 10).unwrap();
    assert_eq!(payloads(&d), ["m-2"]);
}
