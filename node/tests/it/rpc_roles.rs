//! API keys and roles over real HTTP and WebSocket connections to a node.

use serde_json::{json, Value};

use crate::util::*;

fn dev_node(tmp: &tempfile::TempDir) -> (Node, String) {
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    let url = node.wait_ready();
    (node, url)
}

/// A call with `token`; the whole response object.
fn call(url: &str, token: &str, method: &str, params: Value) -> Value {
    let payload = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let (status, body) = rpc_raw(url, Some(token), &payload);
    assert_eq!(status, 200, "{method}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn add_key(url: &str, dir: &std::path::Path, name: &str, role: &str) -> String {
    let r = rpc_result(url, dir, "keys_add", json!([name, role]));
    assert_eq!(r["role"], role);
    r["secret"].as_str().unwrap().to_owned()
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

#[test]
fn each_role_may_call_its_methods_and_is_refused_the_rest_with_the_role_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    let read = add_key(&url, &node.dir, "grafana", "read");
    let operator = add_key(&url, &node.dir, "ops", "operator");
    let admin = add_key(&url, &node.dir, "root-2", "admin");

    // One method of each class: (method, params, role it needs). Params
    // are valid so that an allowed call really runs.
    let classes = [
        ("node_info", json!([]), "read"),
        ("security_rules", json!([]), "read"),
        ("bus_app_add", json!(["app-x"]), "operator"),
        ("security_pause", json!(["challenges"]), "operator"),
        ("keys_list", json!([]), "admin"),
        ("audit_list", json!([0, 5]), "admin"),
    ];
    let rank = |r: &str| {
        ["read", "operator", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    for (who, token, role) in [
        ("grafana", &read, "read"),
        ("ops", &operator, "operator"),
        ("root-2", &admin, "admin"),
    ] {
        for (i, (method, params, needed)) in classes.iter().enumerate() {
            // A fresh app name per caller so that allowed adds succeed.
            let params = if *method == "bus_app_add" {
                json!([format!("app-{who}-{i}")])
            } else {
                params.clone()
            };
            let v = call(&url, token, method, params);
            if rank(role) >= rank(needed) {
                assert!(v.get("error").is_none(), "{who} ({role}) may call {method}: {v}");
            } else {
                assert_eq!(code(&v), -32014, "{who} ({role}) calling {method}: {v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains(&format!("needs the {needed} role"))
                        && msg.contains(&format!("key:{who} has {role}")),
                    "{msg}"
                );
                assert_eq!(v["error"]["data"], json!({ "needed": needed, "role": role }));
            }
        }
    }
    // Any role may read the OpenRPC description: every method, its role.
    let doc = call(&url, &read, "rpc.discover", json!([]));
    let methods = doc["result"]["methods"].as_array().unwrap();
    assert_eq!(doc["result"]["openrpc"], "1.2.6");
    assert!(methods.len() >= 60, "{}", methods.len());
    let ban = methods.iter().find(|m| m["name"] == "net_ban").unwrap();
    assert_eq!(ban["x-role"], "admin");
    assert_eq!(ban["params"][0]["name"], "peer_id");
    // The cookie is admin.
    assert!(call(&url, &cookie(&node.dir), "keys_list", json!([]))
        .get("error")
        .is_none());

    // In a batch, each call is judged on its own.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "node_health"},
        {"jsonrpc": "2.0", "id": 2, "method": "net_ban", "params": ["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]},
    ])
    .to_string();
    let (status, body) = rpc_raw(&url, Some(&read), &batch);
    assert_eq!(status, 200, "{body}");
    let answers: Vec<Value> = serde_json::from_str(&body).unwrap();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id(1).get("result").is_some(), "{body}");
    assert_eq!(code(&by_id(2)), -32014, "{body}");

    // Every denial is in the audit log, with the caller; actions name it.
    let log = rpc_result(&url, &node.dir, "audit_list", json!([0, 1000]));
    let entries = log.as_array().unwrap();
    let denied: Vec<&Value> = entries.iter().filter(|e| e["action"] == "rpc.denied").collect();
    assert!(
        denied.iter().any(|e| e["who"] == "key:grafana"
            && e["detail"]["method"] == "net_ban"
            && e["detail"]["needed"] == "admin"),
        "{denied:?}"
    );
    assert_eq!(
        denied.len(),
        4 + 1 + 2,
        "grafana: 4 refused and 1 in the batch; ops: 2"
    );
    assert!(entries
        .iter()
        .any(|e| e["action"] == "bus.app_add" && e["who"] == "key:ops"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "keys.add" && e["who"] == "cookie"));

    // The metric counts denials by method.
    let (_, metrics) = http_get(&format!("{url}/metrics"));
    assert!(
        metrics.contains("vigil_rpc_denied_total{method=\"net_ban\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_revoked_key_stops_working_at_once_also_on_an_open_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    let key = add_key(&url, &node.dir, "dash", "operator");
    let listed = rpc_result(&url, &node.dir, "keys_list", json!([]));
    assert_eq!(listed[0]["name"], "dash");
    assert!(listed[0].get("secret").is_none() && !listed.to_string().contains(&key[6..]));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use jsonrpsee::core::client::ClientT;
        use jsonrpsee::rpc_params;
        use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClientBuilder};
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        let ws = WsClientBuilder::default()
            .set_headers(headers)
            .build(url.replace("http://", "ws://"))
            .await
            .expect("the key opens a WebSocket");
        let info: Value = ws.request("node_info", rpc_params![]).await.unwrap();
        assert_eq!(info["genesis_name"], "vigil-dev");

        let r = rpc_result(&url, &node.dir, "keys_revoke", json!(["dash"]));
        assert_eq!(r["revoked"], "dash");

        let e = ws
            .request::<Value, _>("node_info", rpc_params![])
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("-32015") || text.contains("was revoked"), "{text}");
        assert!(text.contains("key:dash"), "{text}");
    });

    // Over HTTP: a 401 that says what is wrong.
    let (status, body) = rpc_raw(
        &url,
        Some(&key),
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
    );
    assert_eq!(status, 401);
    assert!(
        body.contains("wrong credential") && body.contains("revoked"),
        "{body}"
    );
    // vigilctl with the revoked key says so.
    let o = vigilctl(&["--data-dir", s(&node.dir), "--key", &key, "status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused the API key"), "{}", stderr(&o));
    let log = rpc_result(&url, &node.dir, "audit_list", json!([0, 100]));
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "keys.revoke" && e["detail"]["name"] == "dash"),
        "{log}"
    );
}

