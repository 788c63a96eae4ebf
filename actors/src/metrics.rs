//! Metric names and descriptions of the node runtime (`vigil_<area>_<what>_<unit>`).

use std::time::Instant;

/// Requests served by the admin RPC, labelled `method` and `result` (`ok` | `error`).
pub const RPC_REQUESTS: &str = "vigil_rpc_requests_total";
/// Admin RPC latency histogram, labelled `method`.
pub const RPC_DURATION: &str = "vigil_rpc_request_duration_seconds";
/// HTTP requests refused for a missing, malformed or wrong credential.
pub const RPC_UNAUTHORIZED: &str = "vigil_rpc_unauthorized_total";
/// Calls refused for the caller's role or a revoked key, labelled `method`.
pub const RPC_DENIED: &str = "vigil_rpc_denied_total";
/// Calls refused past a rate limit, labelled `limit` (`caller` | `address`).
pub const RPC_RATE_LIMITED: &str = "vigil_rpc_rate_limited_total";
/// Connections refused before HTTP, labelled `reason` (`network` |
/// `per_ip` | `tls`), and requests refused for their `Host` or `Origin`
/// (`host_origin`).
pub const RPC_REFUSED_CONNECTIONS: &str = "vigil_rpc_refused_total";
/// Seconds since the node started.
pub const UPTIME: &str = "vigil_node_uptime_seconds";
/// 1 while the node is ready (what `GET /ready` answers 200 for: started,
/// with a peer unless alone by design, epochs synced), 0 otherwise.
pub const READY: &str = "vigil_node_ready";
/// Constant 1, labelled with the build's `version` and the `genesis` hash prefix.
pub const BUILD_INFO: &str = "vigil_node_build_info";

/// Restarts per actor (crash and operator restarts), labelled `actor`.
pub const ACTOR_RESTARTS: &str = "vigil_actor_restarts_total";
/// 1 while the actor runs, 0 otherwise, labelled `actor`.
pub const ACTOR_UP: &str = "vigil_actor_up";
/// Messages sent through the supervised address and not yet answered, labelled `actor`.
pub const ACTOR_MAILBOX: &str = "vigil_actor_mailbox_depth";
/// Unix time of the last restart, labelled `actor`.
pub const ACTOR_LAST_RESTART: &str = "vigil_actor_last_restart_timestamp_seconds";
/// Messages dead-lettered after crashing their handler, labelled `actor`.
pub const ACTOR_DEAD_LETTERS: &str = "vigil_actor_dead_letters_total";

/// Messages stored, labelled `topic`.
pub const QUEUE_PUBLISHED: &str = "vigil_queue_published_total";
/// Deliveries (first and re-), labelled `topic`.
pub const QUEUE_DELIVERED: &str = "vigil_queue_delivered_total";
/// Acks, labelled `topic`.
pub const QUEUE_ACKED: &str = "vigil_queue_acked_total";
/// Naks, labelled `topic`.
pub const QUEUE_NAKD: &str = "vigil_queue_nakd_total";
/// Redeliveries, labelled `topic`.
pub const QUEUE_REDELIVERED: &str = "vigil_queue_redelivered_total";
/// Moves to the dead-letter topic, labelled `topic`.
pub const QUEUE_DEAD_LETTERED: &str = "vigil_queue_dead_lettered_total";
/// Messages stored, labelled `topic`.
pub const QUEUE_DEPTH: &str = "vigil_queue_depth";
/// Pending deliveries of a group, labelled `topic` and `group`.
pub const QUEUE_IN_FLIGHT: &str = "vigil_queue_in_flight";
/// Bytes stored (encoded messages, headers included), labelled `topic`.
pub const QUEUE_PUBLISHED_BYTES: &str = "vigil_queue_published_bytes_total";
/// Publish -> confirm latency.
pub const QUEUE_CONFIRM_DURATION: &str = "vigil_queue_confirm_duration_seconds";
/// Duration of one group-commit fsync.
pub const QUEUE_FLUSH_DURATION: &str = "vigil_queue_flush_duration_seconds";

