use std::path::Path;
use std::time::UNIX_EPOCH;

use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};

use crate::{Error, Preset, Problem, Result};

/// A parsed and validated genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Network name: lowercase letters, digits and `-`, 1 to 64 characters.
    pub network: String,
    /// Creation time, RFC 3339 in UTC (`2026-11-01T00:00:00Z`).
    pub created_at: String,
    /// Multiaddrs ending in `/p2p/<peer id>` that new nodes dial first.
    #[serde(default)]
    pub bootnodes: Vec<String>,
    /// Protocol parameters.
    pub params: Params,
}

/// Protocol parameters fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Target wall time of one epoch, seconds (1..=3600).
    pub epoch_target_secs: u32,
    /// Sequential VDF steps per epoch (1,000..=10^12).
    pub vdf_iterations: u64,
    /// VDF construction.
    pub vdf_mode: VdfMode,
    /// Read-only dataset size for `memory-hard` mode, MiB (0 for `hash`, 1..=4096 otherwise).
    pub vdf_memory_mib: u32,
    /// Checkpoints per VDF proof (1..=4096, at most `vdf_iterations`).
    pub vdf_checkpoints: u32,
    /// Challenges each node issues per epoch (1..=1000).
    pub challenges_per_epoch: u32,
    /// Deadline for a challenge response, milliseconds (10..=60,000).
    pub response_deadline_ms: u32,
    /// Sequential steps of the prover-specific encoding per sector (1..=10^6).
    pub encoding_cost: u32,
    /// Continuity chains per group (2..=100,000).
    pub group_size: u32,
    /// Groups per region (2..=100,000).
    pub region_size: u32,
    /// External anchor mixed into every epoch input (`[params.anchor]`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorParams>,
    /// Bounds that keep a cheating peer from bending the protocols
    /// (`[params.security]`); the defaults when absent.
    #[serde(default, skip_serializing_if = "SecurityParams::is_default")]
    pub security: SecurityParams,
}

/// Bounds every verifier of the network applies alike, so that what a
/// cheating prover or a lying peer can get away with is fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityParams {
    /// Largest allowance for network distance added to the response
    /// deadline, ms (0..=10,000). The verifier takes the lowest round trip
    /// it measured itself, capped by this: a prover that delays its pongs
    /// gains at most this much.
    pub rtt_allowance_max_ms: u32,
    /// Every verifier audits each announced dataset of a connected peer once
    /// in this many epochs (1..=10,000): a prover whose replica does not
    /// encode its plaintext is caught within this many epochs.
    pub audit_period_epochs: u32,
    /// Deadline of an audit answer, ms (100..=60,000): the prover
    /// regenerates one sector's encoding for it. No valid answer in time is
    /// a failed proof.
    pub audit_deadline_ms: u32,
}

impl Default for SecurityParams {
    fn default() -> Self {
        Self {
            rtt_allowance_max_ms: 100,
            audit_period_epochs: 10,
            audit_deadline_ms: 30_000,
        }
    }
}

impl SecurityParams {
    /// True for the defaults (left out of the TOML and of the hash).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The DESIGN's epoch anchor: epoch `n`'s input takes the hash of the block at
/// height `start_height + n * blocks_per_epoch` of an EVM chain, once that
/// block has `confirmations` blocks on top of it (or the chain's `finalized`
/// tag reaches it). Epochs cannot run ahead of the anchor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorParams {
    /// EVM chain id (`eth_chainId`) of the anchor chain (1..=2^53).
    pub chain_id: u64,
    /// Height that epoch 0 would anchor to (0..=2^48).
    pub start_height: u64,
    /// Blocks between two consecutive epochs' anchors (1..=1,000,000).
    pub blocks_per_epoch: u64,
    /// Blocks on top of an anchor before it is final (1..=10,000).
    pub confirmations: u64,
}

impl AnchorParams {
    /// The anchor height of epoch `n`.
    pub fn height(&self, n: u64) -> u64 {
        self.start_height
            .saturating_add(n.saturating_mul(self.blocks_per_epoch))
    }
}

/// The VDF step construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VdfMode {
    /// SHA-256 hash chain.
    Hash,
    /// SHA-256 over the state and a read from a per-epoch read-only dataset.
    MemoryHard,
}

impl VdfMode {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Hash => 1,
            Self::MemoryHard => 2,
        }
    }
}

