use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn dev_node(tmp: &tempfile::TempDir) -> (Node, String) {
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    let url = node.wait_ready();
    (node, url)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn requests_without_the_right_cookie_get_401() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#;
    let (status, body) = rpc_raw(&url, None, call);
    assert_eq!(status, 401);
    assert!(body.contains(".cookie"), "{body}");
    assert_eq!(rpc_raw(&url, Some("00ff"), call).0, 401);
    let wrong = "a".repeat(64);
    assert_eq!(rpc_raw(&url, Some(&wrong), call).0, 401);
    let (status, body) = rpc_raw(&url, Some(&cookie(&node.dir)), call);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["result"]["genesis_name"], "vigil-dev");

    // vigilctl with a stale cookie explains itself.
    let stale = tmp.path().join("stale");
    std::fs::write(&stale, &wrong).unwrap();
    let o = vigilctl(&["--data-dir", s(&node.dir), "--cookie", s(&stale), "status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused the cookie"), "{}", stderr(&o));

    // A WebSocket upgrade needs the cookie too.
    let host = url.trim_start_matches("http://");
    let upgrade = |auth: Option<&str>| {
        let mut s = TcpStream::connect(host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let auth = auth
            .map(|c| format!("Authorization: Bearer {c}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(upgrade(None).starts_with("HTTP/1.1 401"));
    assert!(
        upgrade(Some(&cookie(&node.dir))).starts_with("HTTP/1.1 101"),
        "websocket upgrade refused"
    );
}

#[test]
fn malformed_json_rpc_bodies_get_json_rpc_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    let c = cookie(&node.dir);
    let cases = [
        (r#"{"jsonrpc":"2.0","id":1,"method":"node_info""#, -32700),
        ("not json at all", -32700),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":"node_nonexistent"}"#, -32601),
    ];
    for (payload, code) in cases {
        let (status, body) = rpc_raw(&url, Some(&c), payload);
        assert!(status == 200 || status == 400, "{payload}: {status} {body}");
        assert_eq!(json(&body)["error"]["code"], code, "{payload}: {body}");
    }
    // Over the size limit: refused, and the node keeps serving.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"node_info","params":["{}"]}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _) = rpc_raw(&url, Some(&c), &huge);
    assert_eq!(status, 413);
    let (status, body) = rpc_raw(
        &url,
        Some(&c),
        r#"{"jsonrpc":"2.0","id":2,"method":"node_health"}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(json(&body)["result"]["status"], "ok");
}

#[test]
fn health_ready_and_metrics_in_prometheus_text_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    assert_eq!(http_get(&format!("{url}/health")).0, 200);
    assert_eq!(http_get(&format!("{url}/ready")).0, 200);
    let c = cookie(&node.dir);
    for _ in 0..3 {
        rpc_raw(&url, Some(&c), r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#);
    }
    rpc_raw(&url, Some(&c), r#"{"jsonrpc":"2.0","id":1,"method":"node_what"}"#);
    rpc_raw(&url, None, r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#);

    let (status, resp) = http_get(&format!("{url}/metrics"));
    assert_eq!(status, 200);
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{resp}"
    );
    let text = body(&resp);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "vigil_rpc_requests_total",
            &[("method", "node_info"), ("result", "ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            "vigil_rpc_requests_total",
            &[("method", "unknown"), ("result", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(value("vigil_rpc_unauthorized_total", &[]), Some(1.0));
    assert_eq!(
        value("vigil_node_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert!(value("vigil_node_uptime_seconds", &[]).is_some_and(|v| v > 0.0));
    let hist = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "vigil_rpc_request_duration_seconds" && s.labels.get("method") == Some("node_info")
        })
        .expect("latency histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(3.0));
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
}

#[test]
fn a_busy_rpc_port_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_node, url) = dev_node(&tmp);
    let addr = url.trim_start_matches("http://");
    let other = tmp.path().join("other");
    let o = vigil(&["dev", "--data-dir", s(&other), "--rpc-addr", addr])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    // 5: an address in use
    let e = stderr(&o);
    assert!(e.contains(addr) && e.contains("--rpc-addr"), "{e}");
    // The failed start left no cookie or URL behind that points at the other node.
    assert!(!other.join("rpc.url").exists());
}

/// vigilctl's output conventions: an empty list is one line that says so
/// (and what to do), never nothing or a bare header; `--json` is one
/// pretty-printed document that parses, the same for every command.
#[test]
fn vigilctl_says_when_a_list_is_empty_and_json_is_pretty_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (_node, _url) = dev_node(&tmp);
    let dir = tmp.path().join("dev");
    let ctl = |args: &[&str]| {
        let mut all = vec!["--data-dir", s(&dir)];
        all.extend_from_slice(args);
        let o = vigilctl(&all);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    for (args, says) in [
        (&["peers"][..], "no peers connected"),
        (&["net", "bans"][..], "no bans"),
        (&["net", "probes"][..], "no gossip probes received"),
        (&["storage", "list"][..], "no datasets stored"),
        (&["storage", "announced"][..], "no datasets announced"),
        (&["storage", "jobs"][..], "no ingest jobs"),
        (&["challenge", "stats"][..], "no challenges yet"),
        (&["challenge", "attestations"][..], "no attestations"),
        (&["keys"][..], "no API keys"),
    ] {
        let out = ctl(args);
        assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
        assert!(out.starts_with(says), "{args:?}: {out}");
    }
    for args in [
        &["--json", "peers"][..],
        &["--json", "status"][..],
        &["--json", "storage", "list"][..],
        &["--json", "bus", "app-add", "demo"][..],
        &["--json", "bus", "app-remove", "demo"][..],
    ] {
        let out = ctl(args);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
        assert_eq!(
            out.trim_end(),
            serde_json::to_string_pretty(&v).unwrap(),
            "{args:?}"
        );
    }
}

/// `--metrics-addr` serves GET /metrics (Prometheus text, no credential) on
/// an address of its own and nothing else: no RPC, no other path, no other
/// method, no foreign Host; a taken address is exit code 5.
#[test]
fn a_metrics_listener_of_its_own_serves_only_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&[
            "dev",
            "--data-dir",
            s(&data),
            "--rpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            &addr,
        ]),
        &data,
    );
    node.wait_ready();
    let base = format!("http://{addr}");
    let (status, resp) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    let families: Vec<_> = prometheus_parse::Scrape::parse(body(&resp).lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples;
    for name in ["vigil_node_build_info", "vigil_node_uptime_seconds"] {
        assert!(families.iter().any(|s| s.metric == name), "{name}: {resp}");
    }
    // Every subsystem from the first scrape: series with known labels are
    // there at zero before anything happened (a rate() needs them).
    for (name, label, value) in [
        ("vigil_challenge_total", "outcome", "timeout"),
        ("vigil_challenge_answered_total", "answer", "busy"),
        ("vigil_epoch_rejected_total", "reason", "invalid"),
        ("vigil_net_offences_total", "offence", "flood"),
        ("vigil_rpc_requests_total", "method", "storage_put_finish"),
        ("vigil_rpc_refused_total", "reason", "host_origin"),
    ] {
        let zero = families
            .iter()
            .find(|s| s.metric == name && s.labels.get(label) == Some(value));
        assert!(
            zero.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Counter(v) if v == 0.0)),
            "{name}{{{label}={value}}} not at 0 on the first scrape: {resp}"
        );
    }
    let names: std::collections::BTreeSet<&str> = families.iter().map(|s| s.metric.as_str()).collect();
    eprintln!("{} metric families on the first scrape", names.len());
    assert!(
        node.log().contains(&format!("http://{addr}/metrics")),
        "{}",
        node.log()
    );
    for path in ["/health", "/ready", "/"] {
        assert_eq!(http_get(&format!("{base}{path}")).0, 404, "{path}");
    }
    let (status, _) = http(
        "POST",
        &format!("{base}/metrics"),
        &[("Content-Type", "application/json")],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info","params":[]}"#,
    );
    assert_eq!(status, 405);
    // A DNS-rebinding page: the right address under its own name.
    let resp = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(body(&resp).contains("rpc.allowed_hosts"), "{resp}");

    // A second node on the same metrics address: the address is in use.
    let other = tmp.path().join("other");
    let o = vigil(&[
        "dev",
        "--data-dir",
        s(&other),
        "--rpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        &addr,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("--metrics-addr"), "{}", stderr(&o));
}
