//! `vigilctl storage ...` and `vigilctl challenge ...`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

/// `vigilctl storage ...`
#[derive(Debug, Subcommand)]
pub(crate) enum StorageCmd {
    /// Store a file: upload, then the node encodes it for itself (a job
    /// that goes on if this command is interrupted; `storage jobs` shows it)
    /// and announces it to peers.
    Put {
        /// The file.
        file: PathBuf,
        /// Name (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Return once the upload is in, with the job id, instead of
        /// following the encoding.
        #[arg(long)]
        no_wait: bool,
    },
    /// Ingest jobs: uploading, encoding, done, failed, aborted.
    Jobs,
    /// Datasets stored here.
    List,
    /// Datasets peers announced.
    Announced,
    /// Decode a dataset back to a file, verified against its root.
    Get {
        /// Name, R or R_p.
        dataset: String,
        /// Output file (must not exist).
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Withdraw a dataset, then delete it: peers are told (a signed
    /// withdrawal) and stop challenging it; the data stays for the
    /// withdrawal grace (60 s + the genesis audit deadline + 5.1 s) to
    /// answer challenges sent before they heard, then goes.
    Remove {
        /// Name, R or R_p.
        dataset: String,
    },
}

/// `vigilctl challenge ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ChallengeCmd {
    /// Challenge a peer now on a dataset it announced.
    Run {
        /// Peer id.
        peer: String,
        /// Its R or R_p (default: its first dataset).
        dataset: Option<String>,
    },
    /// Audit a peer: does its replica really encode the plaintext? (slow by design)
    Audit {
        /// Peer id.
        peer: String,
        /// Its R or R_p.
        dataset: Option<String>,
    },
    /// Per peer: challenges, success rate, latency p50/p99, last failure.
    Stats,
    /// Attestations other nodes gossiped.
    Attestations {
        /// Newest N.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

fn bar(len: u64, json: bool, what: &str) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(b)
}

fn stamp(p: &Path) -> Result<(u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok((m.len(), m.modified().ok()))
}

async fn put(ep: &Endpoint, file: &Path, name: Option<String>, no_wait: bool, json_out: bool) -> Result<()> {
    let before = stamp(file)?;
    let name = name.unwrap_or_else(|| {
        file.file_name()
            .map_or("dataset".into(), |n| n.to_string_lossy().into_owned())
    });
    let r = ep.call("storage_put_begin", json!([name, before.0])).await?;
    let id = r["upload"].as_u64().context("no upload id")?;
    let chunk = r["chunk_bytes"].as_u64().unwrap_or(512 * 1024) as usize;
    let b = bar(before.0, json_out, "uploading");
    let result: Result<Value> = async {
        // Never read past the announced size: a growing file is caught below.
        let mut f = std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(before.0);
        let mut buf = vec![0u8; chunk];
        let mut offset = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
            ep.call("storage_put_chunk", json!([id, offset, data])).await?;
            offset += n as u64;
            if let Some(b) = &b {
                b.set_position(offset);
            }
        }
        if stamp(file)? != before || offset != before.0 {
            bail!(
                "{} changed while it was uploaded: nothing stored; try again",
                file.display()
            );
        }
        if let Some(b) = &b {
            b.finish_and_clear();
        }
        ep.call("storage_put_finish", json!([id])).await
    }
    .await;
    let job = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = ep.call("storage_put_abort", json!([id])).await;
            return Err(e);
        }
    };
    let upload_ms = job["upload_ms"].as_u64().unwrap_or(0);
    if !json_out {
        eprintln!(
            "uploaded {} ({} bytes) in {:.1} s; the node encodes it as job {id} (it goes on if this command stops: vigilctl storage jobs)",
            file.display(),
            before.0,
            upload_ms as f64 / 1000.0
        );
    }
    if no_wait {
        println!(
            "{}",
            if json_out {
                serde_json::to_string_pretty(&job)?
            } else {
                format!("job {id}")
            }
        );
        return Ok(());
    }
    let info = follow(ep, id, before.0, json_out).await?;
    if json_out {
        crate::print_json(&info)?;
    } else {
        println!(
            "stored {} ({} bytes)",
            info["name"].as_str().unwrap_or("-"),
            info["size"]
        );
        println!("  R    {}", info["root"].as_str().unwrap_or("-"));
        println!("  R_p  {}", info["replica_root"].as_str().unwrap_or("-"));
    }
    Ok(())
}

