use std::sync::Arc;
use std::time::Duration;

use vigil_actors::queue::*;
use vigil_actors::store::SledStore;

fn open(dir: &std::path::Path, topics: Vec<TopicConfig>) -> Arc<Queues> {
    let store = SledStore::open(dir, 8 << 20, None).unwrap();
    Queues::open(
        store,
        QueueConfig {
            topics,
            ..QueueConfig::default()
        },
    )
    .unwrap()
}

fn msg(payload: &str) -> Publish {
    Publish {
        sender: "test".into(),
        payload: payload.as_bytes().to_vec(),
        ..Publish::default()
    }
}

fn topic(name: &str) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        ..TopicConfig::default()
    }
}

fn payloads(d: &[Delivery]) -> Vec<String> {
    d.iter()
        .map(|d| String::from_utf8(d.envelope.payload.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn confirmed_messages_survive_reopen_and_unacked_leases_return() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(dir.path(), vec![]);
        for i in 0..5 {
            let p = q.publish("jobs", msg(&format!("m{i}"))).await.unwrap();
            assert_eq!(
                p,
                Published {
                    seq: i,
                    duplicate: false
                }
            );
        }
        let (d, _) = q.fetch("jobs", "workers", 3).unwrap();
        assert_eq!(payloads(&d), ["m0", "m1", "m2"]);
        assert_eq!(d[0].envelope.sender, "test");
        q.ack("jobs", "workers", 0).unwrap();
        q.publish("jobs", msg("flush")).await.unwrap(); // flushes the ack too
    } // dropped: the flusher's last checkpoint writes the groups' state (a
      // clean stop; crashes before a checkpoint: topic.rs unit tests and
      // the node's SIGKILL crash test)
    let q = open(dir.path(), vec![]);
    let (d, _) = q.fetch("jobs", "workers", 10).unwrap();
    // m1, m2 were leased when we "crashed": ready again, with their count kept.
    assert_eq!(payloads(&d), ["m1", "m2", "m3", "m4", "flush"]);
    assert_eq!(
        d.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        [2, 2, 1, 1, 1]
    );
    let s = q.stats().into_iter().find(|s| s.topic == "jobs").unwrap();
    assert_eq!(s.depth, 5, "m0 was acked by the only group and deleted");
}

#[tokio::test]
async fn lease_expiry_nak_delay_and_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![TopicConfig {
            ack_wait_ms: 80,
            ..topic("t")
        }],
    );
    q.publish("t", msg("a")).await.unwrap();
    q.publish("t", msg("b")).await.unwrap();
    let (d, _) = q.fetch("t", "g", 10).unwrap();
    assert_eq!(d.len(), 2);
    let (d, wake) = q.fetch("t", "g", 10).unwrap();
    assert!(
        d.is_empty() && wake.is_some(),
        "leased messages are not handed out twice"
    );
    q.nak("t", "g", 1, Duration::from_millis(300)).unwrap();
    q.in_progress("t", "g", 0).unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    q.in_progress("t", "g", 0).unwrap(); // extended again: not expired at 120 ms
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        q.fetch("t", "g", 10).unwrap().0.is_empty(),
        "lease extended, nak delay not over"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (d, _) = q.fetch("t", "g", 10).unwrap();
    assert_eq!(payloads(&d), ["a", "b"], "lease expired and nak delay over");
    assert!(d.iter().all(|d| d.delivery_count == 2));
    let err = q.ack("t", "g", 99).unwrap_err().to_string();
    assert!(err.contains("not pending"), "{err}");
}

