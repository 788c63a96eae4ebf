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

/// The flood test (issue: survive a hostile network): real `vigil run`
/// processes and hostile libp2p peers, TCP clients and bus clients at once.
/// What must hold is checked here; the timing figures (RPC and challenge
/// p99, idle against flooded) are taken by `vigil-bench flood`.
#[test]
fn an_honest_testnet_keeps_working_through_a_flood_and_the_flooders_are_banned() {
    use vigil_tools::bench::flood;
    let r = flood::run(&flood::Options::short(), &|w| eprintln!("{w}...")).unwrap();
    for l in flood::lines(&r) {
        eprintln!("{l}");
    }
    // The honest side kept working: epochs on all three nodes, node-1's
    // challenges of node-0 answered and passed, /ready 200 throughout.
    for (b, a) in r.heads_before.iter().zip(&r.heads_after) {
        assert!(*a >= b + 5, "heads {:?} -> {:?}", r.heads_before, r.heads_after);
    }
    assert!(r.challenges >= 10, "{} challenges", r.challenges);
    assert_eq!(r.challenges_failed, 0, "honest challenges failed under the flood");
    // Debug builds on two cores shared with the attackers (and, in CI, with
    // the other test binaries): a proof may miss the 500 ms deadline now and
    // then. A clean-clone CI run once saw 4 of 17 late, so the bound is a
    // third; the release figures (0 late) are in docs/benchmarks.md. Most
    // must still be on time, and none may fail.
    assert!(
        r.challenges_late * 3 <= r.challenges,
        "{} of {} late",
        r.challenges_late,
        r.challenges
    );
    assert_eq!(r.not_ready, 0, "/ready was not 200");
    // Bounded: memory, descriptors (the node's caps: 64 inbound, 32 pending,
    // 32 outbound, 256 bus and 32 RPC connections), nothing confirmed lost.
    assert!(
        r.rss_max_mib - r.rss_before_mib < 128.0,
        "RSS {} -> {}",
        r.rss_before_mib,
        r.rss_max_mib
    );
    assert!(
        r.fds_max <= r.fds_before + 64 + 32 + 32 + 256 + 32,
        "fds {} -> {}",
        r.fds_before,
        r.fds_max
    );
    assert!(r.queue_confirmed >= 100, "{} confirmed", r.queue_confirmed);
    assert_eq!(r.queue_held, r.queue_confirmed, "a confirmed publish is missing");
    // The flooders were refused, scored down and banned.
    for kind in ["audit", "sync"] {
        assert!(
            r.refused_per_sec.get(kind).copied().unwrap_or(0.0) > 0.0,
            "{kind}: {:?}",
            r.refused_per_sec
        );
    }
    for offence in ["flood", "malformed", "oversized"] {
        assert!(
            r.offences.get(offence).copied().unwrap_or(0.0) > 0.0,
            "{offence}: {:?}",
            r.offences
        );
    }
    assert!(
        r.banned >= 3,
        "{} banned of {} identities",
        r.banned,
        r.hostile_identities
    );
    // And the honest peers were not: no offence, no lost score.
    assert_eq!(r.honest_offences, 0, "node-0 scored an honest peer down");
}
