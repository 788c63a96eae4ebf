//! Epochs on the wire: the gossip topic `/vigil/<g8>/epochs` and the range
//! protocol `/vigil/<g8>/sync/1`, and the [`EpochSource`] the swarm asks for
//! both. The network validates nothing itself: epoch gossip goes to the
//! source, which verifies it off the swarm task and reports back with
//! [`super::Network::report_epoch`].

use libp2p::gossipsub::MessageId;
use libp2p::PeerId;

use super::codec::Wire;

/// Largest sync request body.
pub const SYNC_REQUEST_MAX: usize = 64;
/// Largest sync response body (a server stops adding epochs before it).
pub const SYNC_RESPONSE_MAX: usize = 8 << 20;
/// Most epochs asked for in one request.
pub const SYNC_MAX_COUNT: u32 = 512;

/// What the network needs from the epoch chain.
pub trait EpochSource: Send + Sync + std::fmt::Debug + 'static {
    /// Highest epoch held (0: none).
    fn head(&self) -> u64;
    /// Encoded epochs `from ..` (at most `count`, at most `max_bytes` in all).
    fn range(&self, from: u64, count: u32, max_bytes: usize) -> Vec<Vec<u8>>;
    /// An epoch gossiped by `from` (the propagating peer); the source must
    /// answer with [`super::Network::report_epoch`] and must not block.
    fn gossip(&self, from: PeerId, id: MessageId, data: Vec<u8>);
}

/// What to tell gossipsub about a gossiped epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipVerdict {
    /// Valid and new: forward it.
    Accept,
    /// Not invalid, not forwarded (a duplicate, or ahead of our head).
    Ignore,
    /// Invalid: dropped, and the peer scored down.
    Reject,
}

/// `/vigil/<g8>/sync/1` request: epochs `from ..`, at most `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest {
    /// First epoch wanted.
    pub from: u64,
    /// Most epochs wanted (1..=[`SYNC_MAX_COUNT`]).
    pub count: u32,
}

const SYNC_V1: u8 = 1;
/// A sync response that says "busy", then a `u32` of ms.
const SYNC_BUSY: u8 = 0xB5;

impl Wire for SyncRequest {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![SYNC_V1];
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != 13 || b[0] != SYNC_V1 {
            return Err(format!(
                "sync request of {} bytes (version {:?}); 13 bytes of version 1 expected",
                b.len(),
                b.first()
            ));
        }
        let from = u64::from_be_bytes(b[1..9].try_into().map_err(|_| "from")?);
        let count = u32::from_be_bytes(b[9..13].try_into().map_err(|_| "count")?);
        if from == 0 || !(1..=SYNC_MAX_COUNT).contains(&count) {
            return Err(format!(
                "sync request from {from} count {count}: from >= 1 and count 1..={SYNC_MAX_COUNT} allowed"
            ));
        }
        Ok(Self { from, count })
    }
}

/// `/vigil/<g8>/sync/1` response: the server's head and encoded epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// The server's head.
    pub head: u64,
    /// Encoded epochs, consecutive from the request's `from`.
    pub epochs: Vec<Vec<u8>>,
    /// The server is busy (this peer's share is used up, or every slot is
    /// taken): try again after this many ms. No epochs then; not a refusal
    /// of the claim either.
    pub busy_ms: Option<u32>,
}

impl SyncResponse {
    /// `head` and `epochs`.
    pub fn new(head: u64, epochs: Vec<Vec<u8>>) -> Self {
        Self {
            head,
            epochs,
            busy_ms: None,
        }
    }

    /// "Busy: try again after `ms`".
    pub fn busy(ms: u32) -> Self {
        Self {
            head: 0,
            epochs: Vec::new(),
            busy_ms: Some(ms),
        }
    }
}

impl Wire for SyncResponse {
    fn encode(&self) -> Vec<u8> {
        if let Some(ms) = self.busy_ms {
            let mut out = vec![SYNC_BUSY];
            out.extend_from_slice(&ms.to_be_bytes());
            return out;
        }
        let mut out = vec![SYNC_V1];
        out.extend_from_slice(&self.head.to_be_bytes());
        out.extend_from_slice(&(self.epochs.len() as u32).to_be_bytes());
        for e in &self.epochs {
            out.extend_from_slice(&(e.len() as u32).to_be_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if let [SYNC_BUSY, ms @ ..] = b {
            let ms: [u8; 4] = ms
                .try_into()
                .map_err(|_| format!("busy sync response of {} bytes; 5 expected", b.len()))?;
            return Ok(Self::busy(u32::from_be_bytes(ms)));
        }
        if b.len() < 13 || b[0] != SYNC_V1 {
            return Err(format!(
                "sync response of {} bytes: version 1 header (or busy) expected",
                b.len()
            ));
        }
        let head = u64::from_be_bytes(b[1..9].try_into().map_err(|_| "head")?);
        let n = u32::from_be_bytes(b[9..13].try_into().map_err(|_| "count")?);
        if n > SYNC_MAX_COUNT {
            return Err(format!("{n} epochs in a response; at most {SYNC_MAX_COUNT}"));
        }
        let mut at = 13;
        let mut epochs = Vec::with_capacity(n as usize);
        for i in 0..n {
            let len = b
                .get(at..at + 4)
                .map(|l| u32::from_be_bytes(l.try_into().unwrap_or_default()) as usize)
                .ok_or_else(|| format!("truncated at the length of epoch {i}"))?;
            at += 4;
            let body = b
                .get(at..at + len)
                .ok_or_else(|| format!("truncated inside epoch {i} ({len} bytes announced)"))?;
            epochs.push(body.to_vec());
            at += len;
        }
        if at != b.len() {
            return Err(format!("{} trailing bytes", b.len() - at));
        }
        Ok(Self::new(head, epochs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_garbage() {
        let r = SyncRequest { from: 5, count: 64 };
        assert_eq!(SyncRequest::decode(&r.encode()).unwrap(), r);
        let bad = SyncRequest { from: 5, count: 0 }.encode();
        assert!(SyncRequest::decode(&bad).unwrap_err().contains("count 1..=512"));
        let s = SyncResponse::new(9, vec![vec![1, 2, 3], vec![]]);
        let bytes = s.encode();
        assert_eq!(SyncResponse::decode(&bytes).unwrap(), s);
        assert!(SyncResponse::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(SyncResponse::decode(&long).unwrap_err().contains("trailing"));
        let busy = SyncResponse::busy(250);
        assert_eq!(SyncResponse::decode(&busy.encode()).unwrap(), busy);
        assert!(SyncResponse::decode(&[SYNC_BUSY, 1])
            .unwrap_err()
            .contains("5 expected"));
    }
}
