//! Channel states: EIP-712 typed data that both parties sign, exactly as
//! the settlement contract checks them.
//!
//! ```text
//! State(bytes32 channelId,uint64 nonce,uint128 balanceA,uint128 balanceB,bool isFinal)
//! domain: name "vigil-channel", version "1", chainId, verifyingContract
//! ```
//!
//! The domain binds a signature to one chain and one deployment, the
//! channel id to both parties and the opener's salt, the nonce orders states.
//! A signature is 65 bytes `r ‖ s ‖ v` with `v` 27 or 28 and a low `s`.

use alloy::primitives::{keccak256, Address, Signature, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct, SolValue};

use crate::Layer2Error;

alloy::sol! {
    /// What both parties sign.
    #[derive(Debug, PartialEq, Eq)]
    struct State {
        bytes32 channelId;
        uint64 nonce;
        uint128 balanceA;
        uint128 balanceB;
        bool isFinal;
    }
}

/// The EIP-712 domain of the contract at `contract` on chain `chain_id`.
pub fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    eip712_domain! {
        name: "vigil-channel",
        version: "1",
        chain_id: chain_id,
        verifying_contract: contract,
    }
}

/// The id of the channel `a` opens with `b` under `salt`:
/// `keccak256(abi.encode(a, b, salt))`, as the contract computes it.
pub fn channel_id(a: Address, b: Address, salt: u64) -> B256 {
    keccak256((a, b, salt).abi_encode())
}

impl State {
    /// The digest both parties sign under `domain`.
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        self.eip712_signing_hash(domain)
    }

    /// `key`'s signature of this state: 65 bytes, `v` 27 or 28 (RFC 6979,
    /// low `s`: the same bytes alloy's signer makes, 2-3x faster).
    pub fn sign(&self, key: &PrivateKeySigner, domain: &Eip712Domain) -> Result<[u8; 65], Layer2Error> {
        let sk = secp256k1::SecretKey::from_byte_array(&key.to_bytes().0)
            .map_err(|e| Layer2Error::BadSignature(format!("cannot sign: {e}")))?;
        let msg = secp256k1::Message::from_digest(self.digest(domain).0);
        let (id, rs) = secp().sign_ecdsa_recoverable(&msg, &sk).serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&rs);
        out[64] = 27 + i32::from(id) as u8;
        Ok(out)
    }

    /// Checks that `sig` is `signer`'s signature of this state, with the
    /// contract's rules (65 bytes, low `s`, `v` 27 or 28).
    pub fn verify(&self, sig: &[u8], signer: Address, domain: &Eip712Domain) -> Result<(), Layer2Error> {
        let bytes: &[u8; 65] = sig
            .try_into()
            .map_err(|_| Layer2Error::BadSignature(format!("{} bytes; a signature is 65", sig.len())))?;
        if !matches!(bytes[64], 27 | 28) {
            return Err(Layer2Error::BadSignature(format!(
                "v = {}; 27 or 28 expected",
                bytes[64]
            )));
        }
        let parsed =
            Signature::from_raw_array(bytes).map_err(|e| Layer2Error::BadSignature(e.to_string()))?;
        if parsed.normalize_s().is_some() {
            return Err(Layer2Error::BadSignature(
                "a high s (the malleable twin of a signature)".into(),
            ));
        }
        let who = recover(&self.digest(domain), bytes)?;
        if who != signer {
            return Err(Layer2Error::BadSignature(format!(
                "signed by {who}, not by {signer}"
            )));
        }
        Ok(())
    }
}

fn secp() -> &'static secp256k1::Secp256k1<secp256k1::All> {
    static CTX: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::All>> = std::sync::OnceLock::new();
    CTX.get_or_init(secp256k1::Secp256k1::new)
}

/// The address that signed `digest` with `sig` (`v` checked by the caller).
fn recover(digest: &B256, sig: &[u8; 65]) -> Result<Address, Layer2Error> {
    let bad = |e: secp256k1::Error| Layer2Error::BadSignature(e.to_string());
    let id = secp256k1::ecdsa::RecoveryId::try_from(i32::from(sig[64] - 27)).map_err(bad)?;
    let rs = secp256k1::ecdsa::RecoverableSignature::from_compact(&sig[..64], id).map_err(bad)?;
    let key = secp()
        .recover_ecdsa(&secp256k1::Message::from_digest(digest.0), &rs)
        .map_err(bad)?;
    Ok(Address::from_raw_public_key(&key.serialize_uncompressed()[1..]))
}

/// A state with both parties' signatures: what either may post on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedState {
    /// The state.
    pub state: State,
    /// Party A's (the opener's) signature.
    pub sig_a: [u8; 65],
    /// Party B's signature.
    pub sig_b: [u8; 65],
}

impl SignedState {
    /// `state` with our signature and theirs, placed by which party we are.
    pub fn from_sides(state: State, ours: [u8; 65], theirs: [u8; 65], ours_is_a: bool) -> Self {
        let (sig_a, sig_b) = if ours_is_a { (ours, theirs) } else { (theirs, ours) };
        Self { state, sig_a, sig_b }
    }

    /// Checks both signatures.
    pub fn verify(&self, a: Address, b: Address, domain: &Eip712Domain) -> Result<(), Layer2Error> {
        self.state.verify(&self.sig_a, a, domain)?;
        self.state.verify(&self.sig_b, b, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(nonce: u64) -> State {
        State {
            channelId: B256::repeat_byte(7),
            nonce,
            balanceA: 3,
            balanceB: 1,
            isFinal: false,
        }
    }

    #[test]
    fn a_signature_verifies_for_its_state_signer_and_domain_only() {
        let (ka, kb) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let d = domain(31337, Address::repeat_byte(1));
        let s = state(4);
        let sig = s.sign(&ka, &d).unwrap();
        s.verify(&sig, ka.address(), &d).unwrap();
        assert!(s.verify(&sig, kb.address(), &d).is_err(), "another signer");
        assert!(state(5).verify(&sig, ka.address(), &d).is_err(), "another state");
        let other_chain = domain(1, Address::repeat_byte(1));
        assert!(
            s.verify(&sig, ka.address(), &other_chain).is_err(),
            "another chain"
        );
        let other_contract = domain(31337, Address::repeat_byte(2));
        assert!(
            s.verify(&sig, ka.address(), &other_contract).is_err(),
            "another contract"
        );
        assert!(s.verify(&sig[..64], ka.address(), &d).is_err(), "truncated");
        // The malleable twin: s' = n - s, v flipped.
        let n = alloy::primitives::U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .unwrap();
        let mut twin = sig;
        let s_val = alloy::primitives::U256::from_be_slice(&sig[32..64]);
        twin[32..64].copy_from_slice(&(n - s_val).to_be_bytes::<32>());
        twin[64] = if sig[64] == 27 { 28 } else { 27 };
        let e = s.verify(&twin, ka.address(), &d).unwrap_err();
        assert!(e.to_string().contains("high s"), "{e}");
    }

    #[test]
    fn the_channel_id_binds_both_parties_and_the_salt() {
        let (a, b) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb));
        assert_ne!(channel_id(a, b, 1), channel_id(b, a, 1));
        assert_ne!(channel_id(a, b, 1), channel_id(a, b, 2));
    }
}
