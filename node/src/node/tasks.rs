//! Background tasks of a running node: metrics upkeep, audit checkpoints,
//! expiry of abandoned uploads; and the metrics recorder they feed.

use super::*;

/// How often histogram samples are folded into their buckets (the
/// exporter's own default for `install`).
pub(super) const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`METRICS_UPKEEP_EVERY`].
/// With `install_recorder` the exporter keeps every observation until this
/// upkeep (or a scrape) drains it: a node nobody scrapes would grow by about
/// 8 bytes per observation, one per confirmed publish among others.
/// The same tick samples the database's size on disk (a directory walk,
/// too slow to do on every scrape of a large store).
pub(super) fn spawn_metrics_upkeep(handle: PrometheusHandle, db: SledStore) {
    tokio::spawn(async move {
        let size = metrics::gauge!(vigil_actors::metrics::STORAGE_DB_SIZE);
        let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
        loop {
            tick.tick().await;
            handle.run_upkeep();
            let db = db.clone();
            if let Ok(bytes) = tokio::task::spawn_blocking(move || db.size_on_disk()).await {
                size.set(bytes as f64);
            }
        }
    });
}

pub(super) fn install_metrics() -> Result<PrometheusHandle> {
    vigil_actors::metrics::recorder()
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// How often the audit log's head is signed into `audit.checkpoints` (when
/// it moved); also at start and at shutdown.
pub(super) const AUDIT_CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

pub(super) fn checkpoint_audit(c: &Checkpoints, audit: &Audit) {
    match c.write(audit) {
        Ok(Some(cp)) => tracing::debug!(entries = cp.entries, "audit checkpoint signed"),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot write an audit checkpoint: a cut-off audit log would go unnoticed until the next one")
        }
    }
}

pub(super) fn spawn_audit_checkpoints(c: Arc<Checkpoints>, audit: Audit) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(AUDIT_CHECKPOINT_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let (c, audit) = (c.clone(), audit.clone());
            // A signature and an fsync: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || checkpoint_audit(&c, &audit)).await;
        }
    });
}

/// An upload that gets no chunk for this long is aborted (its client went
/// away before sending everything).
pub(super) const UPLOAD_IDLE: Duration = Duration::from_secs(600);

/// Aborts idle uploads every minute, audited (`storage.put_expired`).
pub(super) fn spawn_upload_expiry(storage: Storage, audit: Audit) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            for job in storage.expire_uploads(UPLOAD_IDLE) {
                tracing::warn!(job = job.job, name = %job.name, uploaded = job.uploaded, size = job.size, "upload aborted: no chunk for 10 min");
                audit.append_or_log(
                    "node",
                    "storage.put_expired",
                    serde_json::json!({ "job": job.job, "name": job.name, "uploaded": job.uploaded, "size": job.size }),
                );
            }
        }
    });
}