/// Connected bus sessions.
pub const BUS_SESSIONS: &str = "vigil_bus_sessions";
/// Frames received from apps.
pub const BUS_FRAMES: &str = "vigil_bus_frames_total";
/// Error frames sent, labelled `code`.
pub const BUS_ERRORS: &str = "vigil_bus_errors_total";
/// Live copies dropped because an app's queue was full.
pub const BUS_DROPPED: &str = "vigil_bus_dropped_total";

/// Latency buckets for every `_seconds` histogram: 50 µs to 10 s.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Connected member peers (status exchanged), labelled `direction` (`inbound` | `outbound`).
pub const NET_PEERS: &str = "vigil_net_peers";
/// Outbound dials started.
pub const NET_DIALS: &str = "vigil_net_dials_total";
/// Connections closed because a ping went unanswered (`network.ping_timeout_secs`).
pub const NET_PING_FAILURES: &str = "vigil_net_ping_failures_total";
/// Outbound dials that failed.
pub const NET_DIAL_FAILURES: &str = "vigil_net_dial_failures_total";
/// Inbound connections refused (limits, bans) or failed in the handshake.
pub const NET_INCOMING_REFUSED: &str = "vigil_net_incoming_refused_total";
/// Bytes of vigil protocol frames and gossip, labelled `protocol` and `direction`.
pub const NET_BYTES: &str = "vigil_net_bytes_total";
/// Gossip messages, labelled `topic` and `result` (`published` | `accepted` |
/// `ignored` | `rejected`).
pub const NET_GOSSIP: &str = "vigil_net_gossip_messages_total";
/// Scores of connected peers, sampled every tick.
pub const NET_PEER_SCORE: &str = "vigil_net_peer_score";
/// Inbound requests answered "busy" or refused, labelled `kind` and `reason`
/// (`quota`: past the peer's share; `busy`: every slot taken; `not_member`:
/// from a peer that never exchanged a status of our genesis, closed unanswered).
pub const NET_REQUESTS_REFUSED: &str = "vigil_net_requests_refused_total";
/// Offences scored, labelled `offence`.
pub const NET_OFFENCES: &str = "vigil_net_offences_total";
/// Bans issued (scoring and operator).
pub const NET_BANS: &str = "vigil_net_bans_total";
/// Bans in force.
pub const NET_BANNED: &str = "vigil_net_banned_peers";
/// Peers disconnected for being on another genesis.
pub const NET_FOREIGN: &str = "vigil_net_foreign_peers_total";
/// Highest epoch held.
pub const EPOCH_HEAD: &str = "vigil_epoch_head";
/// Epochs appended to the chain, labelled `origin` (`local` | `gossip` | `sync`).
pub const EPOCH_ACCEPTED: &str = "vigil_epoch_accepted_total";
/// Epochs refused, labelled `reason` (`malformed` | `invalid` | `conflict`).
pub const EPOCH_REJECTED: &str = "vigil_epoch_rejected_total";
/// Highest epoch verified in full, with every one before it (what anything final uses).
pub const EPOCH_FINAL_HEAD: &str = "vigil_epoch_final_head";
/// Epochs rolled back after failing the full check of a sampled epoch.
pub const EPOCH_ROLLED_BACK: &str = "vigil_epoch_rolled_back_total";
/// Epochs the best peer holds beyond our head (0 when synced).
pub const EPOCH_SYNC_REMAINING: &str = "vigil_epoch_sync_remaining";
/// Verification time of one epoch, seconds.
pub const EPOCH_VERIFY_DURATION: &str = "vigil_epoch_verify_duration_seconds";
/// VDF steps computed by this node's worker.
pub const VDF_ITERATIONS: &str = "vigil_vdf_iterations_total";
/// The worker's rate over its last checkpoint, steps per second.
pub const VDF_RATE: &str = "vigil_vdf_rate_iterations_per_second";

