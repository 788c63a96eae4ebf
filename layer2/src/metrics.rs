//! The adapter's metric names (Prometheus); the node describes them with
//! [`describe`].

/// Gauge: channels by `state`.
pub const CHANNELS: &str = "vigil_layer2_channels";
/// Counter: payments by `direction` (sent, received) and `result`.
pub const PAYMENTS: &str = "vigil_layer2_payments_total";
/// Histogram: a sent payment's propose, co-sign, record round trip, seconds.
pub const PAYMENT_SECONDS: &str = "vigil_layer2_payment_seconds";
/// Counter: disputes sent (a challenge transaction against an old state).
pub const DISPUTES: &str = "vigil_layer2_disputes_total";

/// Describes every metric above to the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(CHANNELS, "Layer2 channels by state");
    metrics::describe_counter!(PAYMENTS, "Layer2 payments by direction and result");
    metrics::describe_histogram!(
        PAYMENT_SECONDS,
        metrics::Unit::Seconds,
        "Layer2 payment latency: propose, co-sign, record"
    );
    metrics::describe_counter!(DISPUTES, "Layer2 disputes sent against an old posted state");
}
