//! `/vigil/<g8>/continuity/1`: serving this node's continuity proofs, and
//! checking a peer's: each proof against the root its prover gossiped at
//! that epoch, and a range of epochs link by link.

use libp2p::PeerId;
use vigil_protocols::continuity::{root_message, ProofRequest, SignedProof, H};

use super::{Continuity, RootRecorder, COMMITMENT_GRACE_EPOCHS};
use crate::epoch::Chain;
use crate::net::codec::Frame;
use crate::net::Offence;
use crate::net::{BytesProtocol, BytesReply, BytesServer, Network};

/// Serves continuity proofs.
#[derive(Debug)]
pub struct ProofServer {
    c: Continuity,
    chain: Chain,
}

impl ProofServer {
    /// A server over `c`, reading epoch outputs from `chain`.
    pub fn new(c: Continuity, chain: Chain) -> Self {
        Self { c, chain }
    }

    fn answer(&self, req: &[u8]) -> Vec<u8> {
        let req = match ProofRequest::decode(req) {
            Ok(r) => r,
            Err(e) => return SignedProof::refusal(&e),
        };
        let output = match self.chain.store().get(req.epoch) {
            Ok(Some(e)) => e.output,
            _ => return SignedProof::refusal(&format!("epoch {} is not stored here", req.epoch)),
        };
        match self.c.proof(&req.replica_root, req.epoch, &output) {
            Ok(se) => SignedProof {
                evidence: se.evidence,
                signature: se.signature,
            }
            .encode(),
            Err(e) => SignedProof::refusal(&e.to_string()),
        }
    }
}

impl BytesServer for ProofServer {
    fn serve(&self, _from: PeerId, req: Vec<u8>, reply: BytesReply) {
        let me = Self {
            c: self.c.clone(),
            chain: self.chain.clone(),
        };
        tokio::spawn(async move {
            let resp = tokio::task::spawn_blocking(move || me.answer(&req))
                .await
                .unwrap_or_else(|e| SignedProof::refusal(&format!("internal error: {e}")));
            reply.send(resp).await;
        });
    }
}

/// Epochs one [`Continuity::check_chain`] may walk.
pub const MAX_CHECK_EPOCHS: u64 = 64;

/// What a check of a peer's chain found.
#[derive(Debug, Clone, Default)]
pub struct ChainCheck {
    /// Proofs that verified, in epoch order (the predecessor of the first
    /// epoch asked for comes first when it was fetched).
    pub verified: Vec<SignedProof>,
    /// The first break: its epoch and what is wrong.
    pub broken: Option<(u64, String)>,
}

/// Why one epoch's proof does not hold.
enum Fault {
    /// No proof came (refused, unreachable, not held): nothing proven either way.
    Unanswered(String),
    /// No commitment, or a late one, for the epoch: a break, not proof of cheating.
    Uncommitted(String),
    /// The proof is wrong or contradicts what the peer committed: cheating.
    Invalid(String),
}

impl Fault {
    fn why(self) -> (String, bool) {
        match self {
            Fault::Unanswered(w) | Fault::Uncommitted(w) => (w, false),
            Fault::Invalid(w) => (w, true),
        }
    }
}

/// The root `p` is under must be the one `peer` gossiped at its epoch, in time.
fn bind(roots: &RootRecorder, peer: &PeerId, p: &SignedProof) -> Result<(), Fault> {
    let (e, ev) = (p.evidence.epoch, &p.evidence);
    let c = roots
        .commitment(peer, e)
        .map_err(|e| Fault::Unanswered(e.to_string()))?
        .ok_or_else(|| {
            Fault::Uncommitted(format!(
                "no continuity root of this peer for epoch {e} reached this node (it gossiped none, or before this node was there): a break in its chain"
            ))
        })?;
    if c.root != hex::encode(ev.root) || c.chains != ev.path.chains {
        return Err(Fault::Invalid(format!(
            "its proof for epoch {e} is under root {} ({} chains), not the root {} ({} chains) it gossiped at that epoch: the link was not committed when the epoch came",
            hex::encode(&ev.root[..8]),
            ev.path.chains,
            &c.root[..16.min(c.root.len())],
            c.chains
        )));
    }
    if c.late() {
        return Err(Fault::Uncommitted(format!(
            "its root for epoch {e} reached this node only at epoch {}, more than {COMMITMENT_GRACE_EPOCHS} epochs late: a late commitment is a break",
            c.received_at_head
        )));
    }
    Ok(())
}

impl Continuity {
    /// Asks `peer` for its proof of `replica_root` at `epoch` and checks the
    /// whole chain of evidence against `output` for the `size` the peer
    /// announced, and the root's signature against the peer's own key.
    /// What the root was committed to is [`Self::check_chain`]'s part.
    pub async fn fetch_proof(
        &self,
        net: &Network,
        peer: PeerId,
        replica_root: H,
        size: u64,
        epoch: u64,
        output: H,
    ) -> std::result::Result<SignedProof, String> {
        self.fetch(net, peer, replica_root, size, epoch, output)
            .await
            .map_err(|f| f.why().0)
    }

