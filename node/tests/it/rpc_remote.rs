//! The admin RPC against strangers and remote clients, over real sockets:
//! TLS (with a generated certificate, reloaded on SIGHUP), a refused
//! non-loopback bind, rate limits, DNS rebinding and browser origins,
//! per-address connection caps, oversized batches.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

fn dev_node_with(tmp: &tempfile::TempDir, env: &[(&str, &str)]) -> (Node, String) {
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = Node::spawn(cmd, &data);
    let url = node.wait_ready();
    (node, url)
}

const INFO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#;

#[test]
fn a_non_loopback_address_without_tls_is_refused_at_start_with_what_to_add() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let o = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("rpc.addr") && err.contains("rpc.tls_cert") && err.contains("API keys"),
        "{err}"
    );
    // Half a TLS setup is named too.
    let o = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"])
        .env("VIGIL_RPC__TLS_CERT", "/nonexistent/cert.pem")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("both rpc.tls_cert and rpc.tls_key"),
        "{}",
        stderr(&o)
    );
}

/// One HTTP/1.1 request over TLS, trusting only `ca`; (status, response).
fn https(
    addr: &str,
    ca: &rcgen::CertifiedKey,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // Until a reload takes, the server may show a certificate this
        // client does not trust: a failed handshake is status 0.
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => return (0, format!("TLS handshake: {e}"), Vec::new()),
        };
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec();
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp).await;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, text, leaf)
    })
}

fn write_cert(dir: &Path, ck: &rcgen::CertifiedKey) {
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
}

#[test]
fn tls_end_to_end_with_a_generated_certificate_reloaded_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let first = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    write_cert(tmp.path(), &first);
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    cmd.env("VIGIL_RPC__TLS_CERT", tmp.path().join("cert.pem"))
        .env("VIGIL_RPC__TLS_KEY", tmp.path().join("key.pem"));
    let node = Node::spawn(cmd, &data);
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(u) = std::fs::read_to_string(data.join("rpc.url")) {
            break u.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no rpc.url:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(url.starts_with("https://"), "{url}");
    let addr = url.trim_start_matches("https://").to_owned();

    // The cookie works from loopback, over TLS.
    let auth = format!("Bearer {}", cookie(&data));
    let (status, resp, leaf) = https(&addr, &first, &[("Authorization", &auth)], INFO);
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("vigil-dev"), "{resp}");
    assert_eq!(leaf, first.cert.der().as_ref());
    // An API key too; without a credential, 401.
    let r = https(
        &addr,
        &first,
        &[("Authorization", &auth)],
        r#"{"jsonrpc":"2.0","id":1,"method":"keys_add","params":["remote","read"]}"#,
    );
    let secret = body(&r.1);
    let secret: Value = serde_json::from_str(&secret).unwrap();
    let key = format!("Bearer {}", secret["result"]["secret"].as_str().unwrap());
    assert_eq!(https(&addr, &first, &[("Authorization", &key)], INFO).0, 200);
    assert_eq!(https(&addr, &first, &[], INFO).0, 401);
    // vigilctl, as a remote operator runs it: the URL, the key, the CA.
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, first.cert.pem()).unwrap();
    let secret_only = key.trim_start_matches("Bearer ");
    let o = vigilctl(&[
        "--rpc",
        &url,
        "--key",
        secret_only,
        "--ca",
        s(&ca),
        "status",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("vigil-dev"), "{}", stdout(&o));
    // Without the CA the system's roots do not know the certificate.
    let o = vigilctl(&["--rpc", &url, "--key", secret_only, "status"]);
    assert!(!o.status.success());
    // Plain HTTP to the TLS port gets nowhere.
    let (status, _) = rpc_raw(&format!("http://{addr}"), Some(&cookie(&data)), INFO);
    assert_ne!(status, 200);

    // A renewed certificate takes effect on SIGHUP; a broken one is refused
    // and the one in use stays.
    std::fs::write(tmp.path().join("cert.pem"), "not a certificate").unwrap();
    node.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(https(&addr, &first, &[("Authorization", &key)], INFO).0, 200);
    let second = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write_cert(tmp.path(), &second);
    node.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, leaf) = https(&addr, &second, &[("Authorization", &key)], INFO);
        if status == 200 && leaf == second.cert.der().as_ref() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not taken:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = node.log();
    assert!(
        log.contains("SIGHUP: not reloaded") && log.contains("rpc TLS certificate (the old one stays)"),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: reloaded") && log.contains("reloaded=rpc TLS certificate"),
        "{log}"
    );
}

