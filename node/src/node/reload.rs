//! SIGHUP: what a running node reloads, and what needs a restart.

use super::*;

/// SIGHUP reloads what can change while the node runs: the admin RPC's TLS
/// certificate, `log.level` (unless `RUST_LOG` is set) and the security
/// rules, from the configuration as read at start (file, environment,
/// flags). Anything else that changed is named as needing a restart. The
/// outcome is logged and audited (`node.reload`). A bad new value is
/// refused and the old one stays.
pub(super) fn watch_sighup(
    reload: Option<Reload>,
    tls: Option<std::sync::Arc<rpc::tls::Tls>>,
    hub: Arc<SecurityHub>,
    audit: Audit,
) -> Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut reload = reload;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::systemd::reloading();
            let (mut done, mut failed, mut restart) =
                (Vec::<String>::new(), Vec::<String>::new(), Vec::<String>::new());
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => done.push("rpc TLS certificate".into()),
                    Err(e) => failed.push(format!("rpc TLS certificate (the old one stays): {e}")),
                }
            }
            if let Some(r) = reload.as_mut() {
                match (r.load)() {
                    Err(e) => failed.push(format!("configuration not reread (nothing changed): {e:#}")),
                    Ok(new) => {
                        if new.log.level != r.base.log.level {
                            match &r.log {
                                Some(apply) => match apply(&new.log.level) {
                                    Ok(()) => {
                                        done.push(format!("log.level = {:?}", new.log.level));
                                        r.base.log.level = new.log.level.clone();
                                    }
                                    Err(e) => failed.push(format!("log.level: {e}")),
                                },
                                None => failed
                                    .push("log.level: RUST_LOG is set and wins; unset it and restart".into()),
                            }
                        }
                        if new.security.rules != r.base.security.rules {
                            match hub.set_rules(&new.security.rules) {
                                Ok(()) => {
                                    done.push(format!("security.rules ({} rules)", new.security.rules.len()));
                                    r.base.security.rules = new.security.rules.clone();
                                }
                                Err(e) => failed.push(format!("security.rules (the old ones stay): {e}")),
                            }
                        }
                        restart = changed_keys(&r.base, &new);
                    }
                }
            }
            if done.is_empty() && failed.is_empty() && restart.is_empty() {
                tracing::info!("SIGHUP: nothing to reload (configuration unchanged)");
            } else {
                if !done.is_empty() {
                    tracing::info!(reloaded = %done.join("; "), "SIGHUP: reloaded");
                }
                if !failed.is_empty() {
                    tracing::error!(failed = %failed.join("; "), "SIGHUP: not reloaded");
                }
                if !restart.is_empty() {
                    tracing::warn!(keys = %restart.join(", "), "SIGHUP: these changed keys take effect only after a restart");
                }
            }
            audit.append_or_log(
                "node",
                "node.reload",
                serde_json::json!({ "reloaded": done, "failed": failed, "needs_restart": restart }),
            );
            crate::systemd::reloaded(&format!(
                "running; last SIGHUP: {} reloaded, {} refused, {} need a restart",
                done.len(),
                failed.len(),
                restart.len()
            ));
        }
    });
    Ok(())
}

/// Keys whose value differs between two configurations, as `section.key`.
pub(super) fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (toml::Value::try_from(old), toml::Value::try_from(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (a.as_table(), b.as_table()) {
        for (section, av) in a {
            let (Some(at), Some(bt)) = (av.as_table(), b.get(section).and_then(|v| v.as_table())) else {
                continue;
            };
            for key in at.keys().chain(bt.keys().filter(|k| !at.contains_key(*k))) {
                if at.get(key) != bt.get(key) {
                    out.push(format!("{section}.{key}"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
