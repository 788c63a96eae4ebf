//! Bindings of the settlement contract `PaymentChannel`
//! (`layer2/contracts/src/PaymentChannel.sol`), generated from its committed
//! artifact (ABI and bytecode; `scripts/contracts` checks that it matches a
//! fresh compile): typed calls, events, errors and deployment.

#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    PaymentChannel,
    "contracts/artifacts/PaymentChannel.json"
);
