//! `vigilctl bus ...` and `vigilctl queue ...` against the real binary.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_tools::bus::{payload, BusClient};

use crate::bus::{app, audit, bus_url, ctl, dev, rt};
use crate::util::*;

/// Runs `vigilctl ARGS` with `input` on its stdin.
fn ctl_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(vigilctl_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `vigilctl queue stats TOPIC --json`: the topic's first consumer group.
fn first_group(node: &Node, topic: &str) -> Value {
    let stats: Value =
        serde_json::from_str(&stdout(&ctl(node, &["queue", "stats", topic, "--json"]))).unwrap();
    stats[0]["groups"][0].clone()
}

#[test]
fn vigilctl_publishes_stdin_consumes_and_manages_the_dead_letter_topic() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let token = app(&node, "ops", &["publish:jobs", "subscribe:jobs"]);
    let token_file = tmp.path().join("ops.token");
    std::fs::write(&token_file, &token).unwrap();
    let who = ["--app", "ops", "--token-file", s(&token_file)];

    let mut args = vec!["--data-dir", s(&node.dir), "bus", "publish", "jobs"];
    args.extend_from_slice(&who);
    let input: String = (0..500).map(|i| format!("job {i}\n")).collect();
    let o = ctl_with_stdin(&args, input.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("confirmed 500 of 500 messages on jobs"),
        "{}",
        stdout(&o)
    );
    // A line that is not UTF-8 is published as bytes, to a topic of its own;
    // an app needs its token and the bus URL, not the admin cookie.
    let elsewhere = tmp.path().join("no-cookie-here");
    let url = bus_url(&node);
    let mut args = vec![
        "--data-dir",
        s(&elsewhere),
        "--json",
        "bus",
        "publish",
        "raw",
        "--bus",
        &url,
    ];
    args.extend_from_slice(&who);
    let o = ctl(&node, &["bus", "grant", "ops", "publish", "raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ctl_with_stdin(&args, b"ok\n\xff\xfe bytes\r\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (r["published"].as_u64(), r["confirmed"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );

    let mut args = vec![
        "bus",
        "consume",
        "jobs",
        "--group",
        "ops.workers",
        "--count",
        "3",
        "--ack",
    ];
    args.extend_from_slice(&who);
    let o = ctl(&node, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "job 0\njob 1\njob 2\n");
    // It leased exactly what it printed: no delivery was handed back with
    // its count raised.
    let g = first_group(&node, "jobs");
    assert_eq!(
        (
            g["delivered"].as_u64(),
            g["redelivered"].as_u64(),
            g["acked"].as_u64()
        ),
        (Some(3), Some(0), Some(3)),
        "{g}"
    );

    // Park one message in the DLQ through the protocol's `term`, then replay it.
    rt().block_on(async {
        let url = bus_url(&node);
        let mut c = BusClient::connect(&url, "ops", &token).await.unwrap();
        let sub = c.subscribe("jobs", Some("ops.workers")).await.unwrap();
        let m = c.next_msg(Duration::from_secs(5)).await.unwrap();
        assert_eq!(payload(&m), b"job 3");
        c.call(json!({ "op": "term", "sub": sub, "seq": m["seq"], "reason": "cannot parse" }))
            .await
            .unwrap();
    });
    let o = ctl(&node, &["queue", "dlq", "jobs"]);
    assert!(
        stdout(&o).contains("term: cannot parse") && stdout(&o).contains("job 3"),
        "{}",
        stdout(&o)
    );
    let page: Value =
        serde_json::from_str(&stdout(&ctl(&node, &["queue", "dlq", "jobs", "--json"]))).unwrap();
    assert_eq!(page["items"][0]["headers"]["dlq-reason"], "term: cannot parse");
    assert!(page["next"].is_null(), "one page: {page}");
    let o = ctl(&node, &["queue", "dlq", "jbos"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no topic `jbos`"), "{}", stderr(&o));
    let g = first_group(&node, "jobs");
    assert_eq!(
        (
            g["group"].as_str(),
            g["acked"].as_u64(),
            g["dead_lettered"].as_u64()
        ),
        (Some("ops.workers"), Some(3), Some(1))
    );
    let o = ctl(&node, &["queue", "dlq", "jobs", "--replay"]);
    assert!(
        stdout(&o).contains("replayed 1 messages back to jobs"),
        "{}",
        stdout(&o)
    );
    let table = stdout(&ctl(&node, &["queue", "stats"]));
    assert!(
        table.contains("DEAD-LETTERED") && table.contains("workers"),
        "{table}"
    );
    let actions: Vec<String> = audit(&node)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(actions.contains(&"queue.dlq_replay".to_owned()), "{actions:?}");
}

#[test]
fn the_client_and_vigilctl_speak_the_unix_socket_too() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let token = app(&node, "ops", &["publish:jobs", "subscribe:jobs", "publish:big"]);
    let url = format!("unix:{}", node.dir.join("bus.sock").display());
    rt().block_on(async {
        let e = BusClient::connect(&url, "ops", "not-the-token")
            .await
            .unwrap_err();
        assert_eq!(crate::bus::err_code(&e), "unauthorized", "{e}");
        let e = BusClient::connect("unix:/nonexistent/bus.sock", "ops", &token)
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot connect to the bus socket /nonexistent/bus.sock"),
            "{e:#}"
        );

        let mut c = BusClient::connect(&url, "ops", &token).await.unwrap();
        // Pipelined publishes over the socket are confirmed in order.
        let pending: Vec<_> = (0..50)
            .map(|i| c.publish_start("jobs", format!("j-{i}").as_bytes()))
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.await.unwrap()["seq"], i as u64);
        }
        let bytes = [0xff_u8, 0, 1];
        assert_eq!(
            c.publish("jobs", &bytes).await.unwrap(),
            50,
            "bytes that are not UTF-8 cross too"
        );
        // Pipelined frames larger than the socket takes at once go out whole
        // and in order.
        let big: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a' + i; 400_000]).collect();
        let pending: Vec<_> = big.iter().map(|b| c.publish_start("big", b)).collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.await.unwrap()["seq"], i as u64);
        }
        let sub = c.subscribe("jobs", None).await.unwrap();
        for i in 0..51 {
            let m = c.next_msg(Duration::from_secs(5)).await.expect("delivered");
            assert_eq!(m["seq"], i);
            let want = if i < 50 {
                format!("j-{i}").into_bytes()
            } else {
                bytes.to_vec()
            };
            assert_eq!(payload(&m), want);
            c.ack(sub, i).await.unwrap();
        }
    });
    // vigilctl publishes over the socket when given `--bus unix:PATH`.
    let args = [
        "--data-dir",
        s(&node.dir),
        "--json",
        "bus",
        "publish",
        "jobs",
        "--app",
        "ops",
        "--token",
        &token,
        "--bus",
        &url,
    ];
    let o = ctl_with_stdin(&args, b"a\nb\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["confirmed"], 2, "{v}");
}