/// Challenges issued, labelled `outcome`.
pub const CHALLENGES: &str = "vigil_challenge_total";
/// Round trip of `ok` challenges, seconds.
pub const CHALLENGE_RTT: &str = "vigil_challenge_round_trip_seconds";
/// Challenges answered, labelled `answer` (`proofs` | `missing` | `refused` | `audit`).
pub const CHALLENGES_ANSWERED: &str = "vigil_challenge_answered_total";
/// Attestations from other nodes recorded.
pub const ATTESTATIONS: &str = "vigil_challenge_attestations_total";
/// Audits issued, labelled `result` (`ok` | `failed`).
pub const AUDITS: &str = "vigil_challenge_audits_total";

/// Wall time of one continuity epoch (all chains), seconds.
pub const CONTINUITY_EPOCH_DURATION: &str = "vigil_continuity_epoch_duration_seconds";
/// Chains processed in the last continuity epoch.
pub const CONTINUITY_CHAINS: &str = "vigil_continuity_chains";

/// Security detections, labelled `kind`.
pub const SECURITY_DETECTIONS: &str = "vigil_security_detections_total";
/// Chain source head height, labelled `source`.
pub const CHAIN_HEAD: &str = "vigil_chain_head";
/// 1 while a chain source is healthy, labelled `source`.
pub const CHAIN_HEALTHY: &str = "vigil_chain_healthy";
/// Blocks between a chain source's head and its finalized block, labelled `source`.
pub const CHAIN_FINALITY_LAG: &str = "vigil_chain_finality_lag_blocks";
/// Seconds since a chain source last showed a new head, labelled `source`.
pub const CHAIN_HEAD_AGE: &str = "vigil_chain_head_age_seconds";
/// Reorgs seen, labelled `source`.
pub const CHAIN_REORGS: &str = "vigil_chain_reorgs_total";
/// Depth of each reorg seen, in blocks.
pub const CHAIN_REORG_DEPTH: &str = "vigil_chain_reorg_depth_blocks";
/// Kinds of [`SECURITY_DETECTIONS`] a chain monitor raises.
pub const DETECTION_KINDS: [&str; 7] = [
    "reorg",
    "height_regression",
    "stall",
    "interval_anomaly",
    "outage",
    "source_error",
    "recovery",
];

/// Bytes the node's database (sled) takes on disk.
pub const STORAGE_DB_SIZE: &str = "vigil_storage_db_size_bytes";

/// Buckets of [`CHAIN_REORG_DEPTH`].
pub const REORG_DEPTH_BUCKETS: [f64; 7] = [1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 64.0];

/// Buckets of [`NET_PEER_SCORE`].
pub const SCORE_BUCKETS: [f64; 9] = [-50.0, -20.0, -10.0, -1.0, 0.0, 1.0, 10.0, 20.0, 50.0];

/// The node's Prometheus recorder, not installed: every `_seconds`
/// histogram with [`SECONDS_BUCKETS`], peer scores and reorg depths with
/// their own.
pub fn recorder(
) -> Result<metrics_exporter_prometheus::PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(NET_PEER_SCORE.into()), &SCORE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(CHAIN_REORG_DEPTH.into()), &REORG_DEPTH_BUCKETS)
}

