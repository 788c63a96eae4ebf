//! What a Prometheus user builds on: a working node's scrape passes
//! `promtool check metrics`, every metric the shipped Grafana dashboard and
//! alert rules query is on it, and the alert rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use vigil_tools::bus::BusClient;

use crate::bus::{app, bus_url, rt};
use crate::chain::{eth, Anvil};
use crate::util::*;

/// promtool from Debian's prometheus package, which scripts/test installs.
fn promtool() -> PathBuf {
    let p = std::env::var("VIGIL_PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into());
    assert!(
        Path::new(&p).is_file(),
        "promtool is not installed: run scripts/test (it installs Debian's prometheus package) or set VIGIL_PROMTOOL"
    );
    p.into()
}

fn docs(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(rel)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap();
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = docs("prometheus");
    let (ok, out) = run(Command::new(promtool())
        .current_dir(&dir)
        .args(["check", "rules", "alerts.yml"]));
    assert!(ok && out.contains("SUCCESS: 9 rules found"), "{out}");
    let (ok, out) =
        run(Command::new(promtool())
            .current_dir(&dir)
            .args(["test", "rules", "alerts.test.yml"]));
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// Metric names a PromQL expression reads (vigil's and the process collector's).
fn queried(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = ["vigil_", "process_"].iter().filter_map(|p| rest.find(p)).min() {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("panel without targets: {p}"));
            assert!(!targets.is_empty(), "panel without targets: {p}");
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_owned())
        })
        .collect();
    assert!(exprs.len() > 40, "{} queries", exprs.len());
    exprs
}

#[test]
fn a_working_nodes_scrape_passes_promtool_and_has_every_metric_the_dashboard_and_alerts_query() {
    let (_anvil, port, eth_url) = Anvil::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let (mut node, url, data) = dev_with_config(
        tmp.path(),
        &format!(
            "[metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n\n[[chain.sources]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{eth_url}\"\nws_url = \"ws://127.0.0.1:{port}\"\nchain_id = 31337\nblock_time_ms = 1000\n"
        ),
    );
    eth(&eth_url, "anvil_mine", json!(["0x3"]));

    // Work for the queue and bus series: publish, deliver, nak, redeliver, ack.
    let token = app(&node, "ops", &["publish:jobs", "subscribe:jobs"]);
    let bus = bus_url(&node);
    rt().block_on(async {
        let mut ops = BusClient::connect(&bus, "ops", &token).await.unwrap();
        for i in 0..3u8 {
            ops.publish("jobs", &[i]).await.unwrap();
        }
        let sub = ops.subscribe("jobs", Some("ops.workers")).await.unwrap();
        let first = ops.next_msg(Duration::from_secs(10)).await.expect("a delivery");
        let seq = first["seq"].as_u64().unwrap();
        ops.nak(sub, seq, 0).await.unwrap();
        for _ in 0..3 {
            let m = ops.next_msg(Duration::from_secs(10)).await.expect("a delivery");
            ops.ack(sub, m["seq"].as_u64().unwrap()).await.unwrap();
        }
    });
    let head = || rpc_result(&url, &data, "chain_status", json!([]))[0]["head"].as_u64();
    let t0 = std::time::Instant::now();
    while head().is_none_or(|h| h < 3) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the chain source never saw head 3"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, resp) = http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"));
    assert_eq!(status, 200, "{resp}");
    let text = body(&resp);
    let scrape = tmp.path().join("scrape.txt");
    std::fs::write(&scrape, &text).unwrap();
    let (ok, out) = run(Command::new("sh").arg("-c").arg(format!(
        "{} check metrics < {}",
        promtool().display(),
        scrape.display()
    )));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}\n{text}"
    );

    let present: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| &l[..l.find(['{', ' ']).unwrap_or(l.len())])
        .collect();
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "vigil_storage_db_size_bytes",
    ] {
        assert!(present.contains(family), "{family} missing:\n{text}");
    }
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(docs("grafana/vigil.json")).unwrap())
        .expect("vigil.json parses");
    let mut wanted = BTreeSet::new();
    for e in dashboard_exprs(&dash) {
        queried(&e, &mut wanted);
    }
    let rules = std::fs::read_to_string(docs("prometheus/alerts.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:") || l.starts_with("          "))
    {
        if !line.contains("description:") && !line.contains("summary:") {
            queried(line, &mut wanted);
        }
    }
    let missing: Vec<_> = wanted.iter().filter(|m| !present.contains(m.as_str())).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts query metrics a working node does not have: {missing:?}\n{text}"
    );
    node.signal("TERM");
    node.wait_exit(30);
}
