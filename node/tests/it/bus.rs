//! The bus through the real binary and the client library.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_tools::bus::{payload, BusClient};

use crate::util::*;

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn dev(tmp: &tempfile::TempDir, env: &[(&str, &str)]) -> Node {
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = Node::spawn(cmd, &data);
    node.wait_ready();
    node
}

pub(crate) fn bus_url(node: &Node) -> String {
    std::fs::read_to_string(node.dir.join("bus.url"))
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) fn ctl(node: &Node, args: &[&str]) -> std::process::Output {
    let mut a = vec!["--data-dir", s(&node.dir)];
    a.extend_from_slice(args);
    vigilctl(&a)
}

/// Creates an app with these grants (`verb:pattern`); returns its token.
pub(crate) fn app(node: &Node, name: &str, grants: &[&str]) -> String {
    let o = ctl(node, &["bus", "app-add", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    for g in grants {
        let (verb, pattern) = g.split_once(':').unwrap();
        let o = ctl(node, &["bus", "grant", name, verb, pattern]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    stdout(&o).trim().to_owned()
}

pub(crate) fn audit(node: &Node) -> Vec<Value> {
    let o = ctl(node, &["audit", "--json"]);
    serde_json::from_str::<Value>(&stdout(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) fn err_code(e: &anyhow::Error) -> String {
    e.downcast_ref::<vigil_tools::bus::BusError>()
        .map(|b| b.code.clone())
        .unwrap_or_else(|| e.to_string())
}

#[test]
fn permissions_are_never_implicit_senders_cannot_be_forged_and_all_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let url = bus_url(&node);
    let alice_token = app(&node, "alice", &[]);
    let bob_token = app(&node, "bob", &["subscribe:orders.*"]);
    rt().block_on(async {
        let e = BusClient::connect(&url, "alice", "not-the-token").await.unwrap_err();
        assert_eq!(err_code(&e), "unauthorized", "{e}");

        let alice = BusClient::connect(&url, "alice", &alice_token).await.unwrap();
        let mut bob = BusClient::connect(&url, "bob", &bob_token).await.unwrap();
        let e = alice.publish("orders.new", b"x").await.unwrap_err();
        assert_eq!(err_code(&e), "forbidden");
        assert!(e.to_string().contains("vigilctl bus grant alice publish"), "{e}");

        assert!(ctl(&node, &["bus", "grant", "alice", "publish", "orders.*"]).status.success());
        let sub = bob.subscribe("orders.new", Some("bob.billing")).await.unwrap();
        let forged = json!({ "op": "publish", "topic": "orders.new", "payload": "42 apples", "sender": "bob", "correlation": "c-1" });
        let ok = alice.call(forged).await.unwrap();
        assert_eq!(ok["seq"], 0);
        let m = bob.next_msg(Duration::from_secs(5)).await.expect("delivered");
        assert_eq!(m["sender"], "alice", "the node stamps the sender");
        assert_eq!(m["correlation"], "c-1");
        assert_eq!(payload(&m), b"42 apples");
        bob.ack(sub, 0).await.unwrap();

        assert!(ctl(&node, &["bus", "revoke", "alice", "publish", "orders.*"]).status.success());
        assert_eq!(err_code(&alice.publish("orders.new", b"y").await.unwrap_err()), "forbidden");
        // bob may subscribe but not publish.
        assert_eq!(err_code(&bob.publish("orders.new", b"z").await.unwrap_err()), "forbidden");
    });
    let log = audit(&node);
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in [
        "bus.app_add",
        "bus.grant",
        "bus.auth_failed",
        "bus.denied",
        "bus.violation",
        "bus.revoke",
    ] {
        assert!(
            actions.contains(&a),
            "{a} missing from the audit log: {actions:?}"
        );
    }
    let denied = log.iter().find(|e| e["action"] == "bus.denied").unwrap();
    assert_eq!(denied["detail"]["app"], "alice");
    assert_eq!(denied["detail"]["name"], "orders.new");
    let v = ctl(&node, &["audit", "--verify"]);
    assert!(stdout(&v).contains("audit chain intact"), "{}", stdout(&v));
}

#[test]
fn leases_dead_letters_revokes_and_removed_apps_are_enforced_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let url = bus_url(&node);
    let pub_token = app(&node, "shop", &["publish:orders.*", "request:b.*"]);
    let w_token = app(&node, "worker", &["subscribe:*"]);
    let o = ctl(&node, &["bus", "app-add", "worker.admin"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no dots"), "{}", stderr(&o));
    rt().block_on(async {
        let shop = BusClient::connect(&url, "shop", &pub_token).await.unwrap();
        assert_eq!(shop.publish("orders.new", b"o-0").await.unwrap(), 0);
        let mut w1 = BusClient::connect(&url, "worker", &w_token).await.unwrap();
        let w2 = BusClient::connect(&url, "worker", &w_token).await.unwrap();
        let s1 = w1
            .subscribe_with("orders.new", Some("worker.pool"), Some(1))
            .await
            .unwrap();
        let m = w1
            .next_msg(Duration::from_secs(5))
            .await
            .expect("delivered to w1");
        assert_eq!(m["seq"], 0);
        // Another session of the same group cannot settle w1's delivery.
        let s2 = w2.subscribe("orders.new", Some("worker.pool")).await.unwrap();
        for e in [w2.ack(s2, 0).await, w2.nak(s2, 0, 0).await] {
            let e = e.unwrap_err();
            assert_eq!(err_code(&e), "not_pending", "{e}");
            assert!(e.to_string().contains("not a delivery subscription"), "{e}");
        }
        w1.ack(s1, 0).await.unwrap();
        assert_eq!(
            err_code(&w1.ack(s1, 0).await.unwrap_err()),
            "not_pending",
            "settled once"
        );
        // Consumer groups are per app: worker cannot join shop's.
        for g in ["shop", "shop.billing", "shopx"] {
            let e = w2.subscribe("orders.new", Some(g)).await.unwrap_err();
            assert_eq!(err_code(&e), "forbidden", "{g}: {e}");
            assert!(e.to_string().contains("`worker.NAME`"), "{e}");
        }

        // `subscribe:*` does not cover dead letters; a grant naming them does.
        let e = w1.subscribe("orders.new.dlq", None).await.unwrap_err();
        assert_eq!(err_code(&e), "forbidden", "{e}");
        assert_eq!(
            err_code(&shop.publish("orders.dlq", b"forged").await.unwrap_err()),
            "forbidden"
        );
        assert!(
            ctl(&node, &["bus", "grant", "worker", "subscribe", "orders.new.dlq"])
                .status
                .success()
        );
        w1.subscribe("orders.new.dlq", None).await.unwrap();

        // Bounded request deadlines.
        for d in [0, 300_001] {
            let e = shop.request("b", "price", b"", d).await.unwrap_err();
            assert_eq!(err_code(&e), "bad_frame", "{e}");
            assert!(e.to_string().contains("use 1 to 300000"), "{e}");
        }

        // A revoke ends what was subscribed under the grant, now.
        assert!(ctl(&node, &["bus", "revoke", "worker", "subscribe", "*"])
            .status
            .success());
        let mut ended = Vec::new();
        while let Some(f) = w1.next_msg(Duration::from_secs(3)).await {
            if f["op"] == "error" {
                assert_eq!(f["code"], "forbidden", "{f}");
                ended.push(f["sub"].as_u64().unwrap());
            }
            if ended.len() == 1 {
                break;
            }
        }
        assert_eq!(
            ended,
            [s1],
            "the dead-letter subscription has its own grant and stays"
        );
        assert_eq!(shop.publish("orders.new", b"o-1").await.unwrap(), 1);
        assert!(
            w1.next_msg(Duration::from_millis(500)).await.is_none(),
            "nothing after the revoke"
        );

        // Removing an app closes its connections at once.
        assert!(ctl(&node, &["bus", "app-remove", "worker"]).status.success());
        let f = w1.next_msg(Duration::from_secs(5)).await.expect("told why");
        assert_eq!(f["code"], "app_removed", "{f}");
        let e = w1.publish("orders.new", b"x").await.unwrap_err();
        assert_ne!(
            err_code(&e),
            "forbidden",
            "the connection is closed, not merely refused: {e}"
        );
        drop(w2);
    });
    let log = audit(&node);
    let ended = log.iter().filter(|e| e["action"] == "bus.revoked_end").count();
    assert!(ended >= 2, "each ended subscription audited (w1's and w2's)");
    let removed = log.iter().position(|e| e["action"] == "bus.app_remove").unwrap();
    let closed = &log[removed + 1];
    assert_eq!(closed["action"], "bus.sessions_closed", "{closed}");
    assert_eq!(closed["detail"]["sessions"], 2);
}

/// An app that floods the node and never reads its answers blocks only its
/// own session; removing the app still closes its connection.
#[test]
fn a_removed_app_that_stopped_reading_is_disconnected() {
    use std::io::{BufRead, BufReader, ErrorKind, Write};
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let token = app(&node, "mute", &["publish:live.*"]);
    let stream = std::os::unix::net::UnixStream::connect(node.dir.join("bus.sock")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = stream.try_clone().unwrap();
    writeln!(w, "{}", json!({ "op": "hello", "app": "mute", "token": token })).unwrap();
    let mut welcome = String::new();
    BufReader::new(stream).read_line(&mut welcome).unwrap();
    assert!(welcome.contains("welcome"), "{welcome}");
    // Publish to an ephemeral topic without reading a single answer, until
    // the node's answers back up and it stops reading us.
    w.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let frame = format!(
        "{}\n",
        json!({ "op": "publish", "id": 1, "topic": "live.flood", "payload": "x" })
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let stalled = loop {
        match w.write_all(frame.as_bytes()) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break true,
            Err(e) => panic!("the node closed a connection nobody removed: {e}"),
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        stalled,
        "the node kept reading for 60 s without its answers being read"
    );
    let o = ctl(&node, &["bus", "app-remove", "mute"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(15);
    let closed = loop {
        match w.write_all(frame.as_bytes()) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(closed, "the removed app's connection is still open 15 s later");
    // The node is fine: another app connects and publishes.
    let other = app(&node, "other", &["publish:jobs"]);
    rt().block_on(async {
        let c = BusClient::connect(&bus_url(&node), "other", &other)
            .await
            .unwrap();
        assert_eq!(c.publish("jobs", b"fine").await.unwrap(), 0);
    });
}

#[test]
fn bad_frames_get_named_errors_and_hurt_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(
        &tmp,
        &[
            ("VIGIL_BUS__MAX_FRAME_BYTES", "4096"),
            ("VIGIL_BUS__MAX_PAYLOAD_BYTES", "1000"),
        ],
    );
    let url = bus_url(&node);
    let token = app(&node, "app", &["publish:*", "subscribe:*"]);
    rt().block_on(async {
        let mut c = BusClient::connect(&url, "app", &token).await.unwrap();
        let other = BusClient::connect(&url, "app", &token).await.unwrap();
        assert_eq!(c.publish("t", b"kept").await.unwrap(), 0);
        let cases: [(String, &str, &str); 6] = [
            ("{not json".into(), "malformed", "not a JSON object"),
            (
                json!({ "op": "explode", "id": 1 }).to_string(),
                "unknown_op",
                "allowed: hello, publish",
            ),
            (json!({ "id": 2 }).to_string(), "bad_frame", "`op`"),
            (
                json!({ "op": "publish", "id": 3, "topic": "bad topic" }).to_string(),
                "bad_frame",
                "A-Z a-z 0-9",
            ),
            (
                json!({ "op": "publish", "id": 4, "topic": "t", "payload": "x".repeat(2000) }).to_string(),
                "rejected",
                "limit (bus.max_payload_bytes) is 1000",
            ),
            (
                json!({ "op": "publish", "id": 5, "topic": "t", "payload": "x".repeat(5000) }).to_string(),
                "oversized",
                "limit (bus.max_frame_bytes) is 4096",
            ),
        ];
        for (frame, code, text) in cases {
            c.send_raw(frame.clone()).await.unwrap();
            let e = c.next_msg(Duration::from_secs(5)).await.expect("an error frame");
            assert_eq!(e["op"], "error", "{frame:.60}");
            assert_eq!(e["code"], code, "{frame:.60}: {e}");
            assert!(e["message"].as_str().unwrap().contains(text), "{e}");
        }
        // A call whose frame is over the limit gets its answer, not silence.
        let e = tokio::time::timeout(Duration::from_secs(5), c.publish("t", &[b'x'; 5000]))
            .await
            .expect("the oversized publish is answered")
            .unwrap_err();
        assert_eq!(err_code(&e), "oversized", "{e}");
        // The connection, the other session and the confirmed message are all fine.
        assert_eq!(c.publish("t", b"after").await.unwrap(), 1);
        assert_eq!(other.publish("t", b"other").await.unwrap(), 2);
        let mut reader = BusClient::connect(&url, "app", &token).await.unwrap();
        let sub = reader.subscribe("t", Some("app.check")).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = reader.next_msg(Duration::from_secs(2)).await {
            got.push(String::from_utf8(payload(&m)).unwrap());
            reader.ack(sub, m["seq"].as_u64().unwrap()).await.unwrap();
            if got.len() == 3 {
                break;
            }
        }
        assert_eq!(got, ["kept", "after", "other"]);

        // Far over the limit, the WebSocket layer cannot read past the frame:
        // the app is told why before the connection closes.
        let mut big = BusClient::connect(&url, "app", &token).await.unwrap();
        let huge = json!({ "op": "publish", "id": 9, "topic": "t", "payload": "x".repeat(20_000) });
        big.send_raw(huge.to_string()).await.unwrap();
        let e = big
            .next_msg(Duration::from_secs(5))
            .await
            .expect("an error frame");
        assert_eq!(e["code"], "oversized", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("connection is closed"),
            "{e}"
        );
        assert!(big.publish("t", b"x").await.is_err());
        assert_eq!(other.publish("t", b"still").await.unwrap(), 3);
    });
}

#[test]
fn send_request_reply_and_ephemeral_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let url = bus_url(&node);
    let a = app(&node, "a", &["request:b.*", "send:*", "publish:live.*"]);
    let b = app(&node, "b", &["serve:price", "subscribe:*"]);
    rt().block_on(async {
        let ca = BusClient::connect(&url, "a", &a).await.unwrap();
        let mut cb = BusClient::connect(&url, "b", &b).await.unwrap();
        cb.serve("price").await.unwrap();
        let server = tokio::spawn(async move {
            let r = cb.next_request(Duration::from_secs(5)).await.expect("a request");
            assert_eq!(r["from"], "a");
            let answer = format!("price of {}", String::from_utf8_lossy(&payload(&r)));
            cb.reply(r["rid"].as_u64().unwrap(), answer.as_bytes())
                .await
                .unwrap();
            // Now never answer: the next request hits its deadline.
            let _late = cb
                .next_request(Duration::from_secs(5))
                .await
                .expect("second request");
            cb.subscribe_pattern("live.*").await.unwrap();
            cb.subscribe_pattern("direct.*").await.unwrap();
            let m1 = cb.next_msg(Duration::from_secs(5)).await.expect("live message");
            let m2 = cb.next_msg(Duration::from_secs(5)).await.expect("sent message");
            (m1, m2)
        });
        assert_eq!(
            ca.request("b", "price", b"apples", 2000).await.unwrap(),
            b"price of apples"
        );
        let t0 = Instant::now();
        let e = ca.request("b", "price", b"pears", 300).await.unwrap_err();
        assert_eq!(err_code(&e), "deadline");
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let t0 = Instant::now();
        let e = ca.request("b", "stock", b"", 5000).await.unwrap_err();
        assert_eq!(
            err_code(&e),
            "no_server",
            "immediate error when nobody serves the action"
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await; // b subscribes
                                                              // 300 KB: far more than one WebSocket read
                                                              // at the node and at b, still one frame each way.
        let ticks = "tick".repeat(75_000);
        let ok = ca
            .call(json!({ "op": "publish", "topic": "live.prices", "payload": ticks }))
            .await
            .unwrap();
        assert_eq!(ok["delivered"], 1);
        let ok = ca
            .call(json!({ "op": "send", "app": "b", "topic": "direct.note", "payload": "hi b" }))
            .await
            .unwrap();
        assert_eq!(ok["delivered"], 1);
        let e = ca
            .call(json!({ "op": "send", "app": "nobody", "topic": "direct.note", "payload": "?" }))
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "not_connected");
        let (m1, m2) = server.await.unwrap();
        assert_eq!(
            (m1["topic"].as_str(), payload(&m1)),
            (Some("live.prices"), ticks.into_bytes())
        );
        assert!(m1.get("seq").is_none(), "ephemeral messages are not stored");
        assert_eq!(payload(&m2), b"hi b");

        // A client that never takes its live copies still gets its answers:
        // beyond MAX_BUFFERED waiting frames, live copies are dropped, counted.
        let lazy = BusClient::connect(&url, "b", &b).await.unwrap();
        lazy.subscribe_pattern("live.*").await.unwrap();
        let flood: Vec<_> = (0..12_000)
            .map(|_| ca.start(json!({ "op": "publish", "topic": "live.flood", "payload": "x" })))
            .collect();
        for f in flood {
            f.await.unwrap();
        }
        let answered = tokio::time::timeout(Duration::from_secs(10), lazy.serve("price")).await;
        assert!(
            matches!(answered, Ok(Ok(()))),
            "a call of a client with a full buffer: {answered:?}"
        );
        assert!(lazy.dropped() > 0, "live copies beyond the buffer are dropped");
    });
    // Nothing of live.* touched the disk.
    let o = ctl(&node, &["queue", "stats", "--json"]);
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        stats
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["topic"].as_str().unwrap().starts_with("live")),
        "{stats}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn ten_thousand_connect_subscribe_disconnect_cycles_leave_the_table_and_memory_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let url = bus_url(&node);
    let token = app(&node, "churn", &["subscribe:*"]);
    let cycles = |n: usize| {
        let (url, token) = (url.clone(), token.clone());
        rt().block_on(async move {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let (url, token) = (url.clone(), token.clone());
                    tokio::spawn(async move {
                        for i in 0..n / 8 {
                            let c = BusClient::connect(&url, "churn", &token).await.unwrap();
                            if i % 2 == 0 {
                                c.subscribe_pattern(&format!("t{t}.*")).await.unwrap();
                            } else {
                                c.subscribe(&format!("live.t{t}"), None).await.unwrap();
                            }
                            drop(c);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    cycles(1_000); // warm up allocator and caches
    let before = rss_kib(node.child.id());
    cycles(10_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = ctl(&node, &["bus", "topics", "--json"]);
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        if v["live"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "subscriptions left behind: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = rss_kib(node.child.id());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 10,000 cycles"
    );
    let apps: Value = serde_json::from_str(&stdout(&ctl(&node, &["bus", "apps", "--json"]))).unwrap();
    assert_eq!(apps[0]["sessions"], 0);
}

#[test]
fn the_unix_socket_speaks_the_same_frames_and_metrics_count_them() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let token = app(&node, "local", &["publish:jobs"]);
    let sock = node.dir.join("bus.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut frame = |w: &mut std::os::unix::net::UnixStream, r: &mut BufReader<_>, text: String| -> Value {
        writeln!(w, "{text}").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let hello = frame(
        &mut w,
        &mut r,
        json!({ "op": "hello", "app": "local", "token": token }).to_string(),
    );
    assert_eq!(hello["op"], "welcome");
    let ok = frame(
        &mut w,
        &mut r,
        json!({ "op": "publish", "id": 1, "topic": "jobs", "payload": "one" }).to_string(),
    );
    assert_eq!((ok["op"].as_str(), ok["seq"].as_u64()), (Some("ok"), Some(0)));
    let bad = frame(&mut w, &mut r, "{oops".into());
    assert_eq!(bad["code"], "malformed");
    let huge = format!(
        "{{\"op\":\"publish\",\"id\":2,\"topic\":\"jobs\",\"payload\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let too_big = frame(&mut w, &mut r, huge);
    assert_eq!(too_big["code"], "oversized");
    assert_eq!(too_big["id"], 2, "answered with the overlong line's id");
    // A connection whose first frame is not hello is refused and audited.
    let stranger = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stranger.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut sw, mut sr) = (stranger.try_clone().unwrap(), BufReader::new(stranger));
    writeln!(
        sw,
        "{}",
        json!({ "op": "publish", "id": 1, "topic": "jobs", "payload": "x" })
    )
    .unwrap();
    let mut refused = String::new();
    sr.read_line(&mut refused).unwrap();
    assert!(
        refused.contains("unauthorized") && refused.contains("first frame must be hello"),
        "{refused}"
    );
    let log = audit(&node);
    assert!(
        log.iter().any(|e| e["action"] == "bus.auth_failed"
            && e["detail"]["last"]["why"]
                .as_str()
                .is_some_and(|w| w.contains("hello"))),
        "the refused hello is audited"
    );
    let ok = frame(
        &mut w,
        &mut r,
        json!({ "op": "publish", "id": 3, "topic": "jobs", "payload": "two" }).to_string(),
    );
    assert_eq!(ok["seq"], 1, "the session survives an oversized line");

    let url = std::fs::read_to_string(node.dir.join("rpc.url"))
        .unwrap()
        .trim()
        .to_owned();
    let text = body(&http_get(&format!("{url}/metrics")).1);
    assert!(
        text.contains("vigil_queue_published_total{topic=\"jobs\"} 2"),
        "{text}"
    );
    assert!(text.contains("vigil_queue_depth{topic=\"jobs\"} 2"), "{text}");
    assert!(
        text.contains("vigil_bus_errors_total{code=\"malformed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vigil_queue_confirm_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn a_correlation_id_can_be_followed_through_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&[
        "dev",
        "--data-dir",
        s(&data),
        "--rpc-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    cmd.env("RUST_LOG", "info,vigil_actors::bus=debug");
    let mut node = Node::spawn(cmd, &data);
    node.wait_ready();
    let token = app(&node, "tracer", &["publish:traced", "subscribe:traced"]);
    let url = bus_url(&node);
    rt().block_on(async {
        let mut c = BusClient::connect(&url, "tracer", &token).await.unwrap();
        let sub = c.subscribe("traced", None).await.unwrap();
        c.call(json!({ "op": "publish", "topic": "traced", "payload": "x", "correlation": "trace-me-42" }))
            .await
            .unwrap();
        let m = c.next_msg(Duration::from_secs(5)).await.unwrap();
        assert_eq!(m["correlation"], "trace-me-42");
        c.ack(sub, m["seq"].as_u64().unwrap()).await.unwrap();
    });
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
    let lines: Vec<Value> = node
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let traced: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["span"]["correlation"] == "trace-me-42"
                || l["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["correlation"] == "trace-me-42"))
        })
        .collect();
    let messages: Vec<&str> = traced
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str().or(l["message"].as_str()))
        .collect();
    assert!(
        messages.contains(&"confirmed"),
        "publish side not traced: {messages:?}"
    );
    assert!(
        messages.contains(&"deliver"),
        "delivery side not traced: {messages:?}"
    );
}

/// A raw WebSocket upgrade request to `url` (`ws://HOST:PORT`) with these
/// extra headers; the status line of the answer.
fn upgrade_status(url: &str, headers: &str) -> String {
    use std::io::{BufRead, Write};
    let addr = url.trim_start_matches("ws://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_owned()
}

#[test]
fn strangers_at_the_bus_cost_one_audit_entry_per_window_browsers_are_refused_and_connections_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(
        &tmp,
        &[
            ("VIGIL_BUS__MAX_CONNECTIONS", "3"),
            ("VIGIL_BUS__AUTH_FAILURE_WINDOW_SECS", "2"),
        ],
    );
    let url = bus_url(&node);
    let token = app(&node, "alice", &[]);
    let failed = |log: &[Value]| -> (usize, u64) {
        let e: Vec<&Value> = log.iter().filter(|e| e["action"] == "bus.auth_failed").collect();
        (
            e.len(),
            e.iter().map(|e| e["detail"]["count"].as_u64().unwrap()).sum(),
        )
    };
    rt().block_on(async {
        // 50 hellos with a bad token, as fast as a script can.
        for _ in 0..50 {
            let e = BusClient::connect(&url, "alice", "guess").await.unwrap_err();
            assert_eq!(err_code(&e), "unauthorized", "{e}");
        }
    });
    let (entries, count) = failed(&audit(&node));
    assert_eq!(
        (entries, count),
        (1, 1),
        "the first is audited at once, the rest wait for the window"
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = audit(&node);
    let (entries, count) = failed(&log);
    assert_eq!(count, 50, "every failure is counted");
    assert!(entries <= 3, "{entries} audit entries for 50 failures");
    let last = log
        .iter()
        .rev()
        .find(|e| e["action"] == "bus.auth_failed")
        .unwrap();
    assert_eq!(last["detail"]["source"], "127.0.0.1", "{last}");
    assert!(
        last["detail"]["last"]["why"]
            .as_str()
            .unwrap()
            .contains("wrong token"),
        "{last}"
    );

    // A browser page (any Origin header) cannot open the bus; a program can.
    let refused = upgrade_status(&url, "Origin: https://evil.example\r\n");
    assert!(refused.contains("403"), "{refused}");
    assert!(upgrade_status(&url, "").contains("101"));

    // At most 3 connections: the 4th is closed with the reason.
    rt().block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(BusClient::connect(&url, "alice", &token).await.unwrap());
        }
        let e = BusClient::connect(&url, "alice", &token).await.unwrap_err();
        assert!(e.to_string().contains("bus.max_connections"), "{e}");
        let sock = format!("unix:{}", node.dir.join("bus.sock").display());
        let e = BusClient::connect(&sock, "alice", &token).await.unwrap_err();
        assert!(e.to_string().contains("too many connections"), "{e}");
        // One closes: there is room again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(300)).await;
        BusClient::connect(&url, "alice", &token).await.unwrap();
    });
    let rpc = std::fs::read_to_string(node.dir.join("rpc.url")).unwrap();
    let m = body(&http_get(&format!("{}/metrics", rpc.trim())).1);
    assert!(m.contains("code=\"too_many_connections\""), "{m}");
    assert!(m.contains("code=\"forbidden_origin\""));
}