/// Registers descriptions and the build-info gauge. Call once after installing the recorder.
pub fn describe(version: &'static str, genesis_short: String) {
    metrics::describe_counter!(RPC_REQUESTS, "Admin RPC calls by method and result.");
    metrics::describe_histogram!(
        RPC_DURATION,
        metrics::Unit::Seconds,
        "Admin RPC call latency by method."
    );
    metrics::describe_counter!(
        RPC_UNAUTHORIZED,
        "HTTP requests refused for a missing, malformed or wrong credential."
    );
    metrics::describe_counter!(
        RPC_RATE_LIMITED,
        "Admin RPC calls refused past a rate limit, by limit (caller or address)."
    );
    metrics::describe_counter!(
        RPC_REFUSED_CONNECTIONS,
        "Admin RPC connections or requests refused before auth: network, per_ip, tls, host_origin."
    );
    metrics::describe_counter!(
        RPC_DENIED,
        "Admin RPC calls refused for the caller's role or a revoked API key."
    );
    metrics::describe_gauge!(UPTIME, metrics::Unit::Seconds, "Seconds since the node started.");
    metrics::describe_gauge!(
        READY,
        "1 while the node is ready (GET /ready answers 200): started, with a peer, epochs synced."
    );
    metrics::describe_gauge!(BUILD_INFO, "Build version and genesis of this node; always 1.");
    metrics::describe_counter!(ACTOR_RESTARTS, "Actor restarts (crash and operator).");
    metrics::describe_gauge!(ACTOR_UP, "1 while the actor runs.");
    metrics::describe_gauge!(
        ACTOR_MAILBOX,
        "Messages sent through the supervised address, not yet answered."
    );
    metrics::describe_gauge!(
        ACTOR_LAST_RESTART,
        metrics::Unit::Seconds,
        "Unix time of the last restart."
    );
    metrics::describe_counter!(
        ACTOR_DEAD_LETTERS,
        "Messages dead-lettered after crashing their handler."
    );
    metrics::describe_gauge!(
        NET_PEERS,
        "Connected vigil peers of this genesis (status exchanged) by direction."
    );
    metrics::describe_counter!(NET_DIALS, "Outbound dials started.");
    metrics::describe_counter!(
        NET_PING_FAILURES,
        "Connections closed because a ping went unanswered for network.ping_timeout_secs."
    );
    metrics::describe_counter!(NET_DIAL_FAILURES, "Outbound dials that failed.");
    metrics::describe_counter!(NET_INCOMING_REFUSED, "Inbound connections refused or failed.");
    metrics::describe_counter!(
        NET_BYTES,
        "Bytes of vigil protocol frames and gossip by protocol and direction."
    );
    metrics::describe_counter!(NET_GOSSIP, "Gossip messages by topic and result.");
    metrics::describe_histogram!(NET_PEER_SCORE, "Scores of connected peers, sampled.");
    metrics::describe_gauge!(EPOCH_HEAD, "Highest epoch held.");
    metrics::describe_counter!(CHALLENGES, "Challenges issued, by outcome.");
    metrics::describe_histogram!(CHALLENGE_RTT, "Round trip of ok challenges.");
    metrics::describe_counter!(CHALLENGES_ANSWERED, "Challenges answered, by answer.");
    metrics::describe_counter!(ATTESTATIONS, "Attestations from other nodes recorded.");
    metrics::describe_counter!(AUDITS, "Audits issued, by result.");
    metrics::describe_histogram!(CONTINUITY_EPOCH_DURATION, "Wall time of one continuity epoch.");
    metrics::describe_gauge!(
        CONTINUITY_CHAINS,
        "Chains processed in the last continuity epoch."
    );
    metrics::describe_counter!(
        EPOCH_ACCEPTED,
        "Epochs appended, by origin (local, gossip, sync)."
    );
    metrics::describe_counter!(EPOCH_REJECTED, "Epochs refused, by reason.");
    metrics::describe_gauge!(
        EPOCH_FINAL_HEAD,
        "Highest epoch verified in full with every one before it."
    );
    metrics::describe_counter!(
        EPOCH_ROLLED_BACK,
        "Epochs rolled back after a sampled epoch failed its full check."
    );
    metrics::describe_gauge!(
        EPOCH_SYNC_REMAINING,
        "Epochs the best peer holds beyond our head."
    );
    metrics::describe_histogram!(EPOCH_VERIFY_DURATION, "Verification time of one epoch.");
    metrics::describe_counter!(VDF_ITERATIONS, "VDF steps computed by this node.");
    metrics::describe_gauge!(VDF_RATE, "VDF worker rate over its last checkpoint.");
    metrics::describe_counter!(NET_OFFENCES, "Peer offences scored, by offence.");
    metrics::describe_counter!(
        NET_REQUESTS_REFUSED,
        "Inbound requests answered busy, by kind and reason (quota: past the peer's share; busy: every slot taken)."
    );
    metrics::describe_counter!(NET_BANS, "Peer bans issued.");
    metrics::describe_gauge!(NET_BANNED, "Peer bans in force.");
    metrics::describe_counter!(NET_FOREIGN, "Peers disconnected for being on another genesis.");
    metrics::describe_counter!(QUEUE_PUBLISHED, "Messages stored in durable topics.");
    metrics::describe_counter!(QUEUE_DELIVERED, "Deliveries, first and repeated.");
    metrics::describe_counter!(QUEUE_ACKED, "Acknowledged deliveries.");
    metrics::describe_counter!(QUEUE_NAKD, "Negative acknowledgements.");
    metrics::describe_counter!(QUEUE_REDELIVERED, "Repeated deliveries.");
    metrics::describe_counter!(QUEUE_DEAD_LETTERED, "Messages moved to the dead-letter topic.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Messages stored per topic.");
    metrics::describe_gauge!(QUEUE_IN_FLIGHT, "Pending deliveries per topic and group.");
    metrics::describe_histogram!(
        QUEUE_CONFIRM_DURATION,
        metrics::Unit::Seconds,
        "Publish to confirm latency."
    );
    metrics::describe_histogram!(
        QUEUE_FLUSH_DURATION,
        metrics::Unit::Seconds,
        "Group-commit fsync duration."
    );
    metrics::describe_counter!(
        QUEUE_PUBLISHED_BYTES,
        metrics::Unit::Bytes,
        "Bytes stored per topic (encoded messages)."
    );
    metrics::describe_gauge!(CHAIN_HEAD, "Head height of each chain source (blocks).");
    metrics::describe_gauge!(CHAIN_HEALTHY, "1 while a chain source answers and checks out.");
    metrics::describe_gauge!(
        CHAIN_FINALITY_LAG,
        "Blocks between a chain source's head and its finalized block."
    );
    metrics::describe_gauge!(
        CHAIN_HEAD_AGE,
        metrics::Unit::Seconds,
        "Seconds since a chain source last showed a new head."
    );
    metrics::describe_counter!(CHAIN_REORGS, "Reorgs seen per chain source.");
    metrics::describe_histogram!(CHAIN_REORG_DEPTH, "Depth of each reorg seen, in blocks.");
    metrics::describe_counter!(SECURITY_DETECTIONS, "Chain security detections raised, by kind.");
    metrics::describe_gauge!(
        STORAGE_DB_SIZE,
        metrics::Unit::Bytes,
        "Bytes the node's database takes on disk."
    );
    PROCESS.describe();
    metrics::describe_gauge!(BUS_SESSIONS, "Connected bus sessions.");
    metrics::describe_counter!(BUS_FRAMES, "Frames received from apps.");
    metrics::describe_counter!(BUS_ERRORS, "Error frames sent to apps, by code.");
    metrics::describe_counter!(BUS_DROPPED, "Live copies dropped for slow apps.");
    metrics::gauge!(BUILD_INFO, "version" => version, "genesis" => genesis_short).set(1.0);
    zero_series();
}