#[tokio::test]
async fn max_deliver_moves_to_the_dlq_and_replay_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![TopicConfig {
            max_deliver: 3,
            ..topic("t")
        }],
    );
    q.publish("t", msg("poison")).await.unwrap();
    q.publish("t", msg("fine")).await.unwrap();
    for round in 1..=3 {
        let (d, _) = q.fetch("t", "g", 10).unwrap();
        let poison = d
            .iter()
            .find(|d| d.envelope.payload == b"poison")
            .expect("delivered");
        assert_eq!(poison.delivery_count, round);
        if round == 1 {
            q.ack("t", "g", 1).unwrap();
        }
        q.nak("t", "g", 0, Duration::ZERO).unwrap();
    }
    let (d, _) = q.fetch("t", "g", 10).unwrap();
    assert!(d.is_empty(), "the 4th delivery moves it to the DLQ instead");
    let dlq = q.dlq_list("t", 0, 10).unwrap().items;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload, b"poison");
    assert_eq!(dlq[0].header(HDR_DLQ_DELIVERIES), Some("3"));
    assert_eq!(dlq[0].header(HDR_DLQ_GROUP), Some("g"));
    assert!(dlq[0].header(HDR_DLQ_REASON).unwrap().contains("max_deliver"));
    let stats = q.stats();
    let t = stats.iter().find(|s| s.topic == "t").unwrap();
    assert_eq!(t.depth, 0, "acked and dead-lettered: nothing left in the topic");
    assert_eq!(t.groups[0].dead_lettered, 1);

    assert_eq!(q.dlq_replay("t").await.unwrap(), 1);
    assert!(q.dlq_list("t", 0, 10).unwrap().items.is_empty());
    let (d, _) = q.fetch("t", "g", 10).unwrap();
    assert_eq!(payloads(&d), ["poison"]);
    assert_eq!(d[0].delivery_count, 1);
    assert!(d[0].envelope.header(HDR_DLQ_REASON).is_none());

    q.term("t", "g", d[0].envelope.seq, "cannot parse").unwrap();
    let dlq = q.dlq_list("t", 0, 10).unwrap().items;
    assert_eq!(dlq[0].header(HDR_DLQ_REASON), Some("term: cannot parse"));

    // Pages: `next` says where to go on, and is None at the end.
    for i in 0..2 {
        q.publish("t", msg(&format!("bad-{i}"))).await.unwrap();
        let (d, _) = q.fetch("t", "g", 10).unwrap();
        q.term("t", "g", d[0].envelope.seq, "paged").unwrap();
    }
    let p1 = q.dlq_list("t", 0, 2).unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = q.dlq_list("t", p1.next.expect("more"), 2).unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.next, None);
    assert_eq!(p2.items[0].payload, b"bad-1");

    // Reading or replaying dead letters never creates a topic.
    let before = q.stats().len();
    let e = q.dlq_list("ordrs", 0, 10).unwrap_err().to_string();
    assert!(e.contains("no topic `ordrs`"), "{e}");
    let e = q.dlq_replay("ordrs").await.unwrap_err().to_string();
    assert!(e.contains("no topic `ordrs`"), "{e}");
    let e = q.dlq_list("t.dlq", 0, 10).unwrap_err().to_string();
    assert!(e.contains("dead-letter topic") && e.contains("(`t`)"), "{e}");
    q.publish("fresh", msg("x")).await.unwrap();
    assert!(q.dlq_list("fresh", 0, 10).unwrap().items.is_empty());
    assert_eq!(q.dlq_replay("fresh").await.unwrap(), 0);
    assert_eq!(q.stats().len(), before + 1, "only `fresh` itself was created");
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_moved_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    // A dead-letter topic of 200 characters: its own dead-letter topic's name
    // would be too long, so its dead letters cannot move.
    let name = format!("{}.dlq", "x".repeat(MAX_TOPIC_LEN));
    let cfg = |max_deliver| TopicConfig {
        max_deliver,
        ..topic(&name)
    };
    let q = open(dir.path(), vec![cfg(1)]);
    q.publish(&name, msg("poison")).await.unwrap();
    q.publish(&name, msg("fine")).await.unwrap();
    let (d, _) = q.fetch(&name, "g", 10).unwrap();
    assert_eq!(payloads(&d), ["poison", "fine"]);
    q.ack(&name, "g", 1).unwrap();
    q.nak(&name, "g", 0, Duration::ZERO).unwrap();
    q.publish(&name, msg("next")).await.unwrap();
    let (d, _) = q.fetch(&name, "g", 10).unwrap();
    assert_eq!(
        payloads(&d),
        ["next"],
        "a failed move still hands out what the fetch leased"
    );
    let stats = q.stats();
    let t = stats.iter().find(|s| s.topic == name).unwrap();
    assert_eq!(
        t.depth, 3,
        "the floor stays below the message that could not move"
    );
    assert_eq!(t.groups[0].pending, 2, "it is still pending for its group");
    assert_eq!(t.groups[0].dead_lettered, 0);
    drop(q);

    let q = open(dir.path(), vec![cfg(5)]);
    let (d, _) = q.fetch(&name, "g", 10).unwrap();
    assert_eq!(payloads(&d), ["poison", "next"]);
    assert_eq!(d[0].delivery_count, 2);
}

