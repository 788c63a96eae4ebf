//! The settlement contract as the adapter drives it: typed calls through
//! alloy, one transaction at a time per account, reverts decoded to the
//! contract's error names.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use tokio::sync::Mutex;

use crate::contract::PaymentChannel::{self, PaymentChannelErrors, PaymentChannelInstance};
use crate::state::SignedState;
use crate::{Account, Layer2Error};

/// A channel as the contract holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnChain {
    /// 0 none, 1 opening, 2 open, 3 closing, 4 closed.
    pub status: u8,
    /// Party A.
    pub a: Address,
    /// Party B.
    pub b: Address,
    /// A's deposit.
    pub deposit_a: u128,
    /// B's deposit.
    pub deposit_b: u128,
    /// Posted nonce (closing, closed).
    pub nonce: u64,
    /// Last block of the challenge window.
    pub deadline: u64,
    /// Posted balance of A.
    pub balance_a: u128,
    /// Posted balance of B.
    pub balance_b: u128,
}

/// Contract status values.
pub mod status {
    /// Unknown id.
    pub const NONE: u8 = 0;
    /// Waiting for B.
    pub const OPENING: u8 = 1;
    /// Payments flow.
    pub const OPEN: u8 = 2;
    /// Window running.
    pub const CLOSING: u8 = 3;
    /// Paid out.
    pub const CLOSED: u8 = 4;
}

/// Deploys `PaymentChannel` with a challenge window of `challenge_blocks`
/// blocks from `account`; its address.
pub async fn deploy(url: &str, account: &Account, challenge_blocks: u64) -> Result<Address, Layer2Error> {
    let c = PaymentChannel::deploy(provider(url, account)?, challenge_blocks)
        .await
        .map_err(|e| chain_err("deploy", e))?;
    Ok(*c.address())
}

/// A provider for the JSON-RPC at `url` that signs as `account`.
fn provider(url: &str, account: &Account) -> Result<DynProvider, Layer2Error> {
    let parsed = url
        .parse()
        .map_err(|e| Layer2Error::Invalid(format!("settlement RPC URL `{url}`: {e}")))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(account.signer().clone()))
        .connect_http(parsed)
        .erased())
}

/// The contract through one account.
#[derive(Debug)]
pub struct Chain {
    provider: DynProvider,
    contract: PaymentChannelInstance<DynProvider>,
    from: Address,
    sending: Mutex<()>,
}

fn chain_err(what: &str, e: alloy::contract::Error) -> Layer2Error {
    match e.as_decoded_interface_error::<PaymentChannelErrors>() {
        Some(decoded) => Layer2Error::Chain(format!("{what} reverted: {decoded:?}")),
        None => Layer2Error::Chain(format!("{what}: {e}")),
    }
}

fn sol(s: &SignedState) -> PaymentChannel::State {
    PaymentChannel::State {
        channelId: s.state.channelId,
        nonce: s.state.nonce,
        balanceA: s.state.balanceA,
        balanceB: s.state.balanceB,
        isFinal: s.state.isFinal,
    }
}

impl Chain {
    /// Connects to the JSON-RPC at `url`, sending as `account`.
    pub fn connect(url: &str, account: &Account, contract: Address) -> Result<Self, Layer2Error> {
        let provider = provider(url, account)?;
        Ok(Self {
            contract: PaymentChannel::new(contract, provider.clone()),
            provider,
            from: account.address(),
            sending: Mutex::new(()),
        })
    }

    /// The chain id the RPC answers.
    pub async fn chain_id(&self) -> Result<u64, Layer2Error> {
        self.provider
            .get_chain_id()
            .await
            .map_err(|e| Layer2Error::Chain(format!("eth_chainId: {e}")))
    }

    /// Whether code is deployed at the contract address.
    pub async fn has_code(&self) -> Result<bool, Layer2Error> {
        let code = self
            .provider
            .get_code_at(*self.contract.address())
            .await
            .map_err(|e| Layer2Error::Chain(format!("eth_getCode: {e}")))?;
        Ok(!code.is_empty())
    }

