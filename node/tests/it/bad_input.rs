use std::path::Path;

use crate::util::*;

/// Exit codes (docs/operator-guide.md): 3 config, 4 key, 5 address in use,
/// 6 genesis, 7 data dir.
const KEY: i32 = 4;
const GENESIS: i32 = 6;
const DATA_DIR: i32 = 7;

fn run_err(data: &Path, pass: Option<&Path>, extra: &[&str], code: i32) -> String {
    let mut args = vec!["run", "--data-dir", s(data), "--rpc-addr", "127.0.0.1:0"];
    if let Some(p) = pass {
        args.extend(["--passphrase-file", s(p)]);
    }
    args.extend_from_slice(extra);
    let o = vigil(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn key_problems_are_named_and_the_key_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "dev", &pass);
    let key = data.join("node.key");
    let good = std::fs::read(&key).unwrap();

    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    let e = run_err(&data, Some(&wrong), &[], KEY);
    assert!(
        e.contains("wrong passphrase, or the key file was modified"),
        "{e}"
    );

    let e = run_err(&data, None, &[], KEY);
    assert!(
        e.contains("is encrypted") && e.contains("--passphrase-file"),
        "{e}"
    );

    let mut tampered = good.clone();
    let last = tampered.len() - 5;
    tampered[last] ^= 0x40;
    std::fs::write(&key, &tampered).unwrap();
    let e = run_err(&data, Some(&pass), &[], KEY);
    assert!(
        e.contains("wrong passphrase, or the key file was modified"),
        "{e}"
    );

    std::fs::write(&key, &good[..30]).unwrap();
    let e = run_err(&data, Some(&pass), &[], KEY);
    assert!(e.contains("truncated"), "{e}");

    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----").unwrap();
    let e = run_err(&data, Some(&pass), &[], KEY);
    assert!(e.contains("not a vigil key file"), "{e}");

    // Restored, it works again: nothing else was changed by the failures.
    std::fs::write(&key, &good).unwrap();
    let mut node = run_node(&data, &pass, &[]);
    node.wait_ready();
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

#[test]
fn init_refuses_a_non_empty_dir_and_missing_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "dev", &pass);
    let before = std::fs::read(data.join("node.key")).unwrap();
    let o = vigil(&["init", "--data-dir", s(&data), "--passphrase-file", s(&pass)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(DATA_DIR));
    assert!(
        stderr(&o).contains("is not empty") && stderr(&o).contains("node.key"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(data.join("node.key")).unwrap(),
        before,
        "init touched the key"
    );

    let fresh = tmp.path().join("fresh");
    let o = vigil(&["init", "--data-dir", s(&fresh)]).output().unwrap();
    assert_eq!(o.status.code(), Some(KEY));
    assert!(stderr(&o).contains("VIGIL_PASSPHRASE"), "{}", stderr(&o));
    assert!(!fresh.exists(), "init left a half-made dir");

    let empty = tmp.path().join("emptypass");
    std::fs::write(&empty, "\n").unwrap();
    let o = vigil(&["init", "--data-dir", s(&fresh), "--passphrase-file", s(&empty)])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("passphrase is empty"), "{}", stderr(&o));

    // VIGIL_PASSPHRASE works as well as the file.
    let o = vigil(&["init", "--data-dir", s(&fresh)])
        .env("VIGIL_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn malformed_and_invalid_genesis_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let cases = [
        ("network = \"x\"\ncreated_at = ", "malformed genesis"),
        ("network = \"x\"\n", "missing field `created_at`"),
        (
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../genesis/src/presets/dev.toml"
            ))
            .unwrap()
            .replace("response_deadline_ms = 500", "response_deadline_ms = 5"),
            "params.response_deadline_ms = 5: allowed 10..=60000",
        ),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let g = tmp.path().join(format!("g{i}.toml"));
        std::fs::write(&g, text).unwrap();
        let data = tmp.path().join(format!("d{i}"));
        let o = vigil(&[
            "init",
            "--data-dir",
            s(&data),
            "--genesis",
            s(&g),
            "--passphrase-file",
            s(&pass),
        ])
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(GENESIS));
        assert!(stderr(&o).contains(expect), "case {i}: {}", stderr(&o));
        assert!(!data.exists());
    }
    let o = vigil(&[
        "init",
        "--data-dir",
        s(&tmp.path().join("x")),
        "--genesis",
        "mainnet",
    ])
    .output()
    .unwrap();
    assert!(
        stderr(&o).contains("use a preset (dev, testnet)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_data_dir_of_another_genesis_is_refused_naming_both_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "testnet", &pass);
    let hash = |g: &str| {
        stdout(&vigil(&["genesis", "hash", g]).output().unwrap())
            .trim()
            .to_owned()
    };
    let (dev, testnet) = (hash("dev"), hash("testnet"));

    let e = run_err(&data, Some(&pass), &["--genesis", "dev"], GENESIS);
    assert!(e.contains(&dev) && e.contains(&testnet), "{e}");

    let o = vigil(&[
        "dev",
        "--data-dir",
        s(&data),
        "--passphrase-file",
        s(&pass),
        "--rpc-addr",
        "127.0.0.1:0",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(GENESIS));
    assert!(
        stderr(&o).contains(&dev) && stderr(&o).contains(&testnet),
        "{}",
        stderr(&o)
    );

    // genesis.toml edited behind the node's back: the hash pinned in db/meta wins.
    let g = data.join("genesis.toml");
    let text = std::fs::read_to_string(&g)
        .unwrap()
        .replace("challenges_per_epoch = 10", "challenges_per_epoch = 11");
    std::fs::write(&g, text).unwrap();
    let e = run_err(&data, Some(&pass), &[], GENESIS);
    assert!(
        e.contains(&testnet)
            && e.contains("genesis.toml was edited")
            && e.contains("restore the original file"),
        "{e}"
    );

    let e = run_err(&tmp.path().join("nothing"), Some(&pass), &[], DATA_DIR);
    assert!(e.contains("vigil init --data-dir"), "{e}");
}
