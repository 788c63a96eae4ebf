//! The audit log as an operator checks it: `vigilctl audit verify` catches a
//! log cut off or edited while the node was down; `audit export` gives every
//! entry as JSON lines.

use std::time::Duration;

use serde_json::Value;
use vigil_actors::store::{SledStore, Store};

use crate::bus::{ctl, dev};
use crate::util::*;

fn entries(node: &Node) -> Vec<Value> {
    let o = ctl(node, &["audit", "export", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn stop(mut node: Node) {
    node.signal("TERM");
    assert!(node.wait_exit(30).success(), "{}", node.log());
}

#[test]
fn a_log_cut_off_or_rewritten_while_the_node_was_down_is_reported_where_it_breaks() {
    let tmp = tempfile::tempdir().unwrap();
    let node = dev(&tmp, &[]);
    for name in ["a", "b", "c", "d"] {
        let o = ctl(&node, &["keys", "add", name, "--role", "read"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = ctl(&node, &["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("audit chain intact"), "{}", stdout(&o));
    let o = ctl(&node, &["audit", "--limit", "2"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let o = ctl(&node, &["audit", "--limit", "0"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--limit"),
        "{}",
        stderr(&o)
    );
    let before = entries(&node);
    let n = before.len() as u64;
    assert!(n >= 4, "{before:?}");
    assert_eq!(before.last().unwrap()["action"], "keys.add");
    let dir = node.dir.clone();
    stop(node); // signs a checkpoint of the whole log at shutdown

    // Cut the last two entries off the database, as someone covering their
    // tracks would: the hash chain alone still links.
    {
        let db = SledStore::open(&dir.join("db"), 1 << 20, None).unwrap();
        for seq in [n - 2, n - 1] {
            assert!(db.remove("audit", &seq.to_be_bytes()).unwrap());
        }
        db.flush().unwrap();
    }
    let node = dev(&tmp, &[]);
    let o = ctl(&node, &["audit", "verify"]);
    assert!(!o.status.success(), "a cut-off log passed: {}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("audit log damaged at entry {}", n - 2))
            && err.contains(&format!("entries {} to {} are missing", n - 2, n - 1)),
        "{err}"
    );
    let o = ctl(&node, &["audit", "verify", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad"], n - 2);
    stop(node);

    // An entry edited in place: the chain catches it, at its position.
    {
        let db = SledStore::open(&dir.join("db"), 1 << 20, None).unwrap();
        let raw = db.get("audit", &1u64.to_be_bytes()).unwrap().unwrap();
        let mut e: Value = serde_json::from_slice(&raw[1..]).unwrap();
        e["who"] = "someone-else".into();
        let mut bytes = vec![raw[0]];
        bytes.extend(serde_json::to_vec(&e).unwrap());
        db.insert("audit", &1u64.to_be_bytes(), &bytes).unwrap();
        db.flush().unwrap();
    }
    let node = dev(&tmp, &[]);
    std::thread::sleep(Duration::from_millis(100));
    let o = ctl(&node, &["audit", "verify"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("audit log damaged at entry 1: entry 1 was modified"),
        "{}",
        stderr(&o)
    );
}