#[test]
fn malformed_credentials_get_a_401_that_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node(&tmp);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#;
    for (header, says) in [
        (None, "no credential"),
        (Some("Basic dXNlcjpwYXNz"), "other schemes are not supported"),
        (Some("Bearer"), "expected `Bearer TOKEN`"),
        (Some("Bearer    "), "expected `Bearer TOKEN`"),
        (Some("bearer abc"), "expected `Bearer TOKEN`"),
        (Some("Bearer vigil_0000"), "wrong credential"),
    ] {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(h) = header {
            headers.push(("Authorization", h));
        }
        let (status, resp) = http("POST", &url, &headers, call);
        assert_eq!(status, 401, "{header:?}: {resp}");
        assert!(body(&resp).contains(says), "{header:?}: {}", body(&resp));
    }
    // Six failures from one address: one audit entry now (the rest are
    // written with their count when the minute ends).
    let log = rpc_result(&url, &node.dir, "audit_list", json!([0, 100]));
    let failed: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rpc.auth_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["who"], "stranger");
    assert_eq!(failed[0]["detail"]["source"], "127.0.0.1");
    assert!(failed[0]["detail"]["last"]["why"]
        .as_str()
        .unwrap()
        .contains("no credential"));
}

#[test]
fn vigilctl_makes_lists_uses_and_revokes_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _url) = dev_node(&tmp);
    let d = s(&node.dir);
    let o = vigilctl(&["--data-dir", d, "keys", "add", "viewer", "--role", "read"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let secret = stdout(&o).trim().to_owned();
    assert!(secret.starts_with("vigil_"), "{secret}");
    assert!(stderr(&o).contains("shown this once"), "{}", stderr(&o));

    let o = vigilctl(&["--data-dir", d, "keys", "add", "x", "--role", "root"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown role `root`: use read, operator or admin"),
        "{}",
        stderr(&o)
    );

    let o = vigilctl(&["--data-dir", d, "keys"]);
    assert!(
        stdout(&o).contains("viewer") && stdout(&o).contains("read"),
        "{}",
        stdout(&o)
    );

    // The key reads, and is refused what needs more, with what to do.
    let o = vigilctl(&["--data-dir", d, "--key", &secret, "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vigilctl(&["--data-dir", d, "--key", &secret, "stop"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs the admin role"), "{}", stderr(&o));

    // An RPC error reads as one, not as Rust debug text.
    let o = vigilctl(&["--data-dir", d, "epoch", "999999"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("epoch_get: error -3205") && !e.contains("ErrorObject"),
        "{e}"
    );
    let o = vigilctl(&["--data-dir", d, "keys", "revoke", "viewer"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vigilctl(&["--data-dir", d, "--key", &secret, "status"]);
    assert!(!o.status.success());
}
