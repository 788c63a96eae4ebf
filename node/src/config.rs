//! The node's configuration: one serde tree, loaded in layers.
//!
//! Precedence, lowest first: built-in defaults < TOML file (`--config FILE`,
//! else `DATA_DIR/config.toml` when present) < environment (`VIGIL_` prefix,
//! `__` between levels: `VIGIL_RPC__ADDR=127.0.0.1:9000`) < command-line flags.
//! Unknown keys are errors. [`Config::problems`] reports every invalid value
//! with its key path and what is allowed.

mod keys;
mod load;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use keys::{commented_template, KEYS};
pub use load::{load, ConfigError, Overrides};

/// Default admin RPC port.
pub const DEFAULT_RPC_PORT: u16 = 8645;
/// Default bus (WebSocket) port.
pub const DEFAULT_BUS_PORT: u16 = 8646;
/// Default p2p port.
pub const DEFAULT_P2P_PORT: u16 = 30345;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[rpc]`: the admin RPC.
    pub rpc: RpcConfig,
    /// `[network]`: libp2p.
    pub network: NetworkConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[metrics]`: a listener of its own for `/metrics`.
    pub metrics: MetricsConfig,
    /// `[storage]`: sled.
    pub storage: StorageConfig,
    /// `[shutdown]`: stopping the actor tree.
    pub shutdown: ShutdownConfig,
    /// `[supervision]`: restarts of crashed actors.
    pub supervision: SupervisionConfig,
    /// `[bus]`: the inter-application bus and durable queues.
    pub bus: BusConfig,
    /// `[vdf]`: the VDF worker and epoch verification.
    pub vdf: VdfConfig,
    /// `[challenge]`: availability challenges of peers.
    pub challenge: ChallengeConfig,
    /// `[continuity]`: continuity chains of the stored datasets.
    pub continuity: ContinuityConfig,
    /// `[chain]`: external chains followed.
    pub chain: ChainConfig,
    /// `[security]`: rules reacting to detections.
    pub security: SecurityConfig,
    /// `[layer2]`: payment channels settled on an EVM chain.
    pub layer2: Layer2Config,
    /// `[debug]`: switches for testing; all off by default.
    pub debug: DebugConfig,
}

/// `[layer2]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Layer2Config {
    /// Run the payment-channel adapter.
    pub enabled: bool,
    /// Name of the `[[chain.sources]]` entry (kind evm, with chain_id) to settle on.
    pub source: String,
    /// Address of the deployed PaymentChannel contract.
    pub contract: String,
    /// The most this node deposits when a peer opens a channel with it (wei, or `0.1eth`).
    pub max_join_deposit: String,
    /// How long a payment waits for the counterparty, ms.
    pub request_timeout_ms: u64,
}

impl Default for Layer2Config {
    fn default() -> Self {
        Self {
            enabled: false,
            source: String::new(),
            contract: String::new(),
            max_join_deposit: "0".into(),
            request_timeout_ms: 5000,
        }
    }
}

/// `[challenge]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChallengeConfig {
    /// Challenge peers every epoch (answering is always on).
    pub enabled: bool,
    /// Leaves asked per challenge.
    pub chunks: u32,
    /// Audit each peer dataset once in this many epochs when that is more
    /// often than the genesis' `security.audit_period_epochs`; 0 = the genesis period.
    pub audit_every_epochs: u64,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            chunks: 4,
            audit_every_epochs: 0,
        }
    }
}

/// `[chain]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// `[[chain.sources]]`: chains to follow.
    pub sources: Vec<vigil_actors::chain::SourceConfig>,
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `[[security.rules]]`: `when` a detection matches, do `action`.
    pub rules: Vec<vigil_actors::chain::RuleConfig>,
}

/// `[continuity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuityConfig {
    /// Extend every dataset's chain every epoch.
    pub enabled: bool,
    /// Chunks selected per dataset per epoch.
    pub chunks: u32,
    /// Epochs of links kept on disk.
    pub keep_epochs: u64,
}

impl Default for ContinuityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            chunks: 2,
            keep_epochs: 64,
        }
    }
}

/// How received epochs are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifySetting {
    /// Recompute every segment (in parallel): certain, costs T / cores.
    Full,
    /// Recompute `vdf.samples` segments chosen by this node's randomness.
    Sampled,
}