impl Genesis {
    /// Loads `dev`, `testnet`, or a TOML file at that path.
    pub fn load(spec: &str) -> Result<Self> {
        if let Some(preset) = Preset::from_name(spec) {
            return preset.genesis();
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(Error::Unknown(spec.to_owned()));
        }
        Self::load_file(path)
    }

    /// Loads and validates a genesis TOML file.
    pub fn load_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, Some(path.display().to_string()))
    }

    /// Parses and validates genesis TOML. `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: Option<String>) -> Result<Self> {
        let genesis: Genesis = toml::from_str(text).map_err(|e| Error::Parse {
            origin: origin.clone(),
            source: Box::new(e),
        })?;
        let problems = genesis.problems();
        if problems.is_empty() {
            Ok(genesis)
        } else {
            Err(Error::Invalid { origin, problems })
        }
    }

    /// The genesis as TOML (parameters only; comments are not kept).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a genesis always serializes to TOML")
    }

    /// Creation time in seconds since the Unix epoch (validated at load).
    pub fn created_at_unix(&self) -> u64 {
        parse_time(&self.created_at).unwrap_or(0)
    }

    /// Every problem of this genesis; empty when it is valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, value: String, allowed: &str| {
            out.push(Problem {
                field: field.to_owned(),
                value,
                allowed: allowed.to_owned(),
            })
        };
        let valid_name = !self.network.is_empty()
            && self.network.len() <= 64
            && self
                .network
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            bad(
                "network",
                format!("{:?}", self.network),
                "1 to 64 characters of a-z, 0-9 and -",
            );
        }
        if parse_time(&self.created_at).is_none() {
            bad(
                "created_at",
                format!("{:?}", self.created_at),
                "an RFC 3339 UTC time such as \"2026-11-01T00:00:00Z\"",
            );
        }
        for (i, addr) in self.bootnodes.iter().enumerate() {
            if let Err(why) = check_bootnode(addr) {
                bad(&format!("bootnodes[{i}]"), format!("{addr:?}"), &why);
            }
        }
        let p = &self.params;
        let mut range = |field: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                bad(&format!("params.{field}"), v.to_string(), &format!("{lo}..={hi}"));
            }
        };
        range("epoch_target_secs", p.epoch_target_secs.into(), 1, 3600);
        range("vdf_iterations", p.vdf_iterations, 1_000, 1_000_000_000_000);
        range(
            "vdf_checkpoints",
            p.vdf_checkpoints.into(),
            1,
            4096.min(p.vdf_iterations),
        );
        range("challenges_per_epoch", p.challenges_per_epoch.into(), 1, 1000);
        range("response_deadline_ms", p.response_deadline_ms.into(), 10, 60_000);
        range("encoding_cost", p.encoding_cost.into(), 1, 1_000_000);
        range("group_size", p.group_size.into(), 2, 100_000);
        range("region_size", p.region_size.into(), 2, 100_000);
        match p.vdf_mode {
            VdfMode::Hash => range("vdf_memory_mib", p.vdf_memory_mib.into(), 0, 0),
            VdfMode::MemoryHard => range("vdf_memory_mib", p.vdf_memory_mib.into(), 1, 4096),
        }
        if let Some(a) = &p.anchor {
            range("anchor.chain_id", a.chain_id, 1, (1 << 53) - 1);
            range("anchor.start_height", a.start_height, 0, 1 << 48);
            range("anchor.blocks_per_epoch", a.blocks_per_epoch, 1, 1_000_000);
            range("anchor.confirmations", a.confirmations, 1, 10_000);
        }
        let sec = &p.security;
        range(
            "security.rtt_allowance_max_ms",
            sec.rtt_allowance_max_ms.into(),
            0,
            10_000,
        );
        range(
            "security.audit_period_epochs",
            sec.audit_period_epochs.into(),
            1,
            10_000,
        );
        range(
            "security.audit_deadline_ms",
            sec.audit_deadline_ms.into(),
            100,
            60_000,
        );
        out
    }
}