/// An app on the Unix socket that pipelines publishes without reading its
/// confirms: the flusher thread writes them until the socket and the
/// session's backlog are full, then the node stops reading that app; other
/// apps go on, and once the app reads, every confirm arrives once, in order.
#[test]
fn an_app_that_does_not_read_its_confirms_is_held_back_and_loses_none() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    let token = app(&node, "flood", &["publish:jobs"]);
    let other = app(&node, "other", &["publish:jobs"]);
    let path = node.dir.join("bus.sock");
    let sock = UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut lines = BufReader::new(sock.try_clone().unwrap()).lines();
    let hello = json!({ "op": "hello", "app": "flood", "token": token });
    writeln!(&sock, "{hello}").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap()["op"],
        "welcome"
    );
    // ~1 MB of confirms: more than the socket buffers and the session's
    // backlog (256 KiB) hold together.
    const N: u64 = 20_000;
    let mut w = sock.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut frames = String::new();
        for i in 0..N {
            frames.push_str(&format!(
                "{{\"op\":\"publish\",\"id\":{i},\"topic\":\"jobs\",\"payload\":\"{i}\"}}\n"
            ));
        }
        w.write_all(frames.as_bytes()).unwrap();
    });
    // Held back, not merely slow: the topic stops growing, short of the flood.
    let depth = || {
        let stats: Value =
            serde_json::from_str(&stdout(&ctl(&node, &["queue", "stats", "jobs", "--json"]))).unwrap();
        // No topic yet before the first publish is read.
        stats[0]["depth"].as_u64().unwrap_or(0)
    };
    // Wait (20 s at most) until a second passes with no publish read.
    let t0 = std::time::Instant::now();
    let mut held = depth();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = depth();
        if now == held && now > 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the topic did not settle at a depth within 20 s (now {now})"
        );
        held = now;
    }
    assert!(
        held < N,
        "the node read all {N} publishes: it should have stopped"
    );
    assert!(!writer.is_finished(), "the app's writes wait on the node");
    rt().block_on(async {
        let url = format!("unix:{}", path.display());
        let c = BusClient::connect(&url, "other", &other).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), c.publish("jobs", b"still served"))
            .await
            .expect("another app is served meanwhile")
            .unwrap();
    });
    let mut seqs = std::collections::BTreeSet::new();
    for i in 0..N {
        let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(
            (answer["op"].as_str(), answer["id"].as_u64()),
            (Some("ok"), Some(i)),
            "{answer}"
        );
        assert!(seqs.insert(answer["seq"].as_u64().unwrap()), "{answer}");
    }
    writer.join().unwrap();
    assert_eq!(seqs.len() as u64, N);
}
