//! Canonical binary encoding of a genesis and its hash.
//!
//! Layout (all integers big-endian): the domain tag `vigil/genesis/v1`, then
//! network (u32 length + UTF-8), created_at as u64 Unix seconds, bootnodes
//! (u32 count, then each as u32 length + multiaddr bytes), then every
//! parameter in declaration order at its fixed width, the VDF mode as one byte,
//! and, only when the genesis has one, `anchor` followed by the anchor's four
//! u64 fields (so adding the option changed no existing genesis hash), then,
//! only when they differ from the defaults, `security` and its three u32s.

use std::fmt;

use multiaddr::Multiaddr;

use crate::Genesis;

const DOMAIN: &[u8] = b"vigil/genesis/v1";

/// BLAKE3 hash of a genesis' canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GenesisHash(pub [u8; 32]);

impl GenesisHash {
    /// Full hash, lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 bytes, hex: the `<g8>` in protocol names and gossip topics.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for GenesisHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for GenesisHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GenesisHash({})", self.to_hex())
    }
}

impl Genesis {
    /// The canonical encoding hashed by [`Genesis::hash`].
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(DOMAIN);
        put_bytes(&mut out, self.network.as_bytes());
        out.extend_from_slice(&self.created_at_unix().to_be_bytes());
        out.extend_from_slice(&(self.bootnodes.len() as u32).to_be_bytes());
        for addr in &self.bootnodes {
            // Validated at load; the bytes of the multiaddr ignore its spelling.
            let bytes = addr
                .parse::<Multiaddr>()
                .map(|m| m.to_vec())
                .unwrap_or_else(|_| addr.as_bytes().to_vec());
            put_bytes(&mut out, &bytes);
        }
        let p = &self.params;
        out.extend_from_slice(&p.epoch_target_secs.to_be_bytes());
        out.extend_from_slice(&p.vdf_iterations.to_be_bytes());
        out.push(p.vdf_mode.tag());
        out.extend_from_slice(&p.vdf_memory_mib.to_be_bytes());
        out.extend_from_slice(&p.vdf_checkpoints.to_be_bytes());
        out.extend_from_slice(&p.challenges_per_epoch.to_be_bytes());
        out.extend_from_slice(&p.response_deadline_ms.to_be_bytes());
        out.extend_from_slice(&p.encoding_cost.to_be_bytes());
        out.extend_from_slice(&p.group_size.to_be_bytes());
        out.extend_from_slice(&p.region_size.to_be_bytes());
        // Appended only when present, so a genesis without one keeps its hash.
        if let Some(a) = &p.anchor {
            out.extend_from_slice(b"anchor");
            for v in [a.chain_id, a.start_height, a.blocks_per_epoch, a.confirmations] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        // Likewise only when not the defaults, so no earlier genesis changed hash.
        let s = &p.security;
        if !s.is_default() {
            out.extend_from_slice(b"security");
            for v in [s.rtt_allowance_max_ms, s.audit_period_epochs, s.audit_deadline_ms] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out
    }

    /// The genesis hash: BLAKE3 of [`Genesis::canonical_bytes`].
    pub fn hash(&self) -> GenesisHash {
        GenesisHash(*blake3::hash(&self.canonical_bytes()).as_bytes())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::{Genesis, Preset, VdfMode};

    #[test]
    fn reformatting_keeps_the_hash() {
        let original = Preset::Testnet.genesis().unwrap();
        // Reordered keys, other whitespace, comments, inline tables.
        let reformatted = r#"
            # same network, other layout
            bootnodes=[ ]
            [params]
            region_size=10
            group_size =   1000
            encoding_cost = 10_000   # underscores are TOML too
            response_deadline_ms = 500
            challenges_per_epoch = 10
            vdf_checkpoints = 256
            vdf_memory_mib = 256
            vdf_mode = 'memory-hard'
            vdf_iterations = 140_000_000
            epoch_target_secs = 40
        "#;
        let head = "network = \"vigil-testnet\"\ncreated_at = \"2026-11-01T00:00:00Z\"\n";
        let g = Genesis::from_toml_str(&format!("{head}{reformatted}"), None).unwrap();
        assert_eq!(g.hash(), original.hash());
        // And the serialized form round-trips to the same hash.
        let again = Genesis::from_toml_str(&original.to_toml(), None).unwrap();
        assert_eq!(again.hash(), original.hash());
    }

    #[test]
    fn hash_hex_round_trips() {
        let h = Preset::Dev.genesis().unwrap().hash();
        assert_eq!(crate::GenesisHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(h.short(), &h.to_hex()[..16]);
    }

    fn mutate(g: &mut Genesis, field: usize, delta: u32) {
        let d = delta.max(1);
        let p = &mut g.params;
        match field {
            0 => g.network.push('x'),
            1 => g.created_at = "2026-11-01T00:00:01Z".into(),
            2 => g
                .bootnodes
                .push("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()),
            3 => p.epoch_target_secs = p.epoch_target_secs.wrapping_add(d),
            4 => p.vdf_iterations = p.vdf_iterations.wrapping_add(d.into()),
            5 => {
                p.vdf_mode = match p.vdf_mode {
                    VdfMode::Hash => VdfMode::MemoryHard,
                    VdfMode::MemoryHard => VdfMode::Hash,
                }
            }
            6 => p.vdf_memory_mib = p.vdf_memory_mib.wrapping_add(d),
            7 => p.vdf_checkpoints = p.vdf_checkpoints.wrapping_add(d),
            8 => p.challenges_per_epoch = p.challenges_per_epoch.wrapping_add(d),
            9 => p.response_deadline_ms = p.response_deadline_ms.wrapping_add(d),
            10 => p.encoding_cost = p.encoding_cost.wrapping_add(d),
            11 => p.group_size = p.group_size.wrapping_add(d),
            12 => p.region_size = p.region_size.wrapping_add(d),
            13 => p.anchor = None,
            field => {
                let a = p.anchor.as_mut().expect("an anchored base");
                let v = match field {
                    14 => &mut a.chain_id,
                    15 => &mut a.start_height,
                    16 => &mut a.blocks_per_epoch,
                    _ => &mut a.confirmations,
                };
                *v = v.wrapping_add(d.into());
            }
        }
    }

    fn anchored() -> Genesis {
        let mut g = Preset::Dev.genesis().unwrap();
        g.params.anchor = Some(crate::AnchorParams {
            chain_id: 31337,
            start_height: 10,
            blocks_per_epoch: 1,
            confirmations: 2,
        });
        g
    }

    #[test]
    fn the_anchor_option_changed_no_existing_hash() {
        // The preset hashes from before `[params.anchor]` existed.
        let hash = |p: Preset| p.genesis().unwrap().hash().to_hex();
        assert_eq!(
            hash(Preset::Dev),
            "8532f1145a9ec75fb827b6702281bcda13bf164257fe64bf7887479f81a1a04e"
        );
        assert_eq!(
            hash(Preset::Testnet),
            "6a6f7c2b8be9967946e5f53bf2ccceee01019f348228418f9af0dd9e7c8ce851"
        );
    }

    proptest! {
        #[test]
        fn any_parameter_change_changes_the_hash(field in 0usize..18, delta in 1u32..1_000_000) {
            let base = if field >= 13 { anchored() } else { Preset::Dev.genesis().unwrap() };
            let mut changed = base.clone();
            mutate(&mut changed, field, delta);
            prop_assert_ne!(base.hash(), changed.hash());
        }
    }
}