/// Registers at zero every series whose labels are known in advance, so the
/// first scrape has every subsystem: a dashboard or an alert on
/// `rate(vigil_challenge_total{outcome="timeout"}[5m])` works before the
/// first timeout (Prometheus cannot take a rate of a series that appears
/// later at 1). Series labelled by a runtime name (topic, actor, peer
/// protocol) appear with that name.
fn zero_series() {
    for name in [
        RPC_UNAUTHORIZED,
        NET_DIALS,
        NET_PING_FAILURES,
        NET_DIAL_FAILURES,
        NET_INCOMING_REFUSED,
        NET_BANS,
        NET_FOREIGN,
        EPOCH_ROLLED_BACK,
        VDF_ITERATIONS,
        ATTESTATIONS,
        BUS_FRAMES,
        BUS_DROPPED,
    ] {
        metrics::counter!(name).increment(0);
    }
    for (method, _) in crate::rpc::roles::METHOD_ROLES {
        for result in ["ok", "error"] {
            metrics::counter!(RPC_REQUESTS, "method" => method, "result" => result).increment(0);
        }
    }
    for (method, _) in crate::rpc::roles::METHOD_ROLES {
        metrics::counter!(RPC_DENIED, "method" => method).increment(0);
    }
    for reason in ["network", "per_ip", "tls", "host_origin"] {
        metrics::counter!(RPC_REFUSED_CONNECTIONS, "reason" => reason).increment(0);
    }
    for limit in ["caller", "address"] {
        metrics::counter!(RPC_RATE_LIMITED, "limit" => limit).increment(0);
    }
    for outcome in [
        "ok",
        "wrong",
        "late",
        "missing",
        "malformed",
        "refused",
        "timeout",
        "busy",
    ] {
        metrics::counter!(CHALLENGES, "outcome" => outcome).increment(0);
    }
    for answer in ["proofs", "audit", "missing", "refused", "busy"] {
        metrics::counter!(CHALLENGES_ANSWERED, "answer" => answer).increment(0);
    }
    for result in ["ok", "failed", "busy"] {
        metrics::counter!(AUDITS, "result" => result).increment(0);
    }
    for origin in ["local", "gossip", "sync"] {
        metrics::counter!(EPOCH_ACCEPTED, "origin" => origin).increment(0);
    }
    for reason in [
        "malformed",
        "invalid",
        "conflict",
        "failed_full_check",
        "anchor_unknown",
        "known_forgery",
        "over_budget",
    ] {
        metrics::counter!(EPOCH_REJECTED, "reason" => reason).increment(0);
    }
    for offence in [
        "malformed",
        "oversized",
        "invalid_gossip",
        "failed_proof",
        "late_proof",
        "unbacked_claim",
        "flood",
    ] {
        metrics::counter!(NET_OFFENCES, "offence" => offence).increment(0);
    }
    for direction in ["inbound", "outbound"] {
        metrics::gauge!(NET_PEERS, "direction" => direction).set(0.0);
    }
    // A histogram handle renders its buckets at zero until the first sample.
    for name in [
        CHALLENGE_RTT,
        EPOCH_VERIFY_DURATION,
        CONTINUITY_EPOCH_DURATION,
        QUEUE_CONFIRM_DURATION,
        QUEUE_FLUSH_DURATION,
        CHAIN_REORG_DEPTH,
    ] {
        let _ = metrics::histogram!(name);
    }
    for kind in DETECTION_KINDS {
        metrics::counter!(SECURITY_DETECTIONS, "kind" => kind).increment(0);
    }
    for kind in crate::net::limits::Work::ALL {
        for reason in ["quota", "busy", "not_member"] {
            metrics::counter!(NET_REQUESTS_REFUSED, "kind" => kind.as_str(), "reason" => reason).increment(0);
        }
    }
    for direction in ["in", "out"] {
        metrics::counter!(NET_BYTES, "protocol" => "gossip", "direction" => direction).increment(0);
    }
    for code in ["forbidden_origin", "too_many_connections"] {
        metrics::counter!(BUS_ERRORS, "code" => code).increment(0);
    }
    metrics::gauge!(BUS_SESSIONS).set(0.0);
    metrics::gauge!(CONTINUITY_CHAINS).set(0.0);
    // No rate until the worker's first checkpoint (and none on a node that
    // does not compute epochs).
    metrics::gauge!(VDF_RATE).set(0.0);
    metrics::gauge!(NET_BANNED).set(0.0);
    metrics::gauge!(EPOCH_SYNC_REMAINING).set(0.0);
}

/// The process collector: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads`, `process_start_time_seconds` and the virtual memory
/// gauges, the names every Prometheus client library uses.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

/// Refreshes gauges computed on scrape.
pub fn on_scrape(started: Instant, ready: bool) {
    metrics::gauge!(UPTIME).set(started.elapsed().as_secs_f64());
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    PROCESS.collect();
}
