//! Documentation of every config key, used for the commented `config.toml`
//! that `vigil init` writes and checked against [`Config`] by a test.

use std::fmt::Write;

use super::Config;

/// `(key path, what it does and allows)` for every key, in file order.
pub const KEYS: &[(&str, &str)] = &[
    ("rpc.addr", "HOST:PORT of the admin RPC (HTTP and WebSocket), e.g. \"127.0.0.1:8645\"; loopback, or any address with rpc.tls_cert and rpc.tls_key; port 0 picks a free port, written to DATA_DIR/rpc.url"),
    ("rpc.max_request_bytes", "largest request body in bytes (1024..=67108864)"),
    ("rpc.max_connections", "concurrent RPC connections (1..=10000)"),
    ("rpc.max_connections_per_ip", "concurrent RPC connections from one client address (1..=10000)"),
    ("rpc.max_batch", "calls in one JSON-RPC batch (1..=10000)"),
    ("rpc.max_subscriptions", "subscriptions per WebSocket connection (0..=10000)"),
    ("rpc.rate_per_caller", "calls per second of one credential, the cookie or an API key (0 = no limit)"),
    ("rpc.rate_per_address", "calls per second from one client address (0 = no limit)"),
    ("rpc.rate_burst", "calls above the rate allowed at once (1..=1000000); past it: HTTP 429, or error -32017 on a WebSocket"),
    ("rpc.allowed_hosts", "Host names the RPC answers to besides localhost, loopback addresses and its bound address, e.g. [\"node1.example.net\"] (\"*\" = any; others get 403: DNS rebinding)"),
    ("rpc.cors_origins", "browser origins allowed to call, with CORS, e.g. [\"https://ops.example\"]; empty = browsers refused"),
    ("rpc.allowed_networks", "client networks let in, e.g. [\"10.0.0.0/8\"]; empty = any"),
    ("rpc.tls_cert", "PEM certificate chain: the RPC then speaks only TLS (needed off loopback; reread on SIGHUP)"),
    ("rpc.tls_key", "PEM private key of rpc.tls_cert"),
    ("network.enabled", "run the p2p network (libp2p over TCP and QUIC)"),
    ("network.listen", "p2p listen multiaddrs, e.g. \"/ip4/0.0.0.0/tcp/30345\""),
    ("network.bootnodes", "extra bootnodes besides the genesis ones: multiaddrs ending in /p2p/<peer id>"),
    ("network.max_inbound", "established inbound connections allowed (0..=100000)"),
    ("network.max_outbound", "established outbound connections allowed (1..=100000)"),
    ("network.max_pending", "inbound connections still in their handshake allowed (1..=100000)"),
    ("network.max_per_peer", "connections per peer allowed (1..=16)"),
    ("network.max_inbound_per_ip", "inbound connections from one IP address at once; one more is refused before its handshake (1..=100000)"),
    ("network.ip_ban_threshold", "banned peer ids from one IP address that get the address banned too, until their bans end (0 = never; 0..=1000)"),
    ("network.target_peers", "peers the node dials towards from bootnodes, the peer book and the DHT (1..=max_outbound)"),
    ("network.ping_interval_secs", "ping every connection this often, seconds (1..=3600)"),
    ("network.ping_timeout_secs", "close a connection whose ping goes unanswered this long, seconds (1..=3600): a peer whose host died or that a partition cut off stops counting as a peer; the node dials it again with its reconnect backoff"),
    ("network.idle_timeout_secs", "close a connection with no open stream after this many seconds, and one to a peer that has not joined (no status of this genesis: a standard libp2p client) this long after it connected (1..=86400)"),
    ("network.score_disconnect", "disconnect a peer whose score (-100..100) falls below this (-100..=-1)"),
    ("network.score_ban", "ban a peer whose score falls below this (-100..=score_disconnect)"),
    ("network.ban_secs", "how long a ban lasts, seconds (1..=31536000; bans survive restarts)"),
    ("network.reconnect_initial_ms", "first delay before redialing a peer, ms; doubles per failure (10..=600000)"),
    ("network.reconnect_max_ms", "largest redial delay, ms (reconnect_initial_ms..=3600000)"),
    ("log.level", "log filter in RUST_LOG syntax, e.g. \"info,vigil_actors=debug\"; RUST_LOG wins when set"),
    ("log.format", "\"pretty\" for people, \"json\" for log shippers"),
    ("metrics.addr", "HOST:PORT serving GET /metrics (only, no credential) for a Prometheus server; may be non-loopback; the Host check of rpc.allowed_hosts applies; unset = /metrics on the admin RPC address only"),
    ("storage.cache_capacity_mb", "sled page cache in MiB (1..=65536)"),
    ("storage.flush_every_ms", "background flush period in ms (0..=60000; 0 = only on request and at shutdown)"),
    ("storage.max_dataset_mb", "largest dataset storage_put accepts, MiB (1..=1048576)"),
    ("shutdown.actor_timeout_ms", "time each actor gets to stop at shutdown, ms (100..=600000)"),
    ("supervision.max_restarts", "restarts the root allows within period_secs before the node exits non-zero (0..=1000)"),
    ("supervision.period_secs", "restart intensity window, seconds (1..=3600)"),
    ("supervision.backoff_initial_ms", "delay before the second consecutive restart of an actor, ms; doubles after each (0..=60000; 0 = no backoff)"),
    ("supervision.backoff_max_ms", "largest restart delay, ms (backoff_initial_ms..=3600000)"),
    ("supervision.stable_after_secs", "uptime after which a crash restarts at once again, seconds (1..=3600)"),
    ("bus.enabled", "run the inter-application bus and durable queues"),
    ("bus.addr", "HOST:PORT of the bus WebSocket, e.g. \"127.0.0.1:8646\"; loopback only; port 0 picks one, written to DATA_DIR/bus.url"),
    ("bus.unix_socket", "also listen on DATA_DIR/bus.sock (mode 0600), newline-delimited JSON frames"),
    ("bus.max_frame_bytes", "largest frame from an app, bytes (1024..=67108864)"),
    ("bus.max_payload_bytes", "largest message payload, bytes (1..=max_frame_bytes)"),
    ("bus.confirm", "when a durable publish is confirmed: \"always\" (after an fsync, shared by concurrent publishes), \"interval\", \"none\""),
    ("bus.confirm_interval_ms", "fsync period for confirm = \"interval\", ms (1..=10000)"),
    ("bus.ephemeral_topics", "topics (name or prefix.*) that are at-most-once and never touch disk"),
    ("bus.outbound_queue", "frames queued to one app before live copies to it are dropped (16..=1000000)"),
    ("bus.hello_timeout_ms", "time an app has to send hello, ms (100..=600000)"),
    ("bus.max_connections", "connections (WebSocket and Unix) open at once; one more is closed with code 1013 and the reason (1..=100000)"),
    ("bus.allowed_origins", "browser origins allowed to open the WebSocket, e.g. [\"http://localhost:3000\"]; \"*\" allows any; a request with another Origin header is refused (403); programs send none"),
    ("bus.auth_failure_window_secs", "failed hellos from one source are audited once per window with their count, seconds (1..=86400)"),
    ("bus.topic_defaults", "settings of durable topics created on first publish: kind (queue|stream), max_deliver, ack_wait_ms, max_in_flight, max_msgs, max_bytes, max_age_secs, dedupe_window_secs"),
    ("bus.topics", "[[bus.topics]] durable topics with their own settings (name plus the keys of topic_defaults)"),
    ("bus.apps", "[[bus.apps]] apps defined in config: name, token_blake3 (hex), grants = [\"verb:pattern\"]"),
    ("vdf.compute", "run a VDF worker that computes the next epoch (false: a follower that verifies and adopts its peers' epochs)"),
    ("vdf.verify", "\"full\" recomputes every segment of a received epoch in parallel (certain; costs T / cores), \"sampled\" recomputes vdf.samples segments chosen by this node's randomness"),
    ("vdf.samples", "segments recomputed per epoch in sampled mode (1..=4096)"),
    ("vdf.sync_batch", "epochs asked of one peer per sync request (1..=512)"),
    ("vdf.sync_peers", "peers asked in parallel while syncing (1..=16)"),
    ("vdf.min_epoch_ms", "least time from the start of one computed epoch to the start of the next, ms (0..=3600000; 0: back to back); a worker done sooner waits: for testnets whose nodes share one machine's cores"),
    ("challenge.enabled", "challenge the datasets peers announced every epoch (answering challenges is always on)"),
    ("challenge.chunks", "1 KiB leaves asked per challenge (1..=16)"),
    ("challenge.audit_every_epochs", "audit each peer dataset (re-encode one leaf to check the replica encodes the plaintext) once in this many epochs, when more often than the genesis' security.audit_period_epochs (0..=100000; 0 = the genesis period)"),
    ("continuity.enabled", "extend every stored dataset's continuity chain each epoch and sign the aggregated root"),
    ("continuity.chunks", "chunks selected per dataset per epoch (1..=16)"),
    ("continuity.keep_epochs", "epochs of links kept on disk (1..=100000)"),
    ("chain.sources", "[[chain.sources]] chains to follow: name, kind (evm|vigil), url, ws_url (evm newHeads), chain_id (evm), cookie_file (vigil), block_time_ms (default 12000), stall_factor (default 3), confirmations"),
    ("security.rules", "[[security.rules]] when = \"reorg_depth >= 3\" (or kind == outage; metrics reorg_depth, stall_secs, regression_depth, interval_z), action = \"alert\" | \"pause:challenges\" | \"resume:challenges\", optional source"),
    ("layer2.enabled", "run the EVM payment-channel adapter (needs layer2.source and layer2.contract)"),
    ("layer2.source", "name of the [[chain.sources]] entry (kind evm, with chain_id) channels settle on; the watcher follows its heads"),
    ("layer2.contract", "address (0x + 40 hex) of the deployed PaymentChannel contract on that chain (docs/layer2.md shows how to deploy one)"),
    ("layer2.max_join_deposit", "the most this node deposits when a peer opens a channel with it: wei, or a decimal with unit gwei|eth (\"0.5eth\")"),
    ("layer2.request_timeout_ms", "how long a payment waits for the counterparty's signature, ms (100..=600000)"),
    ("debug.clock_offset_ms", "shift this node's wall clock from the host's by this many ms (-604800000..=604800000; skew tests): bus ts_us, audit log, ban and key expiry, dataset announcements (peers refuse one signed over 5 min ahead of their clock or 30 min old); epochs are VDF time and do not read it"),
    ("debug.fault_injection", "allow actors_inject_panic over the admin RPC (chaos testing; never in production)"),
];

