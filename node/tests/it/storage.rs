//! Datasets through the real binary: put, get (verified), remove; an upload
//! whose file changes underneath, and bad upload requests, leave nothing.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn tmp_is_empty(data: &std::path::Path) -> bool {
    std::fs::read_dir(data.join("storage").join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

#[test]
fn put_get_remove_and_uploads_that_go_wrong_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    let url = node.wait_ready();
    let d = s(&data);

    // Round trip of a 2.5 MiB file (three sectors, a short last leaf).
    let file = tmp.path().join("in.bin");
    let bytes: Vec<u8> = (0..2_621_500u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let o = vigilctl(&[
        "--data-dir",
        d,
        "--json",
        "storage",
        "put",
        s(&file),
        "--name",
        "sample",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        info["root"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    let rp = info["replica_root"].as_str().unwrap().to_owned();
    let replica = std::fs::read(data.join("storage").join(&rp).join("replica")).unwrap();
    assert_eq!(
        blake3::hash(&replica).to_hex().as_str(),
        rp,
        "R_p is the BLAKE3 hash of the replica"
    );
    assert_ne!(replica, bytes, "the replica is encoded");
    let out = tmp.path().join("out.bin");
    let o = vigilctl(&["--data-dir", d, "storage", "get", "sample", "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let o = vigilctl(&["--data-dir", d, "storage", "list"]);
    assert!(
        stdout(&o).contains("sample") && stdout(&o).contains(&rp),
        "{}",
        stdout(&o)
    );
    // A dataset whose replica rotted on disk is not served as plaintext.
    let mut rotten = replica.clone();
    rotten[1_500_000] ^= 1;
    std::fs::write(data.join("storage").join(&rp).join("replica"), &rotten).unwrap();
    let r = rpc_envelope(&url, &data, "storage_get", json!(["sample", 1_048_576, 524_288]));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("do not match the plaintext root"),
        "{r}"
    );
    // Removing withdraws first: peers are told, the data stays for the
    // grace (60 s + the audit deadline + 5.1 s) and is deleted after.
    let o = vigilctl(&["--data-dir", d, "storage", "remove", "sample"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("withdrawn: ") && stdout(&o).contains("deleted in 96 s"),
        "{}",
        stdout(&o)
    );
    assert!(data.join("storage").join(&rp).exists());
    let o = vigilctl(&["--data-dir", d, "--json", "storage", "list"]);
    assert!(stdout(&o).contains("withdrawn_at_ms"), "{}", stdout(&o));

    // A file that grows while it is uploaded: refused, nothing stored.
    let big = tmp.path().join("growing.bin");
    std::fs::write(&big, vec![7u8; 24 << 20]).unwrap();
    let child = std::process::Command::new(vigil_bin().with_file_name("vigilctl"))
        .args(["--data-dir", d, "storage", "put", s(&big)])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&big)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("changed while it was uploaded"),
        "{}",
        stderr(&o)
    );
    // Nothing stored: only the withdrawn sample is left (for its grace).
    let nothing_new = || {
        let listed = rpc_envelope(&url, &data, "storage_list", json!([]))["result"].clone();
        let withdrawn = |d: &Value| d["withdrawn_at_ms"].is_u64() && d["replica_root"] == rp.as_str();
        assert!(listed.as_array().unwrap().iter().all(withdrawn), "{listed}");
    };
    nothing_new();
    assert!(tmp_is_empty(&data), "the aborted upload left files");

    // Bad requests name what is wrong and what is allowed.
    let err = |r: &Value| r["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(err(&rpc_envelope(&url, &data, "storage_put_begin", json!(["x", 0]))).contains("1..="));
    assert!(err(&rpc_envelope(
        &url,
        &data,
        "storage_put_begin",
        json!(["a/b", 10])
    ))
    .contains("without `/`"));
    let id = rpc_envelope(&url, &data, "storage_put_begin", json!(["short", 10]))["result"]["upload"].clone();
    let e = err(&rpc_envelope(
        &url,
        &data,
        "storage_put_chunk",
        json!([id, 5, "AAAA"]),
    ));
    assert!(e.contains("the upload is at 0"), "{e}");
    rpc_envelope(&url, &data, "storage_put_chunk", json!([id, 0, "AAAA"]));
    let e = err(&rpc_envelope(&url, &data, "storage_put_finish", json!([id])));
    assert!(e.contains("upload has 3 of 10 bytes"), "{e}");
    // The upload stays (the rest may still come) until it is aborted.
    assert!(!tmp_is_empty(&data));
    let r = rpc_envelope(&url, &data, "storage_put_abort", json!([id]));
    assert_eq!(r["result"]["aborted"], true, "{r}");
    assert!(tmp_is_empty(&data));
    let job = rpc_envelope(&url, &data, "storage_job", json!([id]))["result"].clone();
    assert_eq!(job["phase"], "aborted", "{job}");
    nothing_new();
    // No descriptor of the node still points into its storage folder.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.child.id())).unwrap();
    let open: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("/storage/"))
        .collect();
    assert!(open.is_empty(), "leaked descriptors: {open:?}");
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

#[test]
fn an_ingest_job_goes_on_without_its_client_and_is_audited_whatever_happens() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    let url = node.wait_ready();
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let call = |m: &str, p: Value| rpc_envelope(&url, &data, m, p);
    let id = call("storage_put_begin", json!(["job.bin", bytes.len()]))["result"]["upload"].clone();
    for (i, c) in bytes.chunks(512 * 1024).enumerate() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        let r = call("storage_put_chunk", json!([id, i * 512 * 1024, b64]));
        assert!(r.get("error").is_none(), "{r}");
    }
    let job = call("storage_put_finish", json!([id]))["result"].clone();
    assert_eq!(job["phase"], "encoding", "finish returns the job at once: {job}");
    assert_eq!(job["uploaded"], bytes.len());
    assert!(job["upload_ms"].is_u64(), "{job}");
    // Nobody follows the job: it ends by itself, stored and audited.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = call("storage_job", json!([id]))["result"].clone();
        if j["phase"] != "encoding" {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "still encoding: {j}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["phase"], "done", "{done}");
    assert_eq!(done["encoded"], bytes.len());
    assert!(done["encode_ms"].is_u64());
    assert_eq!(
        done["dataset"]["root"].as_str().unwrap(),
        blake3::hash(&bytes).to_hex().as_str()
    );
    let jobs = call("storage_jobs", json!([]))["result"].clone();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["job"] == id && j["phase"] == "done"),
        "{jobs}"
    );
    let log = call("audit_list", json!([0, 100]))["result"].clone();
    let entry = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "storage.put")
        .cloned();
    assert_eq!(entry.expect("storage.put audited")["detail"]["name"], "job.bin");
    // An aborted upload is audited too.
    let id2 = call("storage_put_begin", json!(["gone.bin", 10]))["result"]["upload"].clone();
    call("storage_put_abort", json!([id2]));
    let log = call("audit_list", json!([0, 100]))["result"].clone();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "storage.put_aborted" && e["detail"]["name"] == "gone.bin"),
        "{log}"
    );

    // vigilctl follows the phases, in plain lines when not on a terminal,
    // and lists the jobs.
    let file = tmp.path().join("second.bin");
    std::fs::write(&file, &bytes[..1_000_000]).unwrap();
    let o = vigilctl(&["--data-dir", s(&data), "storage", "put", s(&file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("uploaded") && err.contains("as job") && err.contains("encoded in"),
        "{err}"
    );
    assert!(stdout(&o).contains("stored second.bin"), "{}", stdout(&o));
    let o = vigilctl(&["--data-dir", s(&data), "storage", "jobs"]);
    let table = stdout(&o);
    assert!(
        table.contains("second.bin")
            && table.contains("done")
            && table.contains("gone.bin")
            && table.contains("aborted"),
        "{table}"
    );
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

#[test]
fn a_slow_answer_is_a_timeout_not_a_dead_node() {
    let tmp = tempfile::tempdir().unwrap();
    // A server that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let cookie = tmp.path().join("cookie");
    std::fs::write(&cookie, "x").unwrap();
    let t = std::time::Instant::now();
    let o = vigilctl(&["--rpc", &url, "--cookie", s(&cookie), "--timeout", "1", "status"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no answer from") && err.contains("within 1 s") && err.contains("raise --timeout"),
        "{err}"
    );
    assert!(!err.contains("Is the node running"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3));
    held.join().unwrap();
}
