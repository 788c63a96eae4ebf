//! `vigilctl epoch` and `vigilctl vdf`.

use anyhow::Result;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

use crate::print_json;

fn print_epoch(e: &Value) {
    println!("epoch     {}", e["number"]);
    println!("output    {}", e["output"].as_str().unwrap_or("-"));
    println!("input     {}", e["input"].as_str().unwrap_or("-"));
    let anchor = e["anchor"].as_str().filter(|a| !a.is_empty()).unwrap_or("(none)");
    println!("anchor    {anchor}");
    println!(
        "proof     {} checkpoints, {} bytes encoded",
        e["checkpoints"], e["bytes"]
    );
}

/// `vigilctl epoch [N]`: the head (and sync state), or epoch N.
pub(crate) async fn epoch(ep: &Endpoint, number: Option<u64>, json_out: bool) -> Result<()> {
    let r = match number {
        Some(n) => ep.call("epoch_get", json!([n])).await?,
        None => ep.call("epoch_head", json!([])).await?,
    };
    if json_out {
        return print_json(&r);
    }
    match number {
        Some(_) => print_epoch(&r),
        None => {
            let synced = if r["synced"].as_bool() == Some(true) {
                "synced".to_owned()
            } else {
                format!("syncing: best peer head {}", r["best_peer_head"])
            };
            println!("head      {} ({synced})", r["head"]);
            if r["epoch"].is_object() {
                print_epoch(&r["epoch"]);
            }
        }
    }
    Ok(())
}

/// `vigilctl vdf`: the worker's progress, rate and ETA.
pub(crate) async fn vdf(ep: &Endpoint, json_out: bool) -> Result<()> {
    let r = ep.call("vdf_status", json!([])).await?;
    if json_out {
        return print_json(&r);
    }
    let mib = match r["memory_mib"].as_u64() {
        Some(m) if m > 0 => format!(", {m} MiB dataset"),
        _ => String::new(),
    };
    println!(
        "mode      {} ({} iterations, {} segments{mib})",
        r["mode"].as_str().unwrap_or("-"),
        r["iterations"],
        r["segments"]
    );
    println!(
        "verify    {}",
        match &r["verify"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("sampled")
                .map_or("sampled".into(), |n| format!("sampled, {n} segments")),
            other => other.to_string(),
        }
    );
    println!("head      {} (best peer {})", r["head"], r["best_peer_head"]);
    if let Some(src) = r["anchor_source"].as_str() {
        println!("anchor    from chain source `{src}`");
    }
    if r["compute"].as_bool() != Some(true) {
        println!("worker    off (vdf.compute = false): follows its peers");
        return Ok(());
    }
    match r["computing"].as_u64() {
        Some(n) if n > 0 && r["waiting_for_anchor"].is_string() => {
            println!("worker    epoch {n}: waiting for its anchor");
            println!("          {}", r["waiting_for_anchor"].as_str().unwrap_or(""));
        }
        Some(n) if n > 0 => {
            let pct = r["progress"].as_f64().unwrap_or(0.0) * 100.0;
            let rate = r["rate"].as_f64().unwrap_or(0.0) / 1e6;
            let eta = r["eta_secs"].as_f64().map_or("-".into(), |s| format!("{s:.1} s"));
            let resumed = if r["resumed"].as_bool() == Some(true) {
                " (resumed from a checkpoint)"
            } else {
                ""
            };
            println!(
                "worker    epoch {n}: {pct:.1}% ({}/{} segments){resumed}",
                r["segments_done"], r["segments"]
            );
            println!("rate      {rate:.2} M iterations/s, eta {eta}");
        }
        _ => println!("worker    idle"),
    }
    Ok(())
}
