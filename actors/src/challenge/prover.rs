//! The prover: answers `/vigil/<g8>/challenge/1` from the stored replicas.
//! Requests for an epoch it does not hold, or whose indices are not the
//! ones derived from that epoch's output, are refused.

use libp2p::PeerId;
use vigil_protocols::availability::challenge::{check_request, Request, Response};

use crate::epoch::Chain;
use crate::metrics as m;
use crate::net::{ChallengeReply, ChallengeServer};
use crate::storage::Storage;

/// Epochs behind our head a challenge may name.
const EPOCH_WINDOW: u64 = 16;

/// Answers challenges.
#[derive(Debug)]
pub struct Prover {
    storage: Storage,
    chain: Chain,
}

impl Prover {
    /// A prover over `storage`, checking epochs against `chain`.
    pub fn new(storage: Storage, chain: Chain) -> Self {
        Self { storage, chain }
    }

    /// The answer to `req` (blocking: disk reads, and for audits the encoding).
    pub fn answer(&self, req: &Request) -> Response {
        let r = match req {
            Request::Challenge(c) => {
                let head = self.chain.head();
                if c.epoch > head || c.epoch + EPOCH_WINDOW < head || c.epoch == 0 {
                    return refused(format!(
                        "epoch {} is not one of ours (head {head}, window {EPOCH_WINDOW})",
                        c.epoch
                    ));
                }
                let output = match self.chain.store().get(c.epoch) {
                    Ok(Some(e)) => e.output,
                    _ => return refused(format!("epoch {} is not stored here", c.epoch)),
                };
                let info = match self.storage.info(&c.replica_root) {
                    Ok(Some(i)) => i,
                    _ => return counted(Response::Missing),
                };
                if let Err(why) = check_request(c, &output, info.size) {
                    return refused(why);
                }
                self.storage
                    .prove(&c.replica_root, &c.indices, &c.nonce)
                    .map(|p| match p {
                        Some(p) => Response::Proofs(p),
                        None => Response::Missing,
                    })
            }
            Request::Audit { replica_root, index } => {
                self.storage.audit(replica_root, *index).map(|a| match a {
                    Some((replica, plain)) => Response::Audit { replica, plain },
                    None => Response::Missing,
                })
            }
        };
        counted(r.unwrap_or_else(|e| Response::Refused(e.to_string())))
    }
}

fn refused(why: String) -> Response {
    counted(Response::Refused(why))
}

fn counted(r: Response) -> Response {
    let answer = match &r {
        Response::Proofs(_) => "proofs",
        Response::Audit { .. } => "audit",
        Response::Missing => "missing",
        Response::Refused(_) => "refused",
        Response::Busy(_) => "busy",
    };
    metrics::counter!(m::CHALLENGES_ANSWERED, "answer" => answer).increment(1);
    r
}

impl ChallengeServer for Prover {
    fn serve(&self, from: PeerId, req: Request, reply: ChallengeReply) {
        let me = Self {
            storage: self.storage.clone(),
            chain: self.chain.clone(),
        };
        tokio::spawn(async move {
            let resp = tokio::task::spawn_blocking(move || me.answer(&req))
                .await
                .unwrap_or_else(|e| Response::Refused(format!("internal error: {e}")));
            if let Response::Refused(why) = &resp {
                tracing::debug!(peer = %from, why, "challenge refused");
            }
            reply.send(resp).await;
        });
    }
}