pub(crate) fn parse_time(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

fn check_bootnode(addr: &str) -> std::result::Result<(), String> {
    let ma: Multiaddr = addr.parse().map_err(|e| format!("a multiaddr ({e})"))?;
    match ma.iter().last() {
        Some(Protocol::P2p(_)) => Ok(()),
        _ => Err("a multiaddr ending in /p2p/<peer id>".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = Preset::Dev
            .toml()
            .replace("vigil-dev", "Bad Name")
            .replace("epoch_target_secs = 5", "epoch_target_secs = 0")
            .replace("bootnodes = []", "bootnodes = [\"/ip4/1.2.3.4/tcp/1\"]");
        let err = Genesis::from_toml_str(&text, None).unwrap_err();
        let Error::Invalid { problems, .. } = &err else {
            panic!("expected Invalid, got {err}");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["network", "bootnodes[0]", "params.epoch_target_secs"]);
        let msg = err.to_string();
        assert!(
            msg.contains("params.epoch_target_secs = 0: allowed 1..=3600"),
            "{msg}"
        );
        assert!(msg.contains("/p2p/<peer id>"), "{msg}");
    }

    #[test]
    fn unknown_and_missing_fields_are_parse_errors() {
        let text = Preset::Dev.toml().replace("region_size", "regions_size");
        let msg = Genesis::from_toml_str(&text, Some("g.toml".into()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("malformed genesis g.toml"), "{msg}");
        assert!(msg.contains("regions_size"), "{msg}");
    }

    #[test]
    fn memory_mode_needs_memory() {
        let text = Preset::Dev.toml().replace("\"hash\"", "\"memory-hard\"");
        let msg = Genesis::from_toml_str(&text, None).unwrap_err().to_string();
        assert!(
            msg.contains("params.vdf_memory_mib = 0: allowed 1..=4096"),
            "{msg}"
        );
    }

    #[test]
    fn an_anchor_is_optional_and_checked() {
        let plain = Preset::Dev.genesis().unwrap();
        assert_eq!(plain.params.anchor, None);
        let anchored = format!(
            "{}\n[params.anchor]\nchain_id = 31337\nstart_height = 100\nblocks_per_epoch = 2\nconfirmations = 3\n",
            Preset::Dev.toml()
        );
        let g = Genesis::from_toml_str(&anchored, None).unwrap();
        let a = g.params.anchor.unwrap();
        assert_eq!((a.height(1), a.height(5)), (102, 110));
        // Round-trips through its own TOML.
        assert_eq!(Genesis::from_toml_str(&g.to_toml(), None).unwrap(), g);
        let bad = anchored
            .replace("blocks_per_epoch = 2", "blocks_per_epoch = 0")
            .replace("confirmations = 3", "confirmations = 0");
        let msg = Genesis::from_toml_str(&bad, None).unwrap_err().to_string();
        assert!(
            msg.contains("params.anchor.blocks_per_epoch = 0: allowed 1..=1000000")
                && msg.contains("params.anchor.confirmations = 0: allowed 1..=10000"),
            "{msg}"
        );
        let unknown = anchored.replace("confirmations", "confirmation");
        let msg = Genesis::from_toml_str(&unknown, None).unwrap_err().to_string();
        assert!(msg.contains("confirmation"), "{msg}");
    }

    #[test]
    fn security_bounds_default_and_are_checked() {
        let plain = Preset::Dev.genesis().unwrap();
        assert!(plain.params.security.is_default());
        assert!(
            !plain.to_toml().contains("security"),
            "defaults stay out of the TOML"
        );
        let set = format!(
            "{}\n[params.security]\nrtt_allowance_max_ms = 40\naudit_period_epochs = 3\n",
            Preset::Dev.toml()
        );
        let g = Genesis::from_toml_str(&set, None).unwrap();
        assert_eq!(g.params.security.rtt_allowance_max_ms, 40);
        assert_eq!(g.params.security.audit_period_epochs, 3);
        assert_eq!(
            g.params.security.audit_deadline_ms, 30_000,
            "an unset bound keeps its default"
        );
        assert_eq!(Genesis::from_toml_str(&g.to_toml(), None).unwrap(), g);
        assert_ne!(g.hash(), plain.hash(), "the bounds are part of the genesis hash");
        let bad = set.replace("audit_period_epochs = 3", "audit_period_epochs = 0");
        let msg = Genesis::from_toml_str(&bad, None).unwrap_err().to_string();
        assert!(
            msg.contains("params.security.audit_period_epochs = 0: allowed 1..=10000"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_spec_names_the_choices() {
        let msg = Genesis::load("mainnet").unwrap_err().to_string();
        assert!(msg.contains("dev, testnet"), "{msg}");
    }
}
