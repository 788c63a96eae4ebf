use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASS: &str = "correct horse battery staple";

pub fn vigil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// `vigilctl` lives beside `vigil` in the target dir; `scripts/test` builds it first.
pub fn vigilctl_bin() -> PathBuf {
    let p = vigil_bin().with_file_name("vigilctl");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

pub fn vigil(args: &[&str]) -> Command {
    let mut c = Command::new(vigil_bin());
    c.args(args)
        .env_remove("VIGIL_PASSPHRASE")
        .env_remove("RUST_LOG")
        .env_remove("VIGIL_DATA_DIR")
        // Tests run nodes side by side: every node's bus takes a free port.
        .env("VIGIL_BUS__ADDR", "127.0.0.1:0")
        .env("VIGIL_NETWORK__LISTEN", "/ip4/127.0.0.1/tcp/0")
        // A VDF worker keeps a core busy; tests of other parts run without
        // one (the epoch tests turn it on with VIGIL_VDF__COMPUTE=true).
        .env("VIGIL_VDF__COMPUTE", "false");
    c
}

pub fn vigilctl(args: &[&str]) -> Output {
    Command::new(vigilctl_bin())
        .args(args)
        .env_remove("VIGIL_DATA_DIR")
        .output()
        .expect("spawn vigilctl")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes the passphrase file and returns its path.
pub fn pass_file(dir: &Path) -> PathBuf {
    let p = dir.join("pass");
    std::fs::write(&p, format!("{PASS}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `vigil init` with a passphrase file; returns the peer id it printed.
pub fn init(data: &Path, genesis: &str, pass: &Path) -> String {
    let o = vigil(&[
        "init",
        "--data-dir",
        s(data),
        "--genesis",
        genesis,
        "--passphrase-file",
        s(pass),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "init failed: {}", stderr(&o));
    stdout(&o)
        .lines()
        .find_map(|l| l.trim().strip_prefix("peer id").map(|r| r.trim().to_owned()))
        .expect("init prints the peer id")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `vigil dev` in `tmp/dev` with `config` as its config file, once ready:
/// the node, its RPC URL and its data dir.
pub fn dev_with_config(tmp: &Path, config: &str) -> (Node, String, PathBuf) {
    let cfg = tmp.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let data = tmp.join("dev");
    let mut node = Node::spawn(
        vigil(&[
            "dev",
            "--data-dir",
            s(&data),
            "--rpc-addr",
            "127.0.0.1:0",
            "--config",
            s(&cfg),
        ]),
        &data,
    );
    let url = node.wait_ready();
    (node, url, data)
}

/// A running node process, killed on drop.
pub struct Node {
    pub child: Child,
    pub dir: PathBuf,
    log: PathBuf,
    out: PathBuf,
}

impl Node {
    /// Starts `vigil <args>` with output to files beside `dir`.
    pub fn spawn(mut cmd: Command, dir: &Path) -> Self {
        let parent = dir.parent().unwrap();
        let n = std::fs::read_dir(parent).unwrap().count();
        let log = parent.join(format!("node{n}.stderr"));
        let out = parent.join(format!("node{n}.stdout"));
        let child = cmd
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn vigil");
        Node {
            child,
            dir: dir.to_owned(),
            log,
            out,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for `rpc.url` and `/ready` 200; returns the URL.
    pub fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("node exited early with {status}:\n{}", self.log());
            }
            if let Ok(url) = std::fs::read_to_string(self.dir.join("rpc.url")) {
                let url = url.trim().to_owned();
                if http_get(&format!("{url}/ready")).0 == 200 {
                    return url;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node not ready in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for exit within `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit in {secs} s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vigil run` on an initialized dir with an ephemeral RPC port (to add env vars before spawning).
pub fn run_cmd(data: &Path, pass: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "run",
        "--data-dir",
        s(data),
        "--passphrase-file",
        s(pass),
        "--rpc-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

/// Starts `vigil run` on an initialized dir with an ephemeral RPC port.
pub fn run_node(data: &Path, pass: &Path, extra: &[&str]) -> Node {
    Node::spawn(run_cmd(data, pass, extra), data)
}

/// Minimal HTTP/1.1 client: (status, headers+body text).
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Ok(mut stream) = TcpStream::connect(host) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    // A server may answer (413) and close before reading a large body: read the answer anyway.
    let _ = stream.write_all(req.as_bytes());
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn http_get(url: &str) -> (u16, String) {
    http("GET", url, &[], "")
}

/// Body of an HTTP response (after the blank line); chunked bodies are de-chunked.
pub fn body(resp: &str) -> String {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or(("", resp));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// POSTs a JSON-RPC body with the node's cookie; returns (status, JSON body).
pub fn rpc_raw(url: &str, cookie: Option<&str>, payload: &str) -> (u16, String) {
    let auth = cookie.map(|c| format!("Bearer {c}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let (status, resp) = http("POST", url, &headers, payload);
    (status, body(&resp))
}

/// A JSON-RPC call with the node's cookie; the whole response object.
pub fn rpc_envelope(url: &str, dir: &Path, method: &str, params: serde_json::Value) -> serde_json::Value {
    let payload =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let (status, body) = rpc_raw(url, Some(&cookie(dir)), &payload);
    assert_eq!(status, 200, "{method}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A JSON-RPC call that must succeed; its result.
pub fn rpc_result(url: &str, dir: &Path, method: &str, params: serde_json::Value) -> serde_json::Value {
    let v = rpc_envelope(url, dir, method, params);
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

pub fn cookie(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".cookie"))
        .unwrap()
        .trim()
        .to_owned()
}
