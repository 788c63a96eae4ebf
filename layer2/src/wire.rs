//! The channel protocol's messages, `/vigil/<g8>/channel/1`: one request,
//! one reply, over the node's libp2p connection to the counterparty (which
//! authenticates the peer).
//!
//! ```text
//! Hello                              -> HelloReply { address, chain id, contract }
//! Join { channel, salt, opener, ask } -> Joined { deposit } | Refused
//! Propose { state, sig }              -> CoSigned { sig }   | Refused { why, latest }
//! Ack { channel, nonce }              -> Done
//! ```
//!
//! Encoding: a tag byte, then fixed-width big-endian fields; a reason is a
//! `u16` length and UTF-8. A message is at most [`MAX_FRAME`] bytes; anything
//! longer, shorter, or with an unknown tag is refused with what was wrong.
//!
//! Requests to one peer that wait while another is in flight leave together
//! as one `Batch` (tag 5: a `u16` count, then each message with a `u16`
//! length; at most [`MAX_BATCH`]), answered by one `Batch` of replies in the
//! same order (tag 0x86): under load, many channels' payments share one
//! round trip; alone, a message goes by itself.

use alloy::primitives::{Address, B256};

use crate::state::{SignedState, State};

/// Largest single message either way.
pub const MAX_FRAME: usize = 1024;
/// Most messages in one batch.
pub const MAX_BATCH: usize = 64;
/// Largest batch frame: a tag, a count, and each message with its length.
pub const MAX_BATCH_FRAME: usize = 3 + MAX_BATCH * (2 + MAX_FRAME);
const REQUEST_BATCH: u8 = 5;
const REPLY_BATCH: u8 = 0x86;
/// Longest refusal reason sent.
const MAX_REASON: usize = 400;
const STATE: usize = 32 + 8 + 16 + 16 + 1;

/// A request to the counterparty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Asks for the peer's settlement account and deployment.
    Hello,
    /// The opener's channel is on chain: join it, depositing up to `ask`.
    Join {
        /// Channel id.
        channel: B256,
        /// The opener's salt.
        salt: u64,
        /// The opener's address (party A).
        opener: Address,
        /// What the opener asks the peer to deposit.
        ask: u128,
    },
    /// A new state signed by the proposer: co-sign it.
    Propose {
        /// The state.
        state: State,
        /// The proposer's signature.
        sig: [u8; 65],
    },
    /// The proposer holds both signatures of `nonce`.
    Ack {
        /// Channel id.
        channel: B256,
        /// The nonce.
        nonce: u64,
    },
    /// Several requests, answered by a [`Reply::Batch`] in the same order.
    Batch(Vec<Request>),
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Our settlement account and deployment.
    Hello {
        /// Our address.
        address: Address,
        /// Settlement chain id.
        chain_id: u64,
        /// The contract.
        contract: Address,
    },
    /// Joined with `deposit`.
    Joined {
        /// What we deposited.
        deposit: u128,
    },
    /// Our signature of the proposed state.
    CoSigned {
        /// The signature.
        sig: [u8; 65],
    },
    /// Not done; `latest` is our newest co-signed state when the proposer
    /// seems to be behind it.
    Refused {
        /// Why.
        reason: String,
        /// Our newest co-signed state.
        latest: Option<SignedState>,
    },
    /// Acknowledged.
    Done,
    /// The replies to a [`Request::Batch`], in its order.
    Batch(Vec<Reply>),
}

fn put_state(out: &mut Vec<u8>, s: &State) {
    out.extend_from_slice(s.channelId.as_slice());
    out.extend_from_slice(&s.nonce.to_be_bytes());
    out.extend_from_slice(&s.balanceA.to_be_bytes());
    out.extend_from_slice(&s.balanceB.to_be_bytes());
    out.push(u8::from(s.isFinal));
}

/// Reads fixed fields off a frame, naming what ran short.
struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!(
                "{} frame is truncated: {} more bytes needed, {} left",
                self.what,
                n,
                self.b.len()
            ));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    fn b256(&mut self) -> Result<B256, String> {
        Ok(B256::from(self.array::<32>()?))
    }
    fn address(&mut self) -> Result<Address, String> {
        Ok(Address::from(self.array::<20>()?))
    }
    fn flag(&mut self) -> Result<bool, String> {
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(format!("{} frame: flag byte {x}; 0 or 1 expected", self.what)),
        }
    }
    fn state(&mut self) -> Result<State, String> {
        Ok(State {
            channelId: self.b256()?,
            nonce: self.u64()?,
            balanceA: self.u128()?,
            balanceB: self.u128()?,
            isFinal: self.flag()?,
        })
    }
    fn end(self) -> Result<(), String> {
        match self.b.len() {
            0 => Ok(()),
            n => Err(format!("{} frame has {n} trailing bytes", self.what)),
        }
    }
}

