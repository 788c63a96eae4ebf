//! `vigilctl keys`: API keys of the admin RPC.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCmd {
    /// Every key: name, role, when made, when last used (never the secret).
    List,
    /// Make a key; its secret is printed once (only its hash is kept).
    #[command(
        long_about = "Make a key; its secret is printed once (the node keeps only its hash).\n\n\
        Roles: read (status only), operator (also changes to the running node: pause/resume,\n\
        bus apps and grants, dataset ingest, challenges, channel payments), admin (also keys,\n\
        bans, the audit log, shutdown, fault injection). Give each tool the least it needs.\n\n\
        Example:\n  vigilctl keys add grafana --role read\n  VIGIL_RPC_KEY=vigil_... vigilctl --rpc http://node:8645 status"
    )]
    Add {
        /// Unique name: 1-64 of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// read, operator or admin.
        #[arg(long)]
        role: String,
    },
    /// Revoke a key: it stops working at once, also on open connections.
    Revoke {
        /// The key's name.
        name: String,
    },
}

fn ago(unix: u64) -> String {
    if unix == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(unix);
    let s = now.saturating_sub(unix);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

pub(crate) async fn keys(ep: &Endpoint, cmd: Option<KeysCmd>, as_json: bool) -> Result<()> {
    match cmd.unwrap_or(KeysCmd::List) {
        KeysCmd::List => {
            let r = ep.call("keys_list", json!([])).await?;
            if as_json {
                crate::print_json(&r)?;
                return Ok(());
            }
            let list = r.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no API keys (the cookie is the only credential); add one with `vigilctl keys add NAME --role read`");
                return Ok(());
            }
            println!("{:<24} {:<9} {:<12} LAST USED", "NAME", "ROLE", "MADE");
            for k in list {
                let n = |f: &str| k[f].as_u64().unwrap_or(0);
                println!(
                    "{:<24} {:<9} {:<12} {}",
                    k["name"].as_str().unwrap_or("?"),
                    k["role"].as_str().unwrap_or("?"),
                    ago(n("created_unix")),
                    ago(n("last_used_unix"))
                );
            }
        }
        KeysCmd::Add { name, role } => {
            let r: Value = ep.call("keys_add", json!([name, role])).await?;
            if as_json {
                crate::print_json(&r)?;
            } else {
                println!("{}", r["secret"].as_str().unwrap_or("?"));
                eprintln!(
                    "key `{}` ({}) made. The line above is its secret, shown this once: store it now.\n\
                     Use it as `Authorization: Bearer SECRET`, or VIGIL_RPC_KEY=SECRET vigilctl ...",
                    r["name"].as_str().unwrap_or("?"),
                    r["role"].as_str().unwrap_or("?")
                );
            }
        }
        KeysCmd::Revoke { name } => {
            let r = ep.call("keys_revoke", json!([name])).await?;
            if as_json {
                crate::print_json(&r)?;
            } else {
                println!("revoked `{name}`: it no longer works, also on open connections");
            }
        }
    }
    Ok(())
}
