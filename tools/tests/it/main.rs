//! Integration tests of vigil-tools: the benchmark drivers run end to end on
//! small inputs (the figures themselves are taken by `vigil-bench`, not here).

use vigil_tools::bench::supervision;

#[test]
fn supervision_bench_runs_and_reports_every_figure() {
    let opts = supervision::Options {
        crashes: 200,
        messages: 2_000,
        rounds: 1,
    };
    let r = supervision::run(&opts, &|_| {});
    assert_eq!(r.restart_latency.n, 200);
    assert!(r.restart_latency.p50_us > 0.0 && r.restart_latency.p50_us <= r.restart_latency.p99_us);
    assert!(r.plain_msgs_per_sec > 0.0 && r.supervised_msgs_per_sec > 0.0 && r.call_msgs_per_sec > 0.0);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["restart_latency"]["p99_us"].is_number() && json["overhead_percent"].is_number());
}
