//! Crash safety with the real binary: SIGKILL while publishing, 20 times.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;
use vigil_tools::bus::{payload, BusClient};

use crate::util::*;

/// Messages the node's start put back from the queue's write-ahead log (its log line).
fn restored_from_log(node: &Node) -> u64 {
    node.log()
        .lines()
        .filter(|l| l.contains("queue log replayed"))
        .filter_map(|l| {
            l.split("restored=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn start(data: &std::path::Path) -> (Node, String) {
    let mut cmd = vigil(&["dev", "--data-dir", s(data), "--rpc-addr", "127.0.0.1:0"]);
    // Sled writes out its log every 20 ms (500 by default): many more points
    // where a kill finds a group's cursor on disk ahead of messages that were
    // still only in memory and in the queue's log.
    cmd.env("VIGIL_STORAGE__FLUSH_EVERY_MS", "20");
    let mut node = Node::spawn(cmd, data);
    node.wait_ready();
    let url = std::fs::read_to_string(data.join("bus.url"))
        .unwrap()
        .trim()
        .to_owned();
    (node, url)
}

#[test]
fn confirmed_messages_survive_sigkill_at_random_points() {
    let seed: u64 = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (rerun with VIGIL_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (node, _) = start(&data);
    let add = vigilctl(&["--data-dir", s(&data), "bus", "app-add", "pub"]);
    let token = stdout(&add).trim().to_owned();
    for (verb, pattern) in [("publish", "crash"), ("subscribe", "crash")] {
        assert!(
            vigilctl(&["--data-dir", s(&data), "bus", "grant", "pub", verb, pattern])
                .status
                .success()
        );
    }
    let url = std::fs::read_to_string(data.join("bus.url")).unwrap();
    // The checker's group exists from the start, so the live group's acks
    // delete nothing it has not read.
    let (mut node, _client) = rt.block_on(async {
        let c = BusClient::connect(url.trim(), "pub", &token).await.unwrap();
        c.subscribe("crash", Some("pub.checker")).await.unwrap();
        (node, c)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout(&vigilctl(&["--data-dir", s(&data), "queue", "stats", "--json"]))
        .contains("\"pub.checker\"")
    {
        assert!(
            Instant::now() < deadline,
            "the checker group never appeared in queue stats"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A clean stop makes the group durable.
    node.signal("TERM");
    assert!(node.wait_exit(20).success());

    let t0 = Instant::now();
    let mut live_acked = 0u64;
    // What the live group was handed across the cycles: its state (cursor,
    // pending deliveries) comes back from each kill, and none of what was
    // confirmed may be skipped by it either.
    let mut live_seen = BTreeSet::new();
    let mut next = 0u64;
    let mut confirmed = BTreeSet::new();
    let mut restored = 0;
    let mut confirmed_unix = 0;
    for cycle in 0..20 {
        let (mut node, ws_url) = start(&data);
        restored += restored_from_log(&node);
        // The publisher alternates transports: over the Unix socket the
        // flusher thread itself writes the confirms, over WebSocket the
        // flusher hands them to the session's writer task.
        let unix = cycle % 2 == 0;
        let url = if unix {
            format!("unix:{}", data.join("bus.sock").display())
        } else {
            ws_url
        };
        let kill_after = Duration::from_millis(rng.gen_range(30..400));
        let first = next;
        // A second group reads and acks while the publishes run: its cursor
        // moves past messages that may be only in the log when the kill lands.
        let live = async {
            let mut seen = Vec::new();
            let Ok(mut c) = BusClient::connect(&url, "pub", &token).await else {
                return (0, seen);
            };
            let Ok(sub) = c.subscribe("crash", Some("pub.live")).await else {
                return (0, seen);
            };
            // Acks are pipelined (64 unanswered at most) so the group keeps
            // up with the publisher, reading the newest messages. Every 7th
            // first delivery is nak'd instead, so redeliveries (whose counts
            // are written at once) cross the kills too. A message counts as
            // handled by the group once an ack for it is sent (a kill may cut
            // the answer of an ack that took effect; one that did not makes
            // the message come again): one delivered, or nak'd, without an
            // ack before a kill must come again.
            let mut acks = VecDeque::new();
            let mut acked = 0u64;
            while let Some(m) = c.next_msg(Duration::from_millis(500)).await {
                let Some(seq) = m["seq"].as_u64().filter(|_| m["op"] == "msg") else {
                    break;
                };
                let n: u64 = String::from_utf8(payload(&m)).unwrap().parse().unwrap();
                if m["delivery_count"] == 1 && n % 7 == 0 {
                    let nak = c.start(json!({ "op": "nak", "sub": sub, "seq": seq }));
                    acks.push_back((None, Box::pin(nak)));
                } else {
                    let ack = c.start(json!({ "op": "ack", "sub": sub, "seq": seq }));
                    seen.push(n);
                    acks.push_back((Some(n), Box::pin(ack)));
                }
                if acks.len() > 64 {
                    let (n, answer) = acks.pop_front().expect("not empty");
                    if answer.await.is_err() {
                        break;
                    }
                    acked += u64::from(n.is_some());
                }
            }
            for (n, answer) in acks {
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), answer).await {
                    acked += u64::from(n.is_some());
                }
            }
            (acked, seen)
        };
        let publish = async {
            let client = BusClient::connect(&url, "pub", &token).await.unwrap();
            let mut window = VecDeque::new();
            let mut ok = Vec::new();
            let mut n = first;
            let deadline = tokio::time::Instant::now() + kill_after;
            let killer = tokio::time::sleep_until(deadline);
            tokio::pin!(killer);
            let mut killed = false;
            loop {
                if !killed && window.len() < 32 {
                    window.push_back((
                        n,
                        Box::pin(client.publish_start("crash", n.to_string().as_bytes())),
                    ));
                    n += 1;
                    continue;
                }
                let Some((num, mut fut)) = window.pop_front() else {
                    break;
                };
                tokio::select! {
                    biased;
                    _ = &mut killer, if !killed => {
                        // SIGKILL mid-stream, with publishes in flight.
                        node.signal("KILL");
                        killed = true;
                        window.push_front((num, fut));
                    }
                    // An error means the process died first: never confirmed.
                    r = &mut fut => if r.is_ok() { ok.push(num) },
                }
            }
            (n, ok)
        };
        let ((sent, ok), (acked, seen)) = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(publish, live) }).await
            })
            .expect("a crash cycle finishes within 60 s");
        live_acked += acked;
        live_seen.extend(seen);
        let status = node.wait_exit(10);
        assert!(
            !status.success(),
            "cycle {cycle}: the node should have been killed"
        );
        next = sent;
        if unix {
            confirmed_unix += ok.len();
        }
        confirmed.extend(ok);
    }
    assert!(
        confirmed.len() > 100,
        "too few confirmed messages to mean anything: {}",
        confirmed.len()
    );

    // Read everything back.
    let (node, url) = start(&data);
    restored += restored_from_log(&node);
    let delivered: Vec<u64> = rt.block_on(async {
        let mut c = BusClient::connect(&url, "pub", &token).await.unwrap();
        let sub = c.subscribe("crash", Some("pub.checker")).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = c.next_msg(Duration::from_secs(3)).await {
            assert_eq!(m["op"], "msg", "{m}");
            got.push(String::from_utf8(payload(&m)).unwrap().parse().unwrap());
            c.ack(sub, m["seq"].as_u64().unwrap()).await.unwrap();
        }
        got
    });
    // The live group's state came back from every kill: what it was not
    // handed before comes now.
    rt.block_on(async {
        let mut c = BusClient::connect(&url, "pub", &token).await.unwrap();
        let sub = c.subscribe("crash", Some("pub.live")).await.unwrap();
        while let Some(m) = c.next_msg(Duration::from_secs(3)).await {
            assert_eq!(m["op"], "msg", "{m}");
            live_seen.insert(String::from_utf8(payload(&m)).unwrap().parse::<u64>().unwrap());
            c.ack(sub, m["seq"].as_u64().unwrap()).await.unwrap();
        }
    });
    drop(node);
    let live_lost: Vec<u64> = confirmed.difference(&live_seen).copied().collect();
    let unique: BTreeSet<u64> = delivered.iter().copied().collect();
    let lost: Vec<u64> = confirmed.difference(&unique).copied().collect();
    let duplicated = delivered.len() - unique.len();
    let reordered = delivered.windows(2).filter(|w| w[1] < w[0]).count();
    eprintln!(
        "crash test: 20 SIGKILL cycles in {:.1} s; {} sent, {} confirmed ({} over the Unix socket), {} delivered ({} unconfirmed but stored); lost {}, duplicated {}, reordered {}; {} put back from the queue log; {} acked by the live group meanwhile, {} skipped by it",
        t0.elapsed().as_secs_f64(),
        next,
        confirmed.len(),
        confirmed_unix,
        delivered.len(),
        unique.len() - unique.intersection(&confirmed).count(),
        lost.len(),
        duplicated,
        reordered,
        restored,
        live_acked,
        live_lost.len()
    );
    assert!(
        lost.is_empty(),
        "confirmed messages lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        live_lost.is_empty(),
        "confirmed messages the live group skipped across the kills: {:?}",
        &live_lost[..live_lost.len().min(20)]
    );
    // Sled is flushed about once a second: the last confirms before each kill
    // were durable only in the queue's log, and came back from it.
    assert!(live_acked > 0, "the live group read nothing during the cycles");
    assert!(
        confirmed_unix > 0 && confirmed_unix < confirmed.len(),
        "both transports confirmed messages ({confirmed_unix} of {} over Unix)",
        confirmed.len()
    );
    assert!(
        restored > 0,
        "no kill needed the queue log: the test did not exercise it"
    );
}