    async fn fetch(
        &self,
        net: &Network,
        peer: PeerId,
        replica_root: H,
        size: u64,
        epoch: u64,
        output: H,
    ) -> std::result::Result<SignedProof, Fault> {
        let req = ProofRequest { replica_root, epoch }.encode();
        let bytes = match net
            .bytes_request(BytesProtocol::Continuity, peer, req)
            .await
            .map_err(|e| Fault::Unanswered(e.to_string()))?
        {
            Frame::Valid(b) => b,
            Frame::Invalid(e) => return Err(Fault::Invalid(e.to_string())),
        };
        let p = SignedProof::decode(&bytes).map_err(|e| match e.starts_with("refused") {
            true => Fault::Unanswered(e),
            false => Fault::Invalid(e),
        })?;
        if p.evidence.replica_root != replica_root || p.evidence.epoch != epoch {
            return Err(Fault::Invalid("the proof is for another dataset or epoch".into()));
        }
        let s = self.settings();
        p.evidence
            .verify(&output, size, s.chunks, s.group_size, s.region_size)
            .map_err(Fault::Invalid)?;
        let mh = peer.as_ref();
        let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest())
            .map_err(|e| Fault::Invalid(e.to_string()))?;
        let msg = root_message(epoch, p.evidence.path.chains, &p.evidence.root);
        if !pk.verify(&msg, &p.signature) {
            return Err(Fault::Invalid("the root is not signed by that peer".into()));
        }
        Ok(p)
    }

    /// One epoch's proof, verified and bound to the peer's commitment.
    #[allow(clippy::too_many_arguments)]
    async fn check_one(
        &self,
        net: &Network,
        roots: &RootRecorder,
        chain: &Chain,
        peer: PeerId,
        replica_root: H,
        size: u64,
        epoch: u64,
    ) -> std::result::Result<SignedProof, Fault> {
        let output = chain
            .store()
            .get(epoch)
            .map_err(|e| Fault::Unanswered(e.to_string()))?
            .ok_or_else(|| {
                Fault::Unanswered(format!("no epoch {epoch} on this node (head {})", chain.head()))
            })?
            .output;
        let p = self.fetch(net, peer, replica_root, size, epoch, output).await?;
        bind(roots, &peer, &p)?;
        Ok(p)
    }

    /// Checks `peer`'s chain for `replica_root` (announced with `size`
    /// bytes) over epochs `from..=to` (at most [`MAX_CHECK_EPOCHS`]): each
    /// epoch's proof verifies, is under the root the peer gossiped at that
    /// epoch, and extends the link it committed at the epoch before (for
    /// `from`, the predecessor is fetched and checked too). Stops at the
    /// first break; a proof that is wrong or contradicts the peer's own
    /// commitment costs it a failed proof, a missing or late commitment is
    /// reported as a break.
    #[allow(clippy::too_many_arguments)]
    pub async fn check_chain(
        &self,
        net: &Network,
        roots: &RootRecorder,
        chain: &Chain,
        peer: PeerId,
        replica_root: H,
        size: u64,
        from: u64,
        to: u64,
    ) -> ChainCheck {
        let mut out = ChainCheck::default();
        let to = to.min(from.saturating_add(MAX_CHECK_EPOCHS - 1));
        for e in from..=to {
            let step = async {
                let p = self
                    .check_one(net, roots, chain, peer, replica_root, size, e)
                    .await?;
                let ev = &p.evidence;
                match out.verified.last() {
                    Some(q) if ev.prev_epoch == 0 => Err(Fault::Invalid(format!(
                        "its chain starts again at epoch {e} though it committed a link at epoch {}",
                        q.evidence.epoch
                    ))),
                    Some(q) if ev.prev_link != q.evidence.link => Err(Fault::Invalid(format!(
                        "epoch {e} extends a link that is not the one it committed at epoch {}",
                        q.evidence.epoch
                    ))),
                    Some(_) => Ok((None, p)),
                    None if ev.prev_epoch != 0 => {
                        let q = self
                            .check_one(net, roots, chain, peer, replica_root, size, ev.prev_epoch)
                            .await
                            .map_err(|f| {
                                let (why, cheat) = f.why();
                                let why = format!(
                                    "its previous link (epoch {}) does not hold: {why}",
                                    ev.prev_epoch
                                );
                                if cheat {
                                    Fault::Invalid(why)
                                } else {
                                    Fault::Uncommitted(why)
                                }
                            })?;
                        if q.evidence.link != ev.prev_link {
                            return Err(Fault::Invalid(format!(
                                "epoch {e} extends a link that is not the one it committed at epoch {}",
                                ev.prev_epoch
                            )));
                        }
                        Ok((Some(q), p))
                    }
                    None => Ok((None, p)),
                }
            };
            match step.await {
                Ok((q, p)) => {
                    out.verified.extend(q);
                    out.verified.push(p);
                }
                Err(f) => {
                    let (why, cheat) = f.why();
                    tracing::warn!(peer = %peer, epoch = e, dataset = %hex::encode(&replica_root[..8]), error = %why, "continuity chain broken");
                    if cheat {
                        net.penalize(peer, Offence::FailedProof).await;
                    }
                    out.broken = Some((e, why));
                    break;
                }
            }
        }
        out
    }
}