/// Keys with no default (absent unless set), with an example value for the
/// template.
pub(super) const UNSET_BY_DEFAULT: &[(&str, &str)] = &[
    ("rpc.tls_cert", "\"/etc/vigil/rpc.crt\""),
    ("rpc.tls_key", "\"/etc/vigil/rpc.key\""),
    ("metrics.addr", "\"0.0.0.0:9645\""),
];

/// `config.toml` as `vigil init` writes it: every key commented out at its default.
pub fn commented_template() -> String {
    let defaults = toml::Value::try_from(Config::default()).expect("the default config serializes");
    let mut out = String::from(
        "# vigil node configuration. Every key is shown commented out at its default.\n\
         # Precedence: defaults < this file < VIGIL_* environment (VIGIL_RPC__ADDR=...) < flags.\n\
         # `vigil run --data-dir DIR --dump-config` prints the effective configuration.\n",
    );
    let Some(sections) = defaults.as_table() else {
        return out;
    };
    for (section, table) in sections {
        let _ = write!(out, "\n[{section}]\n");
        let Some(table) = table.as_table() else { continue };
        for (key, value) in table {
            let path = format!("{section}.{key}");
            if let Some((_, doc)) = KEYS.iter().find(|(p, _)| *p == path) {
                let _ = writeln!(out, "# {doc}");
            }
            let _ = writeln!(out, "# {key} = {value}");
        }
        for (path, example) in UNSET_BY_DEFAULT {
            if let Some(key) = path.strip_prefix(&format!("{section}.")) {
                if let Some((_, doc)) = KEYS.iter().find(|(p, _)| p == path) {
                    let _ = writeln!(out, "# {doc}; unset by default, e.g.:");
                }
                let _ = writeln!(out, "## {key} = {example}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_documented_and_no_doc_is_stale() {
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut paths = Vec::new();
        for (section, table) in defaults.as_table().unwrap() {
            for key in table.as_table().unwrap().keys() {
                paths.push(format!("{section}.{key}"));
            }
        }
        paths.extend(UNSET_BY_DEFAULT.iter().map(|(p, _)| p.to_string()));
        let mut documented: Vec<String> = KEYS.iter().map(|(p, _)| p.to_string()).collect();
        paths.sort();
        documented.sort();
        assert_eq!(paths, documented);
    }

    #[test]
    fn template_uncommented_equals_defaults() {
        let template = commented_template();
        let uncommented: String = template
            .lines()
            .filter_map(|l| {
                if l.starts_with('[') {
                    Some(format!("{l}\n"))
                } else {
                    l.strip_prefix("# ")
                        .filter(|rest| rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
                        .map(|rest| format!("{rest}\n"))
                }
            })
            .collect();
        let parsed: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(parsed, Config::default());
        // And as written (all commented) it is valid and means the defaults.
        assert_eq!(toml::from_str::<Config>(&template).unwrap(), Config::default());
    }
}