    /// The current block height.
    pub async fn height(&self) -> Result<u64, Layer2Error> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| Layer2Error::Chain(format!("eth_blockNumber: {e}")))
    }

    /// Channel `id` as the contract holds it now.
    pub async fn read(&self, id: B256) -> Result<OnChain, Layer2Error> {
        let c = self
            .contract
            .channels(id)
            .call()
            .await
            .map_err(|e| chain_err("channels()", e))?;
        Ok(OnChain {
            status: c.status,
            a: c.a,
            b: c.b,
            deposit_a: c.depositA,
            deposit_b: c.depositB,
            nonce: c.nonce,
            deadline: c.deadline,
            balance_a: c.balanceA,
            balance_b: c.balanceB,
        })
    }

    /// Sends a call, one at a time for this account, with the nonce from
    /// the mined state.
    async fn send(
        &self,
        what: &str,
        call: alloy::contract::CallBuilder<
            &DynProvider,
            std::marker::PhantomData<impl alloy::sol_types::SolCall>,
        >,
    ) -> Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, Layer2Error> {
        let _one = self.sending.lock().await;
        call.nonce(self.next_nonce().await?)
            .send()
            .await
            .map_err(|e| chain_err(what, e))
    }

    /// Sends a call and waits for it to be mined; the gas it used.
    async fn mined(
        &self,
        what: &str,
        call: alloy::contract::CallBuilder<
            &DynProvider,
            std::marker::PhantomData<impl alloy::sol_types::SolCall>,
        >,
    ) -> Result<u64, Layer2Error> {
        let r = self
            .send(what, call)
            .await?
            .get_receipt()
            .await
            .map_err(|e| Layer2Error::Chain(format!("{what}: no receipt: {e}")))?;
        if !r.status() {
            return Err(Layer2Error::Chain(format!(
                "{what} reverted in transaction {}",
                r.transaction_hash
            )));
        }
        Ok(r.gas_used)
    }

    /// Sends a call without waiting for it to be mined (the watcher checks
    /// the contract at every head instead); its transaction hash.
    async fn sent(
        &self,
        what: &str,
        call: alloy::contract::CallBuilder<
            &DynProvider,
            std::marker::PhantomData<impl alloy::sol_types::SolCall>,
        >,
    ) -> Result<B256, Layer2Error> {
        Ok(*self.send(what, call).await?.tx_hash())
    }

    /// The account's next nonce by the chain's *mined* state, asked before
    /// every transaction: after a reorg dropped one, the next transaction
    /// reuses its nonce instead of waiting forever behind a gap (a cached
    /// nonce would).
    async fn next_nonce(&self) -> Result<u64, Layer2Error> {
        self.provider
            .get_transaction_count(self.from)
            .await
            .map_err(|e| Layer2Error::Chain(format!("eth_getTransactionCount: {e}")))
    }

    /// Opens a channel with `b`, depositing `value`.
    pub async fn open(&self, b: Address, salt: u64, value: u128) -> Result<u64, Layer2Error> {
        self.mined("open", self.contract.open(b, salt).value(U256::from(value)))
            .await
    }

    /// Joins channel `id`, depositing `value`.
    pub async fn join(&self, id: B256, value: u128) -> Result<u64, Layer2Error> {
        self.mined("join", self.contract.join(id).value(U256::from(value)))
            .await
    }

    /// Takes the opener's deposit back before anyone joined.
    pub async fn cancel(&self, id: B256) -> Result<u64, Layer2Error> {
        self.mined("cancel", self.contract.cancel(id)).await
    }

    /// Closes at once with a final co-signed state.
    pub async fn cooperative_close(&self, s: &SignedState) -> Result<u64, Layer2Error> {
        let call = self
            .contract
            .cooperativeClose(sol(s), s.sig_a.to_vec().into(), s.sig_b.to_vec().into());
        self.mined("cooperativeClose", call).await
    }

    /// Posts the latest co-signed state; the challenge window starts.
    pub async fn close(&self, s: &SignedState) -> Result<u64, Layer2Error> {
        let call = self
            .contract
            .close(sol(s), s.sig_a.to_vec().into(), s.sig_b.to_vec().into());
        self.mined("close", call).await
    }

    /// Posts the deposits as they are (nothing was ever co-signed).
    pub async fn close_with_deposits(&self, id: B256) -> Result<u64, Layer2Error> {
        self.mined("closeWithDeposits", self.contract.closeWithDeposits(id))
            .await
    }

    /// Replaces a posted state with a newer co-signed one.
    pub async fn challenge(&self, s: &SignedState) -> Result<B256, Layer2Error> {
        let call = self
            .contract
            .challenge(sol(s), s.sig_a.to_vec().into(), s.sig_b.to_vec().into());
        self.sent("challenge", call).await
    }

    /// Pays out a posted state after its window.
    pub async fn finalize(&self, id: B256) -> Result<B256, Layer2Error> {
        self.sent("finalize", self.contract.finalize(id)).await
    }
}