#[tokio::test]
async fn a_consumer_whose_lease_expired_cannot_settle_the_next_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![TopicConfig {
            ack_wait_ms: 300,
            ..topic("t")
        }],
    );
    q.publish("t", msg("a")).await.unwrap();
    q.publish("t", msg("b")).await.unwrap();
    let t0 = std::time::Instant::now();
    let (first, _) = q.fetch("t", "g", 10).unwrap();
    assert!(first
        .iter()
        .all(|d| d.delivery_count == 1 && d.lease_until >= t0 + Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Another consumer of the group now holds delivery 2 of both.
    let (again, _) = q.fetch("t", "g", 10).unwrap();
    assert!(again.iter().all(|d| d.delivery_count == 2), "{again:?}");
    for how in [
        Settle::Ack,
        Settle::Nak(Duration::ZERO),
        Settle::InProgress,
        Settle::Term("late".into()),
    ] {
        let e = q.settle("t", "g", 0, 1, how.clone()).unwrap_err();
        assert!(
            matches!(e, vigil_actors::Error::LeaseLost { count: 1, now: 2, .. }),
            "{how:?}: {e}"
        );
        assert!(e.to_string().contains("delivered again"), "{e}");
    }
    assert!(
        q.fetch("t", "g", 10).unwrap().0.is_empty(),
        "delivery 2 is untouched: still leased"
    );
    let until = q
        .settle("t", "g", 0, 2, Settle::InProgress)
        .unwrap()
        .expect("the lease's new end");
    assert!(until > again[0].lease_until);
    q.settle("t", "g", 0, 2, Settle::Ack).unwrap();
    assert!(matches!(
        q.settle("t", "g", 0, 2, Settle::Ack),
        Err(vigil_actors::Error::NotPending { .. })
    ));
    // Auto-ack acks only what is still the consumer's delivery.
    assert_eq!(q.ack_leases("t", "g", &[(1, 1), (1, 2)]).unwrap(), [1]);
    let stats = q.stats();
    let g = &stats.iter().find(|s| s.topic == "t").unwrap().groups[0];
    assert_eq!((g.acked, g.pending), (2, 0));
}

#[tokio::test]
async fn dedupe_window_drops_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![TopicConfig {
            dedupe_window_secs: 1,
            ..topic("t")
        }],
    );
    let with_id = |id: &str| {
        let mut p = msg("x");
        p.headers.insert(HDR_MSG_ID.into(), id.as_bytes().to_vec());
        p
    };
    let a = q.publish("t", with_id("order-1")).await.unwrap();
    let b = q.publish("t", with_id("order-1")).await.unwrap();
    assert_eq!((a.duplicate, b.duplicate, b.seq), (false, true, a.seq));
    q.publish("t", with_id("order-2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = q.publish("t", with_id("order-1")).await.unwrap();
    assert!(!c.duplicate, "outside the window it is a new message");
    assert_eq!(q.fetch("t", "g", 10).unwrap().0.len(), 3);
}

#[tokio::test]
async fn queue_retention_waits_for_every_group_and_streams_keep_by_limits() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![
            topic("work"),
            TopicConfig {
                kind: TopicKind::Stream,
                max_msgs: 3,
                ..topic("s")
            },
            TopicConfig {
                kind: TopicKind::Stream,
                max_age_secs: 1,
                ..topic("aged")
            },
        ],
    );
    for i in 0..3 {
        q.publish("work", msg(&i.to_string())).await.unwrap();
    }
    q.fetch("work", "a", 10).unwrap();
    q.fetch("work", "b", 10).unwrap();
    for s in 0..3 {
        q.ack("work", "a", s).unwrap();
    }
    let depth = |q: &Queues, t: &str| q.stats().into_iter().find(|s| s.topic == t).unwrap().depth;
    assert_eq!(depth(&q, "work"), 3, "group b has not acked");
    q.ack("work", "b", 1).unwrap();
    assert_eq!(depth(&q, "work"), 3, "b's oldest (0) is still pending");
    q.ack("work", "b", 0).unwrap();
    assert_eq!(depth(&q, "work"), 1);

    for i in 0..5 {
        q.publish("s", msg(&i.to_string())).await.unwrap();
    }
    assert_eq!(depth(&q, "s"), 3);
    let (d, _) = q.fetch("s", "late", 10).unwrap();
    assert_eq!(
        payloads(&d),
        ["2", "3", "4"],
        "a new group starts at the oldest kept message"
    );
    for s in 2..5 {
        q.ack("s", "late", s).unwrap();
    }
    assert_eq!(depth(&q, "s"), 3, "acks do not delete from a stream");

    q.publish("aged", msg("old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    q.publish("aged", msg("new")).await.unwrap();
    assert_eq!(payloads(&q.fetch("aged", "g", 10).unwrap().0), ["new"]);
}

#[tokio::test]
async fn max_in_flight_one_gives_strict_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(
        dir.path(),
        vec![TopicConfig {
            max_in_flight: 1,
            ..topic("t")
        }],
    );
    for i in 0..3 {
        q.publish("t", msg(&i.to_string())).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (d, _) = q.fetch("t", "g", 10).unwrap();
        assert_eq!(d.len(), 1);
        assert!(
            q.fetch("t", "g", 10).unwrap().0.is_empty(),
            "one in flight at most"
        );
        seen.extend(payloads(&d));
        q.ack("t", "g", d[0].envelope.seq).unwrap();
    }
    assert_eq!(seen, ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_all_confirm_in_order_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), vec![]);
    let mut tasks = Vec::new();
    for p in 0..16 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                q.publish("t", msg(&format!("{p}:{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (d, _) = q.fetch("t", "g", 2000).unwrap();
    assert_eq!(d.len(), 800);
    let seqs: Vec<u64> = d.iter().map(|d| d.envelope.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "FIFO by sequence");
    for p in 0..16 {
        let mine: Vec<u32> = payloads(&d)
            .iter()
            .filter_map(|s| s.strip_prefix(&format!("{p}:")).map(|i| i.parse().unwrap()))
            .collect();
        assert_eq!(
            mine,
            (0..50).collect::<Vec<_>>(),
            "each publisher's order is kept"
        );
    }
}

#[tokio::test]
async fn bad_names_and_oversized_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), vec![]);
    let e = q.publish("bad/topic", msg("x")).await.unwrap_err().to_string();
    assert!(e.contains("A-Z a-z 0-9 . _ -"), "{e}");
    let big = Publish {
        payload: vec![0; (1 << 20) + 1],
        ..Publish::default()
    };
    let e = q.publish("t", big).await.unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
    let e = q.fetch("t", "", 1).unwrap_err().to_string();
    assert!(e.contains("group"), "{e}");
    let long = "x".repeat(MAX_TOPIC_LEN + 1);
    let e = q.publish(&long, msg("x")).await.unwrap_err().to_string();
    assert!(e.contains("at most 196") && e.contains(".dlq"), "{e}");
    q.publish(&"x".repeat(MAX_TOPIC_LEN), msg("x")).await.unwrap();
}

