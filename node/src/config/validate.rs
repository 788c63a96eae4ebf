//! Range and format checks that serde types cannot express.

use multiaddr::{Multiaddr, Protocol};
use tracing_subscriber::EnvFilter;
use vigil_genesis::Problem;

use super::Config;

/// Levels a bare directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter (`log.level`, `RUST_LOG`): what `EnvFilter` parses,
/// and stricter: a directive without `=` must be a level. `EnvFilter` reads
/// a bare word such as `loud` as a target to log at every level, which
/// silences everything else: almost always a typo for a level.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
    let allowed = "a filter such as \"info\" or \"warn,vigil_actors=debug\": comma-separated directives, each a level (trace, debug, info, warn, error, off) or target=level";
    if let Err(e) = EnvFilter::try_new(filter) {
        return Err(format!("{allowed} ({e})"));
    }
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && !d.contains('[') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)) {
            return Err(format!("{allowed}; `{d}` is neither a level nor target=level"));
        }
    }
    Ok(())
}

impl Config {
    /// Every invalid value, with its key path and what is allowed; empty when valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, value: String, allowed: String| {
            out.push(Problem {
                field: field.to_owned(),
                value,
                allowed,
            })
        };
        let rpc = &self.rpc;
        match (&rpc.tls_cert, &rpc.tls_key) {
            (Some(_), None) | (None, Some(_)) => bad(
                "rpc.tls_cert",
                format!("{:?} / rpc.tls_key {:?}", rpc.tls_cert, rpc.tls_key),
                "both rpc.tls_cert and rpc.tls_key (PEM files), or neither".into(),
            ),
            (None, None) if !rpc.addr.ip().is_loopback() => bad(
                "rpc.addr",
                rpc.addr.to_string(),
                "a loopback address (127.0.0.0/8 or [::1]), or set rpc.tls_cert and rpc.tls_key: off loopback the admin RPC speaks only TLS, and remote clients use API keys (vigilctl keys add)".into(),
            ),
            _ => {}
        }
        for n in &rpc.allowed_networks {
            if n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
                bad(
                    "rpc.allowed_networks",
                    n.clone(),
                    "networks as ADDRESS/PREFIX (10.0.0.0/8, fd00::/8) or single addresses".into(),
                );
            }
        }
        const WEEK_MS: i64 = 7 * 86_400_000;
        if !(-WEEK_MS..=WEEK_MS).contains(&self.debug.clock_offset_ms) {
            bad(
                "debug.clock_offset_ms",
                self.debug.clock_offset_ms.to_string(),
                format!("{}..={WEEK_MS}", -WEEK_MS),
            );
        }
        let sup = &self.supervision;
        let ranges: [(&str, u64, u64, u64); 35] = [
            ("supervision.max_restarts", sup.max_restarts.into(), 0, 1000),
            ("supervision.period_secs", sup.period_secs, 1, 3600),
            (
                "supervision.backoff_initial_ms",
                sup.backoff_initial_ms,
                0,
                60_000,
            ),
            (
                "supervision.backoff_max_ms",
                sup.backoff_max_ms,
                sup.backoff_initial_ms,
                3_600_000,
            ),
            ("supervision.stable_after_secs", sup.stable_after_secs, 1, 3600),
            (
                "rpc.max_request_bytes",
                self.rpc.max_request_bytes.into(),
                1024,
                64 << 20,
            ),
            ("rpc.max_connections", self.rpc.max_connections.into(), 1, 10_000),
            (
                "rpc.max_connections_per_ip",
                self.rpc.max_connections_per_ip.into(),
                1,
                10_000,
            ),
            ("rpc.max_batch", self.rpc.max_batch.into(), 1, 10_000),
            (
                "rpc.max_subscriptions",
                self.rpc.max_subscriptions.into(),
                0,
                10_000,
            ),
            (
                "rpc.rate_per_caller",
                self.rpc.rate_per_caller.into(),
                0,
                1_000_000,
            ),
            (
                "rpc.rate_per_address",
                self.rpc.rate_per_address.into(),
                0,
                1_000_000,
            ),
            ("rpc.rate_burst", self.rpc.rate_burst.into(), 1, 1_000_000),
            (
                "storage.cache_capacity_mb",
                self.storage.cache_capacity_mb,
                1,
                65_536,
            ),
            ("storage.flush_every_ms", self.storage.flush_every_ms, 0, 60_000),
            ("storage.max_dataset_mb", self.storage.max_dataset_mb, 1, 1 << 20),
            ("challenge.chunks", self.challenge.chunks.into(), 1, 16),
            (
                "challenge.audit_every_epochs",
                self.challenge.audit_every_epochs,
                0,
                100_000,
            ),
            ("continuity.chunks", self.continuity.chunks.into(), 1, 16),
            ("continuity.keep_epochs", self.continuity.keep_epochs, 1, 100_000),
            (
                "shutdown.actor_timeout_ms",
                self.shutdown.actor_timeout_ms,
                100,
                600_000,
            ),
            ("network.listen (count)", self.network.listen.len() as u64, 0, 64),
            ("network.max_inbound", self.network.max_inbound.into(), 0, 100_000),
            (
                "network.max_outbound",
                self.network.max_outbound.into(),
                1,
                100_000,
            ),
            ("network.max_pending", self.network.max_pending.into(), 1, 100_000),
            ("network.max_per_peer", self.network.max_per_peer.into(), 1, 16),
            (
                "network.max_inbound_per_ip",
                self.network.max_inbound_per_ip.into(),
                1,
                100_000,
            ),
            (
                "network.ip_ban_threshold",
                self.network.ip_ban_threshold.into(),
                0,
                1000,
            ),
            (
                "network.target_peers",
                self.network.target_peers.into(),
                1,
                self.network.max_outbound.into(),
            ),
            (
                "network.idle_timeout_secs",
                self.network.idle_timeout_secs,
                1,
                86_400,
            ),
            (
                "network.ping_interval_secs",
                self.network.ping_interval_secs,
                1,
                3_600,
            ),
            (
                "network.ping_timeout_secs",
                self.network.ping_timeout_secs,
                1,
                3_600,
            ),
            ("network.ban_secs", self.network.ban_secs, 1, 365 * 86_400),
            (
                "network.reconnect_initial_ms",
                self.network.reconnect_initial_ms,
                10,
                600_000,
            ),
            (
                "network.reconnect_max_ms",
                self.network.reconnect_max_ms,
                self.network.reconnect_initial_ms,
                3_600_000,
            ),
        ];
        for (field, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                bad(field, v.to_string(), format!("{lo}..={hi}"));
            }
        }
        for (i, addr) in self.network.listen.iter().enumerate() {
            if let Err(e) = addr.parse::<Multiaddr>() {
                bad(
                    &format!("network.listen[{i}]"),
                    format!("{addr:?}"),
                    format!("a multiaddr such as \"/ip4/0.0.0.0/tcp/30345\" ({e})"),
                );
            }
        }
        for (i, addr) in self.network.bootnodes.iter().enumerate() {
            let ok = addr
                .parse::<Multiaddr>()
                .is_ok_and(|m| matches!(m.iter().last(), Some(Protocol::P2p(_))));
            if !ok {
                bad(
                    &format!("network.bootnodes[{i}]"),
                    format!("{addr:?}"),
                    "a multiaddr ending in /p2p/<peer id>".into(),
                );
            }
        }
        let n = &self.network;
        if !(-100..=-1).contains(&n.score_disconnect) {
            bad(
                "network.score_disconnect",
                n.score_disconnect.to_string(),
                "-100..=-1".into(),
            );
        }
        if !(-100..=n.score_disconnect).contains(&n.score_ban) {
            bad(
                "network.score_ban",
                n.score_ban.to_string(),
                format!("-100..={} (at most network.score_disconnect)", n.score_disconnect),
            );
        }
        let bus = &self.bus;
        if !bus.addr.ip().is_loopback() {
            bad(
                "bus.addr",
                bus.addr.to_string(),
                "a loopback address (127.0.0.0/8 or [::1]): apps authenticate with tokens, not TLS".into(),
            );
        }
        let bus_ranges: [(&str, u64, u64, u64); 7] = [
            ("bus.max_connections", bus.max_connections.into(), 1, 100_000),
            (
                "bus.auth_failure_window_secs",
                bus.auth_failure_window_secs,
                1,
                86_400,
            ),
            ("bus.max_frame_bytes", bus.max_frame_bytes, 1024, 64 << 20),
            (
                "bus.max_payload_bytes",
                bus.max_payload_bytes,
                1,
                bus.max_frame_bytes,
            ),
            ("bus.confirm_interval_ms", bus.confirm_interval_ms, 1, 10_000),
            ("bus.outbound_queue", bus.outbound_queue.into(), 16, 1_000_000),
            ("bus.hello_timeout_ms", bus.hello_timeout_ms, 100, 600_000),
        ];
        for e in vigil_actors::chain::SecurityHub::check_rules(&self.security.rules) {
            let (field, why) = e.split_once(": ").unwrap_or(("security.rules", &e));
            bad(field, String::new(), why.to_owned());
        }
        for (i, src) in self.chain.sources.iter().enumerate() {
            if !["evm", "vigil"].contains(&src.kind.as_str()) {
                bad(
                    &format!("chain.sources[{i}].kind"),
                    format!("{:?}", src.kind),
                    "evm or vigil".into(),
                );
            }
            if !(10..=3_600_000).contains(&src.block_time_ms) {
                bad(
                    &format!("chain.sources[{i}].block_time_ms"),
                    src.block_time_ms.to_string(),
                    "10..=3600000".into(),
                );
            }
        }
        self.layer2_problems(&mut bad);
        let vdf = &self.vdf;
        for (field, v, lo, hi) in [
            ("vdf.samples", vdf.samples, 1, 4096),
            ("vdf.sync_batch", vdf.sync_batch, 1, 512),
            ("vdf.sync_peers", vdf.sync_peers, 1, 16),
        ] {
            if !(lo..=hi).contains(&v) {
                bad(field, v.to_string(), format!("{lo}..={hi}"));
            }
        }
        if vdf.min_epoch_ms > 3_600_000 {
            bad(
                "vdf.min_epoch_ms",
                vdf.min_epoch_ms.to_string(),
                "0..=3600000".into(),
            );
        }
        for (field, v, lo, hi) in bus_ranges {
            if !(lo..=hi).contains(&v) {
                bad(field, v.to_string(), format!("{lo}..={hi}"));
            }
        }
        for (i, p) in bus.ephemeral_topics.iter().enumerate() {
            if let Err(e) = vigil_actors::bus::check_pattern(p) {
                bad(
                    &format!("bus.ephemeral_topics[{i}]"),
                    format!("{p:?}"),
                    e.to_string(),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in bus.topics.iter().enumerate() {
            if let Err(e) = vigil_actors::queue::check_name("topic", &t.name) {
                bad(&format!("bus.topics[{i}].name"), format!("{:?}", t.name), e);
            } else if !names.insert(t.name.clone()) {
                bad(
                    &format!("bus.topics[{i}].name"),
                    format!("{:?}", t.name),
                    "a name not used by another [[bus.topics]]".into(),
                );
            }
            if t.ack_wait_ms == 0 || t.max_in_flight == 0 {
                bad(
                    &format!("bus.topics[{i}]"),
                    format!(
                        "ack_wait_ms = {}, max_in_flight = {}",
                        t.ack_wait_ms, t.max_in_flight
                    ),
                    "both at least 1".into(),
                );
            }
        }
        for (i, a) in bus.apps.iter().enumerate() {
            if let Err(e) = vigil_actors::queue::check_name("app", &a.name) {
                bad(&format!("bus.apps[{i}].name"), format!("{:?}", a.name), e);
            }
            if a.token_blake3.len() != 64 || hex::decode(&a.token_blake3).is_err() {
                bad(
                    &format!("bus.apps[{i}].token_blake3"),
                    format!("{:?}", a.token_blake3),
                    "64 hex characters: the BLAKE3 hash of the app's token".into(),
                );
            }
            for (j, g) in a.grants.iter().enumerate() {
                let ok = g.split_once(':').is_some_and(|(v, p)| {
                    vigil_actors::bus::Verb::parse(v).is_ok() && vigil_actors::bus::check_pattern(p).is_ok()
                });
                if !ok {
                    bad(&format!("bus.apps[{i}].grants[{j}]"), format!("{g:?}"), "verb:pattern with verb publish|send|subscribe|request|serve and pattern *, name or prefix.*".into());
                }
            }
        }
        if let Err(e) = check_log_filter(&self.log.level) {
            bad("log.level", format!("{:?}", self.log.level), e);
        }
        out
    }
}

impl Config {
    /// `[layer2]`: only checked when enabled, so a half-written section stays harmless.
    fn layer2_problems(&self, bad: &mut impl FnMut(&str, String, String)) {
        let l = &self.layer2;
        if let Err(e) = vigil_layer2::amount::parse(&l.max_join_deposit) {
            bad("layer2.max_join_deposit", format!("{:?}", l.max_join_deposit), e);
        }
        if !(100..=600_000).contains(&l.request_timeout_ms) {
            bad(
                "layer2.request_timeout_ms",
                l.request_timeout_ms.to_string(),
                "100..=600000".into(),
            );
        }
        if !l.enabled {
            return;
        }
        let evm: Vec<&str> = self
            .chain
            .sources
            .iter()
            .filter(|s| s.kind == "evm" && s.chain_id.is_some())
            .map(|s| s.name.as_str())
            .collect();
        if !evm.contains(&l.source.as_str()) {
            bad(
                "layer2.source",
                format!("{:?}", l.source),
                match evm.is_empty() {
                    true => "the name of a [[chain.sources]] entry with kind = \"evm\" and a chain_id; there is none: add one".into(),
                    false => format!("one of the evm chain sources with a chain_id: {evm:?}"),
                },
            );
        }
        if l.contract.parse::<vigil_layer2::Address>().is_err() {
            bad(
                "layer2.contract",
                format!("{:?}", l.contract),
                "the PaymentChannel contract's address: 0x and 40 hex digits (docs/layer2.md shows how to deploy one)".into(),
            );
        }
    }
}
