//! The signed messages on the gossip topic `/vigil/<g8>/datasets/2`: an
//! announcement `(R, R_p, size)` of a dataset a node stores, or the
//! withdrawal of one it dropped, each stamped with its signer's time.
//!
//! Version 2 (topic `datasets/2`; version 1 was `datasets`) adds the
//! withdrawal and the time `at`: a node's messages about one dataset are
//! ordered by it, so a replayed announcement cannot undo a withdrawal, and
//! a message older than [`REPLAY_WINDOW`] is stale.

use std::time::Duration;

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

/// Gossip topic suffix: `/vigil/<g8>/datasets/2`.
pub const ANNOUNCE_TOPIC: &str = "datasets/2";
const DOMAIN: &[u8] = b"vigil/announce/v2";

/// How long a verifier keeps challenging a dataset after it last heard its
/// announcement, by its own clock. A node re-signs and re-gossips its
/// announcements every 15 s ([`REFRESH`]), so this tolerates three lost in a
/// row; a dataset whose owner stopped announcing it (it withdrew it, and the
/// withdrawal was lost) drops out this long after the owner's last word.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(60);
/// How often a node re-signs and re-gossips its announcements and withdrawals.
pub const REFRESH: Duration = Duration::from_secs(15);
/// How old (by its signed time) a message may be and still be taken, and
/// how long withdrawals are remembered (by verifiers) and re-gossiped (by
/// their owner): an announcement replayed later than this is refused for its
/// age, one replayed sooner is older than the withdrawal and ignored.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30 * 60);
/// How far ahead of the receiver's clock a message may be signed.
pub const MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Now, Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    crate::queue::now_us() / 1000
}

/// What a signed dataset message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "I store this dataset."
    Announce,
    /// "I dropped this dataset: do not challenge me on it."
    Withdraw,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Announce => 1,
            Kind::Withdraw => 2,
        }
    }
}

/// A signed announcement or withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Announce or withdraw.
    pub kind: Kind,
    /// Plaintext root.
    pub root: [u8; 32],
    /// Replica root.
    pub replica_root: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    /// Signed at, Unix milliseconds of the signer's clock.
    pub at: u64,
    /// The signing node's public key (protobuf).
    pub public_key: Vec<u8>,
    /// Its signature over `DOMAIN ‖ kind ‖ R ‖ R_p ‖ size ‖ at`.
    pub signature: Vec<u8>,
}

fn signed_bytes(kind: Kind, root: &[u8; 32], replica_root: &[u8; 32], size: u64, at: u64) -> Vec<u8> {
    [
        DOMAIN,
        &[kind.byte()],
        root,
        replica_root,
        &size.to_be_bytes(),
        &at.to_be_bytes(),
    ]
    .concat()
}

impl Announcement {
    /// An announcement of `(R, R_p, size)` signed with `key`, now.
    pub fn sign(key: &Keypair, root: [u8; 32], replica_root: [u8; 32], size: u64) -> crate::Result<Self> {
        Self::signed(key, Kind::Announce, root, replica_root, size, now_ms())
    }

    /// The withdrawal of `(R, R_p, size)` signed with `key`, now.
    pub fn withdrawal(
        key: &Keypair,
        root: [u8; 32],
        replica_root: [u8; 32],
        size: u64,
    ) -> crate::Result<Self> {
        Self::signed(key, Kind::Withdraw, root, replica_root, size, now_ms())
    }

    /// A message of `kind` signed with `key` at `at` (Unix ms).
    pub fn signed(
        key: &Keypair,
        kind: Kind,
        root: [u8; 32],
        replica_root: [u8; 32],
        size: u64,
        at: u64,
    ) -> crate::Result<Self> {
        let signature = key
            .sign(&signed_bytes(kind, &root, &replica_root, size, at))
            .map_err(|e| crate::Error::Invalid(format!("cannot sign: {e}")))?;
        Ok(Self {
            kind,
            root,
            replica_root,
            size,
            at,
            public_key: key.public().encode_protobuf(),
            signature,
        })
    }

    /// Encoding: kind (u8) ‖ R ‖ R_p ‖ size ‖ at ‖ key length (u16) ‖ key ‖
    /// signature length (u16) ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(89 + self.public_key.len() + self.signature.len());
        out.push(self.kind.byte());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.replica_root);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&(self.public_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and checks the signature; returns the signer.
    pub fn decode_verified(b: &[u8]) -> std::result::Result<(Self, PeerId), String> {
        let take = |at: usize, n: usize| {
            b.get(at..at + n)
                .ok_or_else(|| format!("dataset message truncated at byte {at}"))
        };
        let kind = match take(0, 1)?[0] {
            1 => Kind::Announce,
            2 => Kind::Withdraw,
            k => return Err(format!("kind {k}: 1 (announce) or 2 (withdraw) expected")),
        };
        let u64_at = |at: usize| -> std::result::Result<u64, String> {
            Ok(u64::from_be_bytes(take(at, 8)?.try_into().map_err(|_| "u64")?))
        };
        let root: [u8; 32] = take(1, 32)?.try_into().map_err(|_| "root")?;
        let replica_root: [u8; 32] = take(33, 32)?.try_into().map_err(|_| "replica root")?;
        let size = u64_at(65)?;
        let at = u64_at(73)?;
        let kl = u16::from_be_bytes(take(81, 2)?.try_into().map_err(|_| "key length")?) as usize;
        let public_key = take(83, kl)?.to_vec();
        let sl = u16::from_be_bytes(take(83 + kl, 2)?.try_into().map_err(|_| "signature length")?) as usize;
        let signature = take(85 + kl, sl)?.to_vec();
        if b.len() != 85 + kl + sl {
            return Err(format!("{} trailing bytes", b.len() - 85 - kl - sl));
        }
        if size == 0 {
            return Err("an empty dataset".into());
        }
        let pk = PublicKey::try_decode_protobuf(&public_key).map_err(|e| format!("public key: {e}"))?;
        if !pk.verify(&signed_bytes(kind, &root, &replica_root, size, at), &signature) {
            return Err("bad signature".into());
        }
        let a = Self {
            kind,
            root,
            replica_root,
            size,
            at,
            public_key,
            signature,
        };
        Ok((a, pk.to_peer_id()))
    }

    /// Why a receiver whose clock reads `now` (Unix ms) takes this message
    /// as stale or from the future; `None` when it is current.
    pub fn untimely(&self, now: u64) -> Option<String> {
        let window = REPLAY_WINDOW.as_millis() as u64;
        let ahead = MAX_AHEAD.as_millis() as u64;
        if self.at.saturating_add(window) < now {
            return Some(format!(
                "signed {} s ago; messages older than {} s are stale (a node re-signs its own every 15 s: is its clock behind?)",
                (now - self.at) / 1000,
                window / 1000
            ));
        }
        if self.at > now.saturating_add(ahead) {
            return Some(format!(
                "signed {} s in the future; at most {} s ahead is taken (is its clock ahead?)",
                (self.at - now) / 1000,
                ahead / 1000
            ));
        }
        None
    }
}
