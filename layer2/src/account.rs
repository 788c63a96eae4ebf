//! A node's account on the settlement chain: a secp256k1 key. The node
//! keeps it in `account.key` beside `node.key`, encrypted the same way
//! (`vigil init` creates it under the node's passphrase); `vigil dev` uses
//! anvil's first well-known funded key, unencrypted, and says so.

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;

use crate::Layer2Error;

/// anvil's (and hardhat's) first well-known account: funded on every dev
/// chain, known to everyone. Only `vigil dev` uses it.
pub const ANVIL_DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// A secp256k1 account key.
#[derive(Clone)]
pub struct Account {
    signer: PrivateKeySigner,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl Account {
    /// A new random key.
    pub fn generate() -> Self {
        Self {
            signer: PrivateKeySigner::random(),
        }
    }

    /// anvil's first well-known funded key ([`ANVIL_DEV_KEY`]).
    pub fn anvil_dev() -> Self {
        Self {
            signer: ANVIL_DEV_KEY.parse().expect("a valid key"),
        }
    }

    /// From the 32 secret bytes; refused if they are not a valid secp256k1 scalar.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, Layer2Error> {
        let bytes: [u8; 32] = secret
            .try_into()
            .map_err(|_| Layer2Error::Invalid(format!("{} bytes; an account key is 32", secret.len())))?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(bytes))
            .map_err(|e| Layer2Error::Invalid(format!("not a secp256k1 key: {e}")))?;
        Ok(Self { signer })
    }

    /// The 32 secret bytes, wiped when dropped.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signer.to_bytes().0)
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Whether this is the well-known dev key.
    pub fn is_anvil_dev(&self) -> bool {
        self.address() == Self::anvil_dev().address()
    }

    /// The signer (EIP-712 states, transactions).
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_round_trips_through_its_bytes_and_bad_bytes_are_refused() {
        let a = Account::generate();
        let b = Account::from_bytes(a.to_bytes().as_ref()).unwrap();
        assert_eq!(a.address(), b.address());
        assert!(Account::from_bytes(&[0u8; 32]).is_err(), "zero is no key");
        assert!(Account::from_bytes(&[1u8; 31]).is_err());
        let dev = Account::anvil_dev();
        assert!(dev.is_anvil_dev() && !a.is_anvil_dev());
        assert_eq!(
            dev.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }
}