/// Follows job `id` through its encoding (a bar on a terminal, a line every
/// 10% otherwise) until it is done; the dataset, or why it failed.
async fn follow(ep: &Endpoint, id: u64, size: u64, json_out: bool) -> Result<Value> {
    let b = bar(size, json_out, "encoding ");
    let mut said = 0;
    loop {
        let j = ep.call("storage_job", json!([id])).await?;
        let encoded = j["encoded"].as_u64().unwrap_or(0);
        match j["phase"].as_str() {
            Some("done") => {
                if let Some(b) = &b {
                    b.finish_and_clear();
                }
                if !json_out {
                    eprintln!(
                        "encoded in {:.1} s",
                        j["encode_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
                    );
                }
                return Ok(j["dataset"].clone());
            }
            Some("failed") | Some("aborted") => {
                if let Some(b) = &b {
                    b.abandon();
                }
                bail!(
                    "job {id} {}: {}; nothing stored",
                    j["phase"].as_str().unwrap_or("?"),
                    j["error"].as_str().unwrap_or("?")
                );
            }
            _ => {}
        }
        match &b {
            Some(b) => b.set_position(encoded),
            None if !json_out && size > 0 => {
                let pct = encoded * 100 / size;
                if pct >= said + 10 {
                    said = pct - pct % 10;
                    eprintln!("encoding {said}% ({encoded} of {size} bytes)");
                }
            }
            None => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn jobs(ep: &Endpoint, json_out: bool) -> Result<()> {
    let r = ep.call("storage_jobs", json!([])).await?;
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    let list = r.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no ingest jobs since the node started");
        return Ok(());
    }
    println!(
        "{:<18} {:<24} {:<10} {:>12} {:>9} {:>9}  DETAIL",
        "JOB", "NAME", "PHASE", "SIZE", "UPLOAD", "ENCODE"
    );
    for j in list {
        let size = j["size"].as_u64().unwrap_or(0);
        let pct = |k: &str| match size {
            0 => 0,
            n => j[k].as_u64().unwrap_or(0) * 100 / n,
        };
        let phase = j["phase"].as_str().unwrap_or("?");
        let detail = match phase {
            "uploading" => format!("{}% uploaded", pct("uploaded")),
            "encoding" => format!("{}% encoded", pct("encoded")),
            "done" => j["dataset"]["replica_root"]
                .as_str()
                .map(|r| format!("R_p {r}"))
                .unwrap_or_default(),
            _ => j["error"].as_str().unwrap_or("").to_owned(),
        };
        let secs = |k: &str| {
            j[k].as_u64()
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<18} {:<24} {:<10} {:>12} {:>9} {:>9}  {}",
            j["job"],
            j["name"].as_str().unwrap_or("?"),
            phase,
            size,
            secs("upload_ms"),
            secs("encode_ms"),
            detail
        );
    }
    Ok(())
}

async fn get(ep: &Endpoint, dataset: &str, out: &Path, json_out: bool) -> Result<()> {
    if out.exists() {
        bail!("{} exists: pick another --out", out.display());
    }
    let tmp = out.with_extension("part");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    let mut b = None;
    let root = loop {
        let r = ep
            .call("storage_get", json!([dataset, offset, 512 * 1024]))
            .await?;
        let data = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap_or(""))?;
        let size = r["size"].as_u64().unwrap_or(0);
        let pb = b.get_or_insert_with(|| bar(size, json_out, "decoding"));
        f.write_all(&data)?;
        hasher.update(&data);
        offset += data.len() as u64;
        if let Some(pb) = pb {
            pb.set_position(offset);
        }
        if r["eof"].as_bool() == Some(true) || data.is_empty() {
            break r["root"].as_str().unwrap_or("").to_owned();
        }
    };
    f.sync_all()?;
    if hasher.finalize().to_hex().as_str() != root {
        let _ = std::fs::remove_file(&tmp);
        bail!("the decoded bytes do not hash to R {root}: nothing written");
    }
    std::fs::rename(&tmp, out)?;
    if json_out {
        crate::print_json(&json!({ "out": out, "bytes": offset, "root": root }))?;
    } else {
        println!(
            "wrote {} ({offset} bytes, verified against R {root})",
            out.display()
        );
    }
    Ok(())
}

pub(crate) async fn storage_cmd(ep: &Endpoint, cmd: StorageCmd, json_out: bool) -> Result<()> {
    match cmd {
        StorageCmd::Put { file, name, no_wait } => put(ep, &file, name, no_wait, json_out).await,
        StorageCmd::Jobs => jobs(ep, json_out).await,
        StorageCmd::Get { dataset, out } => get(ep, &dataset, &out, json_out).await,
        StorageCmd::List | StorageCmd::Announced => {
            let (method, who) = match cmd {
                StorageCmd::List => ("storage_list", "name"),
                _ => ("storage_announced", "peer"),
            };
            let r = ep.call(method, json!([])).await?;
            if json_out {
                crate::print_json(&r)?;
                return Ok(());
            }
            let empty = if who == "name" {
                "no datasets stored (`vigilctl storage put FILE` stores one)"
            } else {
                "no datasets announced by peers"
            };
            if crate::none(&r, empty) {
                return Ok(());
            }
            println!("{:<54} {:>12}  R_p", who, "bytes");
            for d in r.as_array().into_iter().flatten() {
                println!(
                    "{:<54} {:>12}  {}",
                    d[who].as_str().unwrap_or("-"),
                    d["size"],
                    d["replica_root"].as_str().unwrap_or("-")
                );
            }
            Ok(())
        }
        StorageCmd::Remove { dataset } => {
            let r = ep.call("storage_remove", json!([dataset])).await?;
            println!(
                "{}",
                if json_out {
                    serde_json::to_string_pretty(&r)?
                } else if r["removed"] == true {
                    let secs = r["delete_at_ms"]
                        .as_u64()
                        .zip(r["withdrawn_at_ms"].as_u64())
                        .map_or(0, |(d, w)| d.saturating_sub(w).div_ceil(1000));
                    format!(
                        "withdrawn: {} (peers stop challenging it; the data is deleted in {secs} s)",
                        r["replica_root"].as_str().unwrap_or("-")
                    )
                } else {
                    "removed: false (no such dataset)".to_owned()
                }
            );
            Ok(())
        }
    }
}

pub(crate) async fn challenge_cmd(ep: &Endpoint, cmd: ChallengeCmd, json_out: bool) -> Result<()> {
    let r = match &cmd {
        ChallengeCmd::Run { peer, dataset } => {
            let mut p = vec![json!(peer)];
            p.extend(dataset.iter().map(|d| json!(d)));
            ep.call("challenge_run", Value::Array(p)).await?
        }
        ChallengeCmd::Audit { peer, dataset } => {
            let mut p = vec![json!(peer)];
            p.extend(dataset.iter().map(|d| json!(d)));
            ep.call("challenge_audit", Value::Array(p)).await?
        }
        ChallengeCmd::Stats => ep.call("challenge_stats", json!([])).await?,
        ChallengeCmd::Attestations { limit } => ep.call("challenge_attestations", json!([limit])).await?,
    };
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    match cmd {
        ChallengeCmd::Run { .. } => {
            let detail = r["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            println!(
                "{}{detail}: {:.2} ms round trip (ping {} ms), {} proof bytes, epoch {}",
                r["outcome"].as_str().unwrap_or("-"),
                r["latency_ms"].as_f64().unwrap_or(0.0),
                r["ping_ms"].as_f64().map_or("-".into(), |p| format!("{p:.2}")),
                r["proof_bytes"],
                r["epoch"]
            );
        }
        ChallengeCmd::Audit { .. } => {
            println!(
                "audit {}",
                if r["passed"].as_bool() == Some(true) {
                    "passed"
                } else {
                    "FAILED"
                }
            );
        }
        ChallengeCmd::Stats => {
            if crate::none(
                &r["peers"],
                "no challenges yet (they start with epoch 1, once peers announce datasets)",
            ) {
                return Ok(());
            }
            println!(
                "{:<54} {:>6} {:>8} {:>9} {:>9}  last failure",
                "peer", "runs", "success", "p50 ms", "p99 ms"
            );
            for (peer, s) in r["peers"].as_object().into_iter().flatten() {
                let last = s["last_failure"].as_object().map_or("-".into(), |f| {
                    format!("{} at epoch {}", f["outcome"].as_str().unwrap_or("-"), f["epoch"])
                });
                println!(
                    "{:<54} {:>6} {:>7.1}% {:>9.2} {:>9.2}  {last}",
                    peer,
                    s["challenges"],
                    s["success_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    s["latency_p50_ms"].as_f64().unwrap_or(0.0),
                    s["latency_p99_ms"].as_f64().unwrap_or(0.0)
                );
            }
        }
        ChallengeCmd::Attestations { .. } => {
            if crate::none(&r, "no attestations") {
                return Ok(());
            }
            for a in r.as_array().into_iter().flatten() {
                println!(
                    "epoch {:>6}  {} -> {}  {}  {:.2} ms",
                    a["epoch"],
                    a["challenger"].as_str().unwrap_or("-"),
                    a["prover"].as_str().unwrap_or("-"),
                    a["outcome"].as_str().unwrap_or("-"),
                    a["latency_us"].as_f64().unwrap_or(0.0) / 1000.0
                );
            }
        }
    }
    Ok(())
}
