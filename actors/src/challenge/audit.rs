//! Audits: now and then the verifier asks a prover for one leaf both as
//! replica and as plaintext and recomputes that sector's encoding, to check
//! that `R_p` really encodes `R` for the prover's identity.
//!
//! Every verifier audits each announced dataset of a connected peer once in
//! `audit_period` epochs (genesis `security.audit_period_epochs`), in a slot
//! fixed by its own id, the prover and the replica root, so the audits of one
//! prover spread over the period. An audit that is not answered correctly
//! within `audit_deadline` — a wrong leaf, a refusal, a dropped stream, a
//! timeout, a transport error — is a failed proof: scored as one, logged at
//! warn, published and attested with its reason. A prover whose replica does
//! not encode its plaintext therefore fails within `audit_period` epochs of
//! every verifier it is connected to.
//!
//! A prover serves one audit at a time and a share per verifier
//! ([`crate::net::limits`]); past that it answers "busy" with a wait. The
//! verifier waits and asks again until the deadline; busy until then is
//! [`AUDIT_BUSY`]: neither a failure nor a pass (no credit, no attestation),
//! so a prover that always claims to be busy earns nothing, exactly as one
//! that is offline.

use libp2p::PeerId;
use rand::Rng;
use vigil_protocols::availability::challenge::{Request, Response};
use vigil_protocols::availability::encode::{keystream, SECTOR};
use vigil_protocols::availability::tree::{leaves, verify_leaf, LEAF};

use super::{ChallengeResult, Challenger};
use crate::metrics as m;
use crate::net::codec::Frame;
use crate::net::Offence;
use crate::storage::{parse_root, Announced};
use crate::{Error, Result};

/// Outcome of a passed audit.
pub const AUDIT_OK: &str = "audit_ok";
/// Outcome of a failed audit.
pub const AUDIT_FAILED: &str = "audit_failed";
/// Outcome of an audit the prover was too busy for until the deadline.
pub const AUDIT_BUSY: &str = "audit_busy";