/// Topics stored before the 196-byte limit (which makes room for `.dlq`) still open.
#[tokio::test]
async fn a_topic_stored_before_the_length_limit_still_opens() {
    use vigil_actors::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let long = "y".repeat(MAX_TOPIC_LEN + 2);
    {
        let store = SledStore::open(dir.path(), 8 << 20, None).unwrap();
        // What an older node left: the topic's message tree.
        let tree = format!("q/{long}/msg");
        store.insert(&tree, b"k", b"v").unwrap();
        store.remove(&tree, b"k").unwrap();
        store.flush().unwrap();
    }
    let q = open(dir.path(), vec![]);
    assert!(q.stats().iter().any(|t| t.topic == long), "loaded");
    let e = q
        .publish(&"z".repeat(MAX_TOPIC_LEN + 2), msg("x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most 196"), "{e}");
}

/// Messages go to sled in chunks (64 at a time): reads across chunk borders,
/// a reopen, and acks that delete whole chunks.
#[tokio::test]
async fn messages_in_many_chunks_survive_reopen_and_acked_chunks_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: usize| format!("{i:03}{}", "x".repeat(197));
    {
        let q = open(dir.path(), vec![]);
        for i in 0..300 {
            assert_eq!(q.publish("bulk", msg(&body(i))).await.unwrap().seq, i as u64);
        }
        let (d, _) = q.fetch("bulk", "g", 300).unwrap();
        assert_eq!(payloads(&d), (0..300).map(body).collect::<Vec<_>>());
        let acked: Vec<u64> = (0..150).collect();
        q.ack_many("bulk", "g", &acked).unwrap();
        let s = q.stats().into_iter().find(|s| s.topic == "bulk").unwrap();
        assert_eq!((s.depth, s.next_seq), (150, 300));
    }
    {
        let store = SledStore::open(dir.path(), 8 << 20, None).unwrap();
        let values = vigil_actors::store::Store::range_from(&store, "q/bulk/msg", &[], 1000).unwrap();
        let keys: Vec<u64> = values
            .iter()
            .map(|(k, _)| u64::from_be_bytes(k[..8].try_into().unwrap()))
            .collect();
        assert!(
            keys.len() <= 5,
            "300 messages are a few chunks, not a value each: {keys:?}"
        );
        assert!(
            keys[0] > 64 && keys[0] <= 150,
            "chunks wholly acked are deleted, the one holding seq 150 is kept: {keys:?}"
        );
    }
    let q = open(dir.path(), vec![]);
    let s = q.stats().into_iter().find(|s| s.topic == "bulk").unwrap();
    assert_eq!((s.depth, s.next_seq), (150, 300), "the floor survives the reopen");
    let (d, _) = q.fetch("bulk", "g", 1000).unwrap();
    assert_eq!(payloads(&d), (150..300).map(body).collect::<Vec<_>>());
    assert!(d.iter().all(|d| d.delivery_count == 2));
    assert_eq!(q.publish("bulk", msg("next")).await.unwrap().seq, 300);
}

#[tokio::test]
async fn a_capped_stream_keeps_its_newest_across_chunks_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let capped = || TopicConfig {
        kind: TopicKind::Stream,
        max_msgs: 100,
        ..topic("s")
    };
    {
        let q = open(dir.path(), vec![capped()]);
        for i in 0..250 {
            q.publish("s", msg(&i.to_string())).await.unwrap();
        }
        let s = q.stats().into_iter().find(|s| s.topic == "s").unwrap();
        assert_eq!(s.depth, 100);
    }
    let q = open(dir.path(), vec![capped()]);
    let s = q.stats().into_iter().find(|s| s.topic == "s").unwrap();
    assert_eq!((s.depth, s.next_seq), (100, 250));
    let (d, _) = q.fetch("s", "new", 1000).unwrap();
    assert_eq!(
        payloads(&d),
        (150..250).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}