fn check_len(b: &[u8], max: usize) -> Result<(), String> {
    if b.is_empty() {
        return Err("empty channel frame".into());
    }
    if b.len() > max {
        return Err(format!(
            "channel frame of {} bytes; at most {max} allowed",
            b.len()
        ));
    }
    Ok(())
}

fn encode_batch(tag: u8, items: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + items.iter().map(|i| 2 + i.len()).sum::<usize>());
    out.push(tag);
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u16).to_be_bytes());
        out.extend_from_slice(&i);
    }
    out
}

fn decode_batch<T>(b: &[u8], one: fn(&[u8]) -> Result<T, String>) -> Result<Vec<T>, String> {
    check_len(b, MAX_BATCH_FRAME)?;
    let mut r = Reader {
        b: &b[1..],
        what: "batch",
    };
    let n = u16::from_be_bytes(r.array()?) as usize;
    if !(1..=MAX_BATCH).contains(&n) {
        return Err(format!("batch of {n} messages; 1..={MAX_BATCH} allowed"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let len = u16::from_be_bytes(r.array()?) as usize;
        out.push(one(r.take(len)?).map_err(|e| format!("batch message {i}: {e}"))?);
    }
    r.end()?;
    Ok(out)
}

impl Request {
    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + STATE + 65);
        match self {
            Self::Hello => out.push(1),
            Self::Join {
                channel,
                salt,
                opener,
                ask,
            } => {
                out.push(2);
                out.extend_from_slice(channel.as_slice());
                out.extend_from_slice(&salt.to_be_bytes());
                out.extend_from_slice(opener.as_slice());
                out.extend_from_slice(&ask.to_be_bytes());
            }
            Self::Propose { state, sig } => {
                out.push(3);
                put_state(&mut out, state);
                out.extend_from_slice(sig);
            }
            Self::Ack { channel, nonce } => {
                out.push(4);
                out.extend_from_slice(channel.as_slice());
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Self::Batch(items) => {
                return encode_batch(REQUEST_BATCH, items.iter().map(Self::encode).collect())
            }
        }
        out
    }

    /// Parses a frame; the error names what was wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        match b.first() {
            Some(&REQUEST_BATCH) => decode_batch(b, Self::decode_one).map(Self::Batch),
            _ => Self::decode_one(b),
        }
    }

    /// One message, never a batch (batches do not nest).
    fn decode_one(b: &[u8]) -> Result<Self, String> {
        check_len(b, MAX_FRAME)?;
        let mut r = Reader {
            b: &b[1..],
            what: "request",
        };
        let req = match b[0] {
            1 => Self::Hello,
            2 => Self::Join {
                channel: r.b256()?,
                salt: r.u64()?,
                opener: r.address()?,
                ask: r.u128()?,
            },
            3 => Self::Propose {
                state: r.state()?,
                sig: r.array()?,
            },
            4 => Self::Ack {
                channel: r.b256()?,
                nonce: r.u64()?,
            },
            t => {
                return Err(format!(
                    "unknown channel request tag {t}; 1 hello, 2 join, 3 propose, 4 ack"
                ))
            }
        };
        r.end()?;
        Ok(req)
    }
}

