use serde_json::Value;

use crate::util::*;

#[test]
fn hash_show_and_new_agree_and_survive_reformatting() {
    let tmp = tempfile::tempdir().unwrap();
    let hash = |g: &str| {
        let o = vigil(&["genesis", "hash", g]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    let dev = hash("dev");
    assert_eq!(dev.len(), 64);
    assert_ne!(dev, hash("testnet"));
    let show: Value = serde_json::from_str(&stdout(
        &vigil(&["genesis", "show", "dev", "--json"]).output().unwrap(),
    ))
    .unwrap();
    assert_eq!(show["hash"], dev.as_str());
    assert_eq!(show["g8"], &dev[..16]);
    assert_eq!(show["params"]["response_deadline_ms"], 500);

    let file = tmp.path().join("net.toml");
    let boot = "/ip4/127.0.0.1/tcp/30345/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let o = vigil(&[
        "genesis",
        "new",
        "--from",
        "dev",
        "--network",
        "my-net",
        "--bootnode",
        boot,
        "--created-at",
        "2026-11-22T00:00:00Z",
        "--out",
        s(&file),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let h = hash(s(&file));
    assert_ne!(h, dev);

    // Comments, key order and whitespace do not change the hash.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let params = lines.iter().position(|l| *l == "[params]").unwrap();
    lines[params + 1..].reverse();
    let reformatted = tmp.path().join("reformatted.toml");
    std::fs::write(&reformatted, format!("# moved around\n{}\n", lines.join("\n  "))).unwrap();
    assert_eq!(hash(s(&reformatted)), h);

    // Never overwrites.
    let o = vigil(&["genesis", "new", "--out", s(&file)]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("never overwritten"), "{}", stderr(&o));

    // A bad edit is refused with the field name.
    let o = vigil(&["genesis", "new", "--network", "Bad Name"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("network = \"Bad Name\""), "{}", stderr(&o));
}
