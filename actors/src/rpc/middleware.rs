//! Per-method request counters and latency histograms.

use std::future::Future;
use std::time::Instant;

use jsonrpsee::server::middleware::rpc::{Batch, Notification, Request, RpcServiceT};
use jsonrpsee::MethodResponse;

use crate::metrics as m;

/// Wraps the RPC service and records `vigil_rpc_*` metrics.
#[derive(Debug, Clone)]
pub(super) struct Metered<S> {
    inner: S,
}

impl<S> Metered<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> RpcServiceT for Metered<S>
where
    S: RpcServiceT<MethodResponse = MethodResponse> + Send + Sync + Clone + 'static,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        // Unknown names share one label so a caller cannot blow up cardinality.
        let method = super::roles::known(req.method_name());
        let inner = self.inner.clone();
        async move {
            let t0 = Instant::now();
            let resp = inner.call(req).await;
            let result = if resp.is_success() { "ok" } else { "error" };
            metrics::counter!(m::RPC_REQUESTS, "method" => method, "result" => result).increment(1);
            metrics::histogram!(m::RPC_DURATION, "method" => method).record(t0.elapsed().as_secs_f64());
            resp
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}