/// Whether `(peer, dataset)` is due for an audit by verifier `me` at
/// `epoch`: true once in every `period` consecutive epochs.
pub fn due(me: &PeerId, peer: &PeerId, replica_root: &str, epoch: u64, period: u64) -> bool {
    if period == 0 {
        return false;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"vigil/audit-slot/v1");
    h.update(&me.to_bytes());
    h.update(&peer.to_bytes());
    h.update(replica_root.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    (epoch.wrapping_add(u64::from_le_bytes(b) % period)) % period == 0
}

impl Challenger {
    /// Audits `a` of `peer`, records the result (stats, bus, attestation)
    /// and scores a failure as a failed proof. `epoch` names the round.
    pub async fn audit(&self, peer: PeerId, a: &Announced, epoch: u64) -> Result<ChallengeResult> {
        let r = self.audit_once(peer, a, epoch).await?;
        self.record(peer, &r).await;
        if r.outcome == AUDIT_BUSY {
            metrics::counter!(m::AUDITS, "result" => "busy").increment(1);
            tracing::info!(%peer, dataset = %a.replica_root, "audit not answered: the prover stayed busy until the deadline (not a failure)");
        } else if r.outcome == AUDIT_FAILED {
            metrics::counter!(m::AUDITS, "result" => "failed").increment(1);
            tracing::warn!(%peer, dataset = %a.replica_root, why = r.detail.as_deref(), "audit failed: scored as a failed proof");
            self.inner.net.penalize(peer, Offence::FailedProof).await;
        } else {
            metrics::counter!(m::AUDITS, "result" => "ok").increment(1);
            tracing::info!(%peer, dataset = %a.replica_root, "audit passed: the replica encodes the plaintext");
        }
        Ok(r)
    }

    /// Audits every due `(peer, dataset)` of `cands` at `epoch`, at most two at a time.
    pub(super) fn audit_due(&self, cands: &[(PeerId, Announced)], epoch: u64) {
        let me = self.inner.net.peer_id();
        let period = self.inner.settings.audit_period;
        for (peer, a) in cands
            .iter()
            .filter(|(p, a)| due(&me, p, &a.replica_root, epoch, period))
        {
            let (c, peer, a) = (self.clone(), *peer, a.clone());
            tokio::spawn(async move {
                let Ok(_permit) = c.inner.audits.acquire().await else {
                    return;
                };
                if let Err(e) = c.audit(peer, &a, epoch).await {
                    tracing::error!(%peer, dataset = %a.replica_root, error = %e, "cannot audit");
                }
            });
        }
    }

    /// One audit round trip and its verdict; `Err` only for this node's own faults.
    async fn audit_once(&self, peer: PeerId, a: &Announced, epoch: u64) -> Result<ChallengeResult> {
        let replica_root = parse_root(&a.replica_root)?;
        let root = parse_root(&a.root)?;
        let index = rand::thread_rng().gen_range(0..leaves(a.size));
        let deadline = self.inner.settings.audit_deadline;
        let end = tokio::time::Instant::now() + deadline;
        let (answer, rtt) = loop {
            let t0 = tokio::time::Instant::now();
            let answer = tokio::time::timeout_at(
                end,
                self.inner
                    .net
                    .challenge(peer, Request::Audit { replica_root, index }),
            )
            .await;
            let Ok(Ok((Frame::Valid(Response::Busy(ms)), _))) = &answer else {
                break (answer, t0.elapsed());
            };
            let retry = tokio::time::Instant::now() + std::time::Duration::from_millis(u64::from(*ms));
            if retry >= end {
                return Ok(ChallengeResult {
                    peer: peer.to_string(),
                    dataset: a.replica_root.clone(),
                    epoch,
                    outcome: AUDIT_BUSY,
                    detail: Some(format!("busy; asked to wait {ms} ms, past the deadline")),
                    latency_ms: 0.0,
                    ping_ms: None,
                    allowance_ms: 0.0,
                    proof_bytes: 0,
                });
            }
            tokio::time::sleep_until(retry).await;
        };
        let cost = self.inner.storage.cost();
        let size = a.size;
        let verdict: std::result::Result<(), String> = match answer {
            Err(_) => Err(format!(
                "no answer within the {} ms audit deadline",
                deadline.as_millis()
            )),
            Ok(Err(e)) => Err(format!("no answer: {e}")),
            Ok(Ok((frame, _))) => tokio::task::spawn_blocking(move || {
                check(peer, &root, &replica_root, size, index, cost, frame)
            })
            .await
            .map_err(|e| Error::Invalid(format!("audit check failed: {e}")))?,
        };
        Ok(ChallengeResult {
            peer: peer.to_string(),
            dataset: a.replica_root.clone(),
            epoch,
            outcome: if verdict.is_ok() { AUDIT_OK } else { AUDIT_FAILED },
            detail: verdict.err(),
            latency_ms: rtt.as_secs_f64() * 1000.0,
            ping_ms: None,
            allowance_ms: 0.0,
            proof_bytes: 0,
        })
    }
}

/// Does the answer show leaf `index` of a replica of `root` encoded for `peer`?
fn check(
    peer: PeerId,
    root: &[u8; 32],
    replica_root: &[u8; 32],
    size: u64,
    index: u64,
    cost: u32,
    frame: Frame<Response>,
) -> std::result::Result<(), String> {
    let (replica, plain) = match frame {
        Frame::Valid(Response::Audit { replica, plain }) => (replica, plain),
        Frame::Valid(Response::Refused(why)) => return Err(format!("refused: {why}")),
        Frame::Valid(Response::Missing) => return Err("answered that it does not store the dataset".into()),
        Frame::Valid(Response::Proofs(_)) => return Err("answered proofs to an audit".into()),
        Frame::Valid(Response::Busy(_)) => return Err("busy".into()),
        Frame::Invalid(e) => return Err(format!("malformed answer: {e}")),
    };
    if replica.index != index || plain.index != index {
        return Err(format!("answered for another leaf than {index}"));
    }
    verify_leaf(replica_root, size, index, &replica.leaf, &replica.siblings)
        .map_err(|e| format!("replica leaf: {e}"))?;
    verify_leaf(root, size, index, &plain.leaf, &plain.siblings)
        .map_err(|e| format!("plaintext leaf: {e}"))?;
    let off = index * LEAF as u64;
    let ks = keystream(&peer.to_bytes(), root, off / SECTOR as u64, cost);
    let at = (off % SECTOR as u64) as usize;
    let encoded: Vec<u8> = plain.leaf.iter().zip(&ks[at..]).map(|(p, k)| p ^ k).collect();
    if encoded == replica.leaf {
        Ok(())
    } else {
        Err(format!(
            "leaf {index} of the replica is not the encoding of the plaintext"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dataset_is_due_once_per_period() {
        let (me, peer) = (PeerId::random(), PeerId::random());
        for period in [1u64, 2, 3, 10] {
            for root in ["aa", "bb", "cc"] {
                for start in [0u64, 7, 1000] {
                    let n = (start..start + period)
                        .filter(|&e| due(&me, &peer, root, e, period))
                        .count();
                    assert_eq!(n, 1, "period {period}, root {root}, from epoch {start}");
                }
            }
        }
        assert!(
            !(0..100).any(|e| due(&me, &peer, "aa", e, 0)),
            "period 0 never audits"
        );
    }
}