#[test]
fn past_its_rate_a_caller_gets_429_or_a_json_rpc_error_and_others_are_not_slowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node_with(
        &tmp,
        &[
            ("VIGIL_RPC__RATE_PER_CALLER", "5"),
            ("VIGIL_RPC__RATE_BURST", "5"),
        ],
    );
    let make = |name: &str| {
        rpc_result(&url, &node.dir, "keys_add", json!([name, "read"]))["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (make("a"), make("b"));
    let statuses: Vec<u16> = (0..8).map(|_| rpc_raw(&url, Some(&a), INFO).0).collect();
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let (status, resp) = http(
        "POST",
        &url,
        &[
            ("Authorization", &format!("Bearer {a}")),
            ("Content-Type", "application/json"),
        ],
        INFO,
    );
    assert_eq!(status, 429);
    assert!(resp.to_ascii_lowercase().contains("retry-after: 1"), "{resp}");
    assert!(body(&resp).contains("key:a may make 5 calls/s"), "{resp}");
    assert_eq!(
        rpc_raw(&url, Some(&b), INFO).0,
        200,
        "another key is not slowed down"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(rpc_raw(&url, Some(&a), INFO).0, 200, "recovered after a second");

    // On a WebSocket each call counts: an error with the wait, the
    // connection stays usable.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use jsonrpsee::core::client::ClientT;
        use jsonrpsee::rpc_params;
        use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClientBuilder};
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).unwrap(),
        );
        let ws = WsClientBuilder::default()
            .set_headers(h)
            .build(url.replace("http://", "ws://"))
            .await
            .unwrap();
        let mut errors = Vec::new();
        for _ in 0..10 {
            if let Err(e) = ws.request::<Value, _>("node_health", rpc_params![]).await {
                errors.push(e.to_string());
            }
        }
        assert!(!errors.is_empty(), "no call was limited");
        assert!(
            errors[0].contains("rate limited") && errors[0].contains("-32017"),
            "{errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        ws.request::<Value, _>("node_health", rpc_params![])
            .await
            .expect("recovered");
    });
    let (_, metrics) = http_get(&format!("{url}/metrics"));
    assert!(
        metrics.contains("vigil_rpc_rate_limited_total{limit=\"caller\"}"),
        "{metrics}"
    );
}

#[test]
fn a_foreign_host_or_origin_is_refused_on_every_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node_with(&tmp, &[]);
    let c = format!("Bearer {}", cookie(&node.dir));
    let host = url.trim_start_matches("http://").to_owned();
    // A raw request with the Host of our choosing (the helper sends the real one).
    let raw = |method: &str, path: &str, headers: &[(&str, &str)]| -> (u16, String) {
        let mut s = TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = if method == "POST" { INFO } else { "" };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (
            out.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            out,
        )
    };
    let json = ("Content-Type", "application/json");
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("POST", "/"),
    ] {
        // A DNS-rebinding page: the right address, its own name.
        let (status, resp) = raw(
            method,
            path,
            &[("Host", "evil.example:8645"), ("Authorization", &c), json],
        );
        assert_eq!(status, 403, "{method} {path}: {resp}");
        assert!(resp.contains("rpc.allowed_hosts"), "{resp}");
        // A page on another origin.
        let (status, resp) = raw(
            method,
            path,
            &[
                ("Host", &host),
                ("Origin", "https://evil.example"),
                ("Authorization", &c),
                json,
            ],
        );
        assert_eq!(status, 403, "{method} {path}: {resp}");
        assert!(resp.contains("rpc.cors_origins"), "{resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("access-control-allow-origin"),
            "{resp}"
        );
        // The node's own name passes.
        let (status, resp) = raw(method, path, &[("Host", &host), ("Authorization", &c), json]);
        assert_eq!(status, 200, "{method} {path}: {resp}");
    }
    // No Host at all (an HTTP/1.0 probe, a script): not a browser, served.
    let (status, resp) = raw("GET", "/health", &[]);
    assert_eq!(status, 200, "{resp}");
}