impl Reply {
    /// A refusal without a state.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self::Refused {
            reason: reason.into(),
            latest: None,
        }
    }

    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + STATE + 130);
        match self {
            Self::Hello {
                address,
                chain_id,
                contract,
            } => {
                out.push(0x81);
                out.extend_from_slice(address.as_slice());
                out.extend_from_slice(&chain_id.to_be_bytes());
                out.extend_from_slice(contract.as_slice());
            }
            Self::Joined { deposit } => {
                out.push(0x82);
                out.extend_from_slice(&deposit.to_be_bytes());
            }
            Self::CoSigned { sig } => {
                out.push(0x83);
                out.extend_from_slice(sig);
            }
            Self::Refused { reason, latest } => {
                out.push(0x84);
                let mut cut = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.extend_from_slice(&(cut as u16).to_be_bytes());
                out.extend_from_slice(&reason.as_bytes()[..cut]);
                match latest {
                    None => out.push(0),
                    Some(s) => {
                        out.push(1);
                        put_state(&mut out, &s.state);
                        out.extend_from_slice(&s.sig_a);
                        out.extend_from_slice(&s.sig_b);
                    }
                }
            }
            Self::Done => out.push(0x85),
            Self::Batch(items) => return encode_batch(REPLY_BATCH, items.iter().map(Self::encode).collect()),
        }
        out
    }

    /// Parses a frame; the error names what was wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        match b.first() {
            Some(&REPLY_BATCH) => decode_batch(b, Self::decode_one).map(Self::Batch),
            _ => Self::decode_one(b),
        }
    }

    /// One message, never a batch.
    fn decode_one(b: &[u8]) -> Result<Self, String> {
        check_len(b, MAX_FRAME)?;
        let mut r = Reader {
            b: &b[1..],
            what: "reply",
        };
        let reply = match b[0] {
            0x81 => Self::Hello {
                address: r.address()?,
                chain_id: r.u64()?,
                contract: r.address()?,
            },
            0x82 => Self::Joined { deposit: r.u128()? },
            0x83 => Self::CoSigned { sig: r.array()? },
            0x84 => {
                let n = u16::from_be_bytes(r.array()?) as usize;
                if n > MAX_REASON {
                    return Err(format!("refusal reason of {n} bytes; at most {MAX_REASON}"));
                }
                let reason = String::from_utf8(r.take(n)?.to_vec())
                    .map_err(|_| "refusal reason is not UTF-8".to_owned())?;
                let latest = match r.flag()? {
                    false => None,
                    true => Some(SignedState {
                        state: r.state()?,
                        sig_a: r.array()?,
                        sig_b: r.array()?,
                    }),
                };
                Self::Refused { reason, latest }
            }
            0x85 => Self::Done,
            t => return Err(format!("unknown channel reply tag {t:#x}")),
        };
        r.end()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            channelId: B256::repeat_byte(3),
            nonce: 9,
            balanceA: 5,
            balanceB: 7,
            isFinal: true,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let reqs = [
            Request::Hello,
            Request::Join {
                channel: B256::repeat_byte(1),
                salt: 4,
                opener: Address::repeat_byte(2),
                ask: u128::MAX,
            },
            Request::Propose {
                state: state(),
                sig: [6; 65],
            },
            Request::Ack {
                channel: B256::repeat_byte(1),
                nonce: 3,
            },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let replies = [
            Reply::Hello {
                address: Address::repeat_byte(1),
                chain_id: 31337,
                contract: Address::repeat_byte(2),
            },
            Reply::Joined { deposit: 8 },
            Reply::CoSigned { sig: [1; 65] },
            Reply::refused("no"),
            Reply::Refused {
                reason: "behind".into(),
                latest: Some(SignedState {
                    state: state(),
                    sig_a: [2; 65],
                    sig_b: [3; 65],
                }),
            },
            Reply::Done,
        ];
        for r in replies {
            assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn batches_round_trip_and_bad_batches_are_refused() {
        let items = vec![
            Request::Propose {
                state: state(),
                sig: [6; 65],
            },
            Request::Ack {
                channel: B256::repeat_byte(1),
                nonce: 3,
            },
        ];
        let b = Request::Batch(items.clone());
        assert_eq!(Request::decode(&b.encode()).unwrap(), b);
        let r = Reply::Batch(vec![Reply::CoSigned { sig: [1; 65] }, Reply::Done]);
        assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        let nested = Request::Batch(vec![Request::Batch(items.clone())]).encode();
        assert!(Request::decode(&nested).unwrap_err().contains("batch message 0"));
        let empty = Request::Batch(vec![]).encode();
        assert!(Request::decode(&empty).unwrap_err().contains("batch of 0"));
        let many = Request::Batch(vec![Request::Hello; MAX_BATCH + 1]).encode();
        assert!(Request::decode(&many).unwrap_err().contains("1..=64"));
        let mut cut = b.encode();
        cut.truncate(cut.len() - 3);
        assert!(Request::decode(&cut).unwrap_err().contains("truncated"));
    }

    #[test]
    fn malformed_frames_are_refused_with_what_was_wrong() {
        let e = |b: &[u8]| Request::decode(b).unwrap_err();
        assert!(e(&[]).contains("empty"));
        assert!(e(&[9]).contains("unknown channel request tag 9"));
        assert!(e(&[3, 0, 0]).contains("truncated"));
        let mut ok = Request::Hello.encode();
        ok.push(0);
        assert!(e(&ok).contains("1 trailing bytes"));
        assert!(e(&vec![3; MAX_FRAME + 1]).contains("at most 1024"));
        let mut p = Request::Propose {
            state: state(),
            sig: [0; 65],
        }
        .encode();
        p[1 + STATE - 1] = 2;
        assert!(e(&p).contains("flag byte 2"));
        let long = Reply::refused("x".repeat(2000)).encode();
        assert!(long.len() <= MAX_FRAME);
        assert!(Reply::decode(&[0x84, 0xff, 0xff])
            .unwrap_err()
            .contains("at most 400"));
    }
}
