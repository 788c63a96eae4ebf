//! `vigilctl audit`: list, verify and export the audit log.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Entries from --from, at most --limit (the default).
    List {
        /// First entry.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Entries at most (1-1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Check every hash link and every signed checkpoint: reports an edited,
    /// removed or reordered entry, a cut-off tail, and a forged checkpoint,
    /// with the position of the first problem. Exits 1 on a problem.
    Verify,
    /// Every entry as JSON lines on stdout (paged; for archives and SIEMs).
    Export,
}

const PAGE: u64 = 1000;

pub(crate) async fn audit(ep: &Endpoint, cmd: AuditCmd, as_json: bool) -> Result<()> {
    match cmd {
        AuditCmd::List { from, limit } => {
            let r = ep.call("audit_list", json!([from, limit])).await?;
            if as_json {
                crate::print_json(&r)?;
            } else {
                let list = r.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no audit entries from {from}");
                }
                for e in list {
                    println!(
                        "{:>6}  {:<16} {:<24} {}",
                        e["seq"],
                        e["who"].as_str().unwrap_or("?"),
                        e["action"].as_str().unwrap_or("?"),
                        e["detail"]
                    );
                }
            }
        }
        AuditCmd::Verify => {
            let r = ep.call("audit_verify", json!([])).await?;
            if as_json {
                crate::print_json(&r)?;
            }
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            if r["ok"] == true {
                if !as_json {
                    println!(
                        "audit chain intact: {} entries; {} checkpoints, the newest signs the first {} (the rest is covered by the hash chain until the next one)",
                        n("entries"),
                        n("checkpoints"),
                        n("signed_entries")
                    );
                }
            } else {
                bail!(
                    "audit log damaged at entry {}: {}",
                    r["first_bad"].as_u64().map_or("?".into(), |v| v.to_string()),
                    r["error"].as_str().unwrap_or("?")
                );
            }
        }
        AuditCmd::Export => {
            let mut out = std::io::stdout().lock();
            let mut from = 0;
            loop {
                let page = ep.call("audit_list", json!([from, PAGE])).await?;
                let items: Vec<Value> = page.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    break;
                }
                for e in &items {
                    writeln!(out, "{e}")?;
                }
                from = items.last().and_then(|e| e["seq"].as_u64()).unwrap_or(from) + 1;
            }
        }
    }
    Ok(())
}