/// `[vdf]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VdfConfig {
    /// Run a VDF worker; a follower (false) verifies and adopts peers' epochs only.
    pub compute: bool,
    /// Verification of gossiped and synced epochs.
    pub verify: VerifySetting,
    /// Segments recomputed per epoch in `sampled` mode.
    pub samples: u32,
    /// Epochs asked of one peer per sync request.
    pub sync_batch: u32,
    /// Peers asked in parallel while syncing.
    pub sync_peers: u32,
    /// Least time from the start of one computed epoch to the next, ms
    /// (0: back to back).
    pub min_epoch_ms: u64,
}

impl Default for VdfConfig {
    fn default() -> Self {
        Self {
            compute: true,
            verify: VerifySetting::Full,
            samples: 8,
            sync_batch: 64,
            sync_peers: 3,
            min_epoch_ms: 0,
        }
    }
}

/// `[rpc]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Address of the admin RPC (HTTP + WebSocket): loopback, or any
    /// address with `tls_cert` and `tls_key` set.
    pub addr: SocketAddr,
    /// Largest request body, bytes.
    pub max_request_bytes: u32,
    /// Concurrent connections.
    pub max_connections: u32,
    /// Concurrent connections from one client address.
    pub max_connections_per_ip: u32,
    /// Calls in one JSON-RPC batch.
    pub max_batch: u32,
    /// Subscriptions one WebSocket connection may hold.
    pub max_subscriptions: u32,
    /// Sustained calls per second of one caller (an API key, or the cookie); 0 = no limit.
    pub rate_per_caller: u32,
    /// Sustained calls per second from one client address; 0 = no limit.
    pub rate_per_address: u32,
    /// Calls a caller or an address may make at once above its rate.
    pub rate_burst: u32,
    /// `Host` names the node answers to besides loopback names and its bound
    /// address (a DNS-rebinding page sends its own); `*` = any.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call, with CORS (`https://ops.example`);
    /// empty = browsers refused; `*` = any.
    pub cors_origins: Vec<String>,
    /// Networks clients may connect from (`10.0.0.0/8`, `::1/128`); empty = any.
    pub allowed_networks: Vec<String>,
    /// PEM certificate chain for TLS (needed off loopback; reread on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_RPC_PORT)),
            max_request_bytes: 1 << 20,
            max_connections: 32,
            max_connections_per_ip: 16,
            max_batch: 32,
            max_subscriptions: 16,
            rate_per_caller: 100,
            rate_per_address: 200,
            rate_burst: 200,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            allowed_networks: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Run the p2p network.
    pub enabled: bool,
    /// p2p listen multiaddrs.
    pub listen: Vec<String>,
    /// Extra bootnodes, besides the genesis ones.
    pub bootnodes: Vec<String>,
    /// Established inbound connections allowed.
    pub max_inbound: u32,
    /// Established outbound connections allowed.
    pub max_outbound: u32,
    /// Inbound connections in their handshake allowed.
    pub max_pending: u32,
    /// Connections per peer allowed.
    pub max_per_peer: u32,
    /// Inbound connections from one IP address at once.
    pub max_inbound_per_ip: u32,
    /// Banned peer ids from one IP address that get the address banned (0: never).
    pub ip_ban_threshold: u32,
    /// Peers the node dials towards.
    pub target_peers: u32,
    /// Close a connection idle this long, seconds.
    pub idle_timeout_secs: u64,
    /// Ping each connection this often, seconds.
    pub ping_interval_secs: u64,
    /// Close a connection whose ping is unanswered this long, seconds.
    pub ping_timeout_secs: u64,
    /// Disconnect a peer whose score falls below this.
    pub score_disconnect: i32,
    /// Ban a peer whose score falls below this.
    pub score_ban: i32,
    /// How long a ban lasts, seconds.
    pub ban_secs: u64,
    /// First reconnection delay, ms; doubles per failure.
    pub reconnect_initial_ms: u64,
    /// Largest reconnection delay, ms.
    pub reconnect_max_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
            ],
            bootnodes: Vec::new(),
            max_inbound: 64,
            max_outbound: 32,
            max_pending: 32,
            max_per_peer: 2,
            max_inbound_per_ip: 16,
            ip_ban_threshold: 3,
            target_peers: 16,
            idle_timeout_secs: 60,
            ping_interval_secs: 10,
            ping_timeout_secs: 20,
            score_disconnect: -20,
            score_ban: -50,
            ban_secs: 12 * 3600,
            reconnect_initial_ms: 1000,
            reconnect_max_ms: 60_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (only) on this address too, for a Prometheus server
    /// elsewhere; may be non-loopback. Unset: `/metrics` is on the admin
    /// RPC's address only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pretty => "pretty",
            Self::Json => "json",
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// sled page cache, MiB.
    pub cache_capacity_mb: u64,
    /// Background flush period, ms; 0 flushes only on explicit request and at shutdown.
    pub flush_every_ms: u64,
    /// Largest dataset accepted by `storage_put`, MiB.
    pub max_dataset_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_capacity_mb: 64,
            flush_every_ms: 500,
            max_dataset_mb: 4096,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time each actor gets to stop, ms.
    pub actor_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            actor_timeout_ms: 5_000,
        }
    }
}