#[test]
fn a_configured_origin_gets_cors_and_others_still_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node_with(&tmp, &[("VIGIL_RPC__CORS_ORIGINS", "https://ops.example")]);
    let c = format!("Bearer {}", cookie(&node.dir));
    let (status, resp) = http(
        "POST",
        &url,
        &[
            ("Origin", "https://ops.example"),
            ("Authorization", &c),
            ("Content-Type", "application/json"),
        ],
        INFO,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://ops.example"),
        "{resp}"
    );
    let (status, resp) = http("OPTIONS", &url, &[("Origin", "https://ops.example")], "");
    assert_eq!(status, 204, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("access-control-allow-headers: authorization"),
        "{resp}"
    );
    let (status, _) = http("OPTIONS", &url, &[("Origin", "https://evil.example")], "");
    assert_eq!(status, 403);
}

#[test]
fn connections_per_address_and_batch_size_are_capped_with_clear_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = dev_node_with(
        &tmp,
        &[
            ("VIGIL_RPC__MAX_CONNECTIONS_PER_IP", "2"),
            ("VIGIL_RPC__MAX_BATCH", "4"),
        ],
    );
    let host = url.trim_start_matches("http://").to_owned();
    // Two idle connections held; the third is refused with why.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&host).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(&host).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = third.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("rpc.max_connections_per_ip"), "{out}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let c = cookie(&node.dir);
    assert_eq!(
        rpc_raw(&url, Some(&c), INFO).0,
        200,
        "a closed connection frees its place"
    );

    let batch = |n: usize| {
        let calls: Vec<Value> = (0..n)
            .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "node_health"}))
            .collect();
        rpc_raw(&url, Some(&c), &Value::Array(calls).to_string())
    };
    let (status, ok) = batch(4);
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&ok).unwrap().len(), 4);
    let (_, too_big) = batch(5);
    let v: Value = serde_json::from_str(&too_big).unwrap();
    assert_eq!(v["error"]["code"], -32010, "{too_big}");
    assert_eq!(v["error"]["data"], "Exceeded max limit of 4", "{too_big}");
}

#[test]
fn clients_outside_the_allowed_networks_are_refused_before_any_http() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let bad = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"])
        .env("VIGIL_RPC__ALLOWED_NETWORKS", "10.0.0.0/33")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("rpc.allowed_networks") && stderr(&bad).contains("10.0.0.0/33"),
        "{}",
        stderr(&bad)
    );

    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    cmd.env("VIGIL_RPC__ALLOWED_NETWORKS", "10.0.0.0/8");
    let node = Node::spawn(cmd, &data);
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(u) = std::fs::read_to_string(data.join("rpc.url")) {
            break u.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no rpc.url:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, resp) = http_get(&format!("{url}/health"));
    assert_eq!(status, 403, "{resp}");
    assert!(
        resp.contains("127.0.0.1 is not in rpc.allowed_networks"),
        "{resp}"
    );
    let (status, _) = rpc_raw(&url, Some(&cookie(&data)), INFO);
    assert_eq!(status, 403, "the cookie does not open it either");
}
