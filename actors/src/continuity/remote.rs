//! `/vigil/<g8>/continuity/1`: serving this node's continuity proofs, and
//! checking a peer's.

use libp2p::PeerId;
use vigil_protocols::continuity::{root_message, ProofRequest, SignedProof, H};

use super::Continuity;
use crate::epoch::Chain;
use crate::net::codec::Frame;
use crate::net::{BytesReply, BytesServer, Network};

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

impl Continuity {
    /// Asks `peer` for its proof of `replica_root` at `epoch` and checks the
    /// whole chain of evidence against `output` for the `size` the peer
    /// announced, and the root's signature against the peer's own key.
    pub async fn check_remote(
        &self,
        net: &Network,
        peer: PeerId,
        replica_root: H,
        size: u64,
        epoch: u64,
        output: H,
    ) -> std::result::Result<SignedProof, String> {
        let req = ProofRequest { replica_root, epoch }.encode();
        let bytes = match net
            .continuity_request(peer, req)
            .await
            .map_err(|e| e.to_string())?
        {
            Frame::Valid(b) => b,
            Frame::Invalid(e) => return Err(e.to_string()),
        };
        let p = SignedProof::decode(&bytes)?;
        if p.evidence.replica_root != replica_root || p.evidence.epoch != epoch {
            return Err("the proof is for another dataset or epoch".into());
        }
        let s = self.settings();
        p.evidence
            .verify(&output, size, s.chunks, s.group_size, s.region_size)?;
        let mh = peer.as_ref();
        let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).map_err(|e| e.to_string())?;
        let msg = root_message(epoch, p.evidence.path.chains, &p.evidence.root);
        if !pk.verify(&msg, &p.signature) {
            return Err("the root is not signed by that peer".into());
        }
        Ok(p)
    }
}