/// `[supervision]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed within `period_secs` before the root gives up.
    pub max_restarts: u32,
    /// The intensity window, seconds.
    pub period_secs: u64,
    /// Delay before the second consecutive restart, ms; doubles after each.
    pub backoff_initial_ms: u64,
    /// Largest restart delay, ms.
    pub backoff_max_ms: u64,
    /// Uptime after which a crash restarts at once again, seconds.
    pub stable_after_secs: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            period_secs: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            stable_after_secs: 10,
        }
    }
}

/// When a durable publish is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfirmSetting {
    /// After an fsync covering it (group commit).
    Always,
    /// After the next periodic fsync (`bus.confirm_interval_ms`).
    Interval,
    /// At once; a crash may lose it.
    None,
}

/// `[bus]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Run the bus.
    pub enabled: bool,
    /// WebSocket address; loopback only.
    pub addr: SocketAddr,
    /// Also listen on `DATA_DIR/bus.sock` (mode 0600).
    pub unix_socket: bool,
    /// Largest frame, bytes.
    pub max_frame_bytes: u64,
    /// Largest payload, bytes.
    pub max_payload_bytes: u64,
    /// Confirm mode of durable publishes.
    pub confirm: ConfirmSetting,
    /// Period of `interval` confirms, ms.
    pub confirm_interval_ms: u64,
    /// Topics (`name` or `prefix.*`) that are ephemeral: at-most-once, never on disk.
    pub ephemeral_topics: Vec<String>,
    /// Frames queued to one app before live copies to it are dropped.
    pub outbound_queue: u32,
    /// Time an app has to say hello, ms.
    pub hello_timeout_ms: u64,
    /// Connections (WebSocket and Unix) open at once at most.
    pub max_connections: u32,
    /// Browser origins allowed to open the WebSocket (`"*"`: any); none by default.
    pub allowed_origins: Vec<String>,
    /// Failed hellos from one source are audited once per window, with their count, seconds.
    pub auth_failure_window_secs: u64,
    /// Settings of topics created on first use.
    pub topic_defaults: vigil_actors::queue::TopicConfig,
    /// Durable topics with their own settings.
    pub topics: Vec<vigil_actors::queue::TopicConfig>,
    /// Apps defined in config (more can be added with `bus_app_add`).
    pub apps: Vec<vigil_actors::bus::AppConfig>,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_BUS_PORT)),
            unix_socket: true,
            max_frame_bytes: 2 << 20,
            max_payload_bytes: 1 << 20,
            confirm: ConfirmSetting::Always,
            confirm_interval_ms: 10,
            ephemeral_topics: vec!["live.*".into()],
            outbound_queue: 1024,
            hello_timeout_ms: 10_000,
            max_connections: 256,
            allowed_origins: Vec::new(),
            auth_failure_window_secs: 60,
            topic_defaults: vigil_actors::queue::TopicConfig::default(),
            topics: Vec::new(),
            apps: Vec::new(),
        }
    }
}

/// `[debug]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Allows `actors_inject_panic` (chaos testing). Never on a production node.
    pub fault_injection: bool,
    /// Shifts this node's wall clock from the host's, ms (clock-skew testing).
    pub clock_offset_ms: i64,
}

impl Config {
    /// The config as TOML, as `--dump-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serializes to TOML")
    }
}
