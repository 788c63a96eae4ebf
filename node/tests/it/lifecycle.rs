use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// anvil's first well-known funded account (`vigil dev`'s).
const ANVIL_DEV: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

#[test]
fn init_run_status_sigterm_then_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    let peer = init(&data, "testnet", &pass);

    let mut node = run_node(&data, &pass, &[]);
    node.wait_ready();
    let o = vigilctl(&["--data-dir", s(&data), "status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["info"]["peer_id"], peer.as_str());
    assert_eq!(v["info"]["genesis_name"], "vigil-testnet");
    assert_eq!(v["info"]["insecure_key"], false);
    assert_eq!(v["health"]["status"], "ok");
    assert_eq!(v["health"]["ready"], true);

    let human = vigilctl(&["--data-dir", s(&data), "status"]);
    assert!(stdout(&human).contains(&peer), "{}", stdout(&human));
    // Its settlement-chain account: made by init, encrypted like the node key.
    let evm = v["info"]["evm_address"].as_str().unwrap().to_owned();
    assert!(evm.starts_with("0x") && evm.len() == 42, "{evm}");
    assert_ne!(evm, ANVIL_DEV, "a real node gets its own account");
    assert!(stdout(&human).contains(&evm), "{}", stdout(&human));
    let key = std::fs::read(data.join("account.key")).unwrap();
    assert_eq!(&key[..10], b"VIGILEVM\x01\x01", "encrypted account key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("account.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    node.signal("TERM");
    let status = node.wait_exit(20);
    assert!(status.success(), "exit {status}:\n{}", node.log());
    assert!(node.log().contains("stopped cleanly"), "{}", node.log());
    assert!(!data.join(".cookie").exists() && !data.join("rpc.url").exists());

    // Same data dir again: same identity; stopped this time over RPC.
    let mut again = run_node(&data, &pass, &[]);
    again.wait_ready();
    let o = vigilctl(&["--data-dir", s(&data), "status", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["info"]["peer_id"], peer.as_str());
    assert_eq!(v["info"]["evm_address"], evm.as_str(), "same account");
    let o = vigilctl(&["--data-dir", s(&data), "stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(again.wait_exit(20).success(), "{}", again.log());

    // A data dir from before account keys gets one at its next start,
    // encrypted under the node's passphrase.
    std::fs::remove_file(data.join("account.key")).unwrap();
    let mut third = run_node(&data, &pass, &[]);
    third.wait_ready();
    let o = vigilctl(&["--data-dir", s(&data), "status", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let created = v["info"]["evm_address"].as_str().unwrap().to_owned();
    assert!(created.starts_with("0x") && created != evm && created != ANVIL_DEV);
    assert!(third.log().contains("created the account key"), "{}", third.log());
    assert_eq!(
        &std::fs::read(data.join("account.key")).unwrap()[..10],
        b"VIGILEVM\x01\x01"
    );
    third.signal("TERM");
    assert!(third.wait_exit(20).success(), "{}", third.log());

    // With the node gone, vigilctl says what to do.
    let o = vigilctl(&["--data-dir", s(&data), "status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is the node running?"), "{}", stderr(&o));
}

#[test]
fn sigint_also_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "dev", &pass);
    // With epochs and a reload, so more kinds of lines are written.
    let mut cmd = run_cmd(&data, &pass, &["--log-format", "json"]);
    cmd.env("VIGIL_VDF__COMPUTE", "true");
    let mut node = Node::spawn(cmd, &data);
    node.wait_ready();
    let t0 = Instant::now();
    while !node.log().contains("epoch appended") {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    node.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    node.signal("INT");
    assert!(node.wait_exit(20).success(), "{}", node.log());
    // JSON log lines parse, and their values are typed: numbers as numbers
    // (durations in `_ms`/`_secs` keys), no Rust debug text (`Some(..)`,
    // `None`, `520.6µs`, `[..]` inside a string).
    let lines: Vec<Value> = node
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stopped = lines.iter().find(|l| l["message"] == "stopped cleanly").unwrap();
    assert!(stopped["uptime_secs"].is_f64(), "{stopped}");
    let flushed = lines.iter().find(|l| l["message"] == "database flushed").unwrap();
    assert!(flushed["took_ms"].is_f64(), "{flushed}");
    let stopping = lines
        .iter()
        .find(|l| l["message"] == "stopping the actor tree")
        .unwrap();
    assert_eq!(stopping["reason"], "SIGINT", "{stopping}");
    let duration = |v: &str| {
        let digits = v.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ');
        digits != v && !digits.is_empty() && digits.parse::<f64>().is_ok()
    };
    for l in &lines {
        for (k, v) in l.as_object().unwrap() {
            let Some(v) = v.as_str() else { continue };
            if k == "message" || k == "timestamp" {
                continue;
            }
            assert!(
                !v.starts_with("Some(") && v != "None" && !v.starts_with('[') && !duration(v),
                "{k} = {v:?} in {l}"
            );
        }
    }
}

#[test]
fn dev_creates_its_dir_once_and_reuses_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut first = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    let url = first.wait_ready();
    let banner = first.stdout();
    assert!(
        banner.contains(&url) && banner.contains(".cookie") && banner.contains("/metrics"),
        "{banner}"
    );
    assert!(first.log().contains("UNENCRYPTED"), "{}", first.log());
    // Its settlement-chain account is anvil's well-known key, and it says so.
    assert!(
        first.log().contains("anvil's well-known funded dev key"),
        "{}",
        first.log()
    );
    let o = vigilctl(&["--data-dir", s(&data), "status", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["info"]["evm_address"], ANVIL_DEV);
    let peer = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("peer id"))
        .unwrap()
        .trim()
        .to_owned();
    first.signal("TERM");
    assert!(first.wait_exit(20).success());

    let mut second = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    second.wait_ready();
    assert!(second.stdout().contains(&peer), "{}", second.stdout());
    second.signal("TERM");
    assert!(second.wait_exit(20).success());
}

#[test]
fn a_second_node_on_the_same_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut first = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    first.wait_ready();
    let o = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("locked by another process"), "{}", stderr(&o));
    first.signal("TERM");
    assert!(first.wait_exit(20).success());
}

#[test]
fn a_second_dev_node_on_the_machine_starts_as_the_readme_says() {
    let tmp = tempfile::tempdir().unwrap();
    // Hold the default ports, as a first `vigil dev` would (if something
    // else holds them already, they are just as taken).
    let _tcp = std::net::TcpListener::bind(("0.0.0.0", 30345));
    let _udp = std::net::UdpSocket::bind(("0.0.0.0", 30345));
    let _bus = std::net::TcpListener::bind(("127.0.0.1", 8646));
    let data = tmp.path().join("d2");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    cmd.env_remove("VIGIL_BUS__ADDR")
        .env_remove("VIGIL_NETWORK__LISTEN");
    let mut node = Node::spawn(cmd, &data);
    node.wait_ready();
    let log = node.log();
    assert!(
        log.contains("p2p port 30345 is taken") && log.contains("bus port 8646 is taken"),
        "{log}"
    );
    let bus = std::fs::read_to_string(data.join("bus.url")).unwrap();
    assert!(!bus.contains(":8646"), "{bus}");
    node.signal("TERM");
    assert!(node.wait_exit(20).success());

    // A port set on purpose is used as given, and a taken one says why and what to do.
    let mut cmd = vigil(&[
        "dev",
        "--data-dir",
        s(&data),
        "--rpc-addr",
        "127.0.0.1:0",
        "--listen",
        "/ip4/0.0.0.0/tcp/30345",
    ]);
    cmd.env_remove("VIGIL_NETWORK__LISTEN");
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(5), "5: an address in use");
    let e = stderr(&o);
    assert!(
        e.contains("cannot listen on /ip4/0.0.0.0/tcp/30345")
            && e.contains("in use")
            && e.contains("--listen"),
        "{e}"
    );
}

#[test]
fn a_damaged_data_dir_names_the_missing_file_and_an_edited_genesis_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let start = |dir: &std::path::Path| vigil(&["dev", "--data-dir", s(dir), "--rpc-addr", "127.0.0.1:0"]);
    let mut node = Node::spawn(start(&data), &data);
    node.wait_ready();
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
    let copy = tmp.path().join("copy");
    assert!(std::process::Command::new("cp")
        .args(["-r", s(&data), s(&copy)])
        .status()
        .unwrap()
        .success());

    std::fs::remove_file(data.join("node.key")).unwrap();
    let o = start(&data).output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("is missing node.key") && e.contains("restore it from your backup"),
        "{e}"
    );

    let g = copy.join("genesis.toml");
    let text = std::fs::read_to_string(&g).unwrap();
    let edited = text.replacen("network = \"", "network = \"edited-", 1);
    assert_ne!(edited, text, "{text}");
    std::fs::write(&g, edited).unwrap();
    let o = start(&copy).output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("genesis.toml was edited") && e.contains("restore the original file"),
        "{e}"
    );
}

#[test]
fn sighup_reloads_the_log_filter_and_security_rules_and_names_what_needs_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, url, data) = dev_with_config(tmp.path(), "[log]\nlevel = \"info\"\n");
    let conf = tmp.path().join("config.toml");
    std::fs::write(
        &conf,
        "[log]\nlevel = \"debug\"\n[rpc]\nmax_batch = 8\n[[security.rules]]\nwhen = \"reorg_depth >= 3\"\naction = \"pause:challenges\"\n",
    )
    .unwrap();
    node.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !node.log().contains("SIGHUP: reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = node.log();
    assert!(
        log.contains("log.level = \\\"debug\\\"") || log.contains("log.level = \"debug\""),
        "{log}"
    );
    assert!(log.contains("security.rules (1 rules)"), "{log}");
    assert!(
        log.contains("take effect only after a restart") && log.contains("rpc.max_batch"),
        "{log}"
    );
    let rules = rpc_result(&url, &data, "security_rules", serde_json::json!([]));
    assert_eq!(rules["rules"][0]["action"], "pause:challenges", "{rules}");
    let audit = rpc_result(&url, &data, "audit_list", serde_json::json!([0, 100]));
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.reload"),
        "{audit}"
    );

    // A broken file is refused whole; the node runs on.
    std::fs::write(&conf, "[log]\nlevel = \"loud\"\n").unwrap();
    node.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !node.log().contains("configuration not reread") {
        assert!(std::time::Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(http_get(&format!("{url}/health")).0, 200);
    node.signal("TERM");
    assert!(
        node.wait_exit(20).success(),
        "SIGHUP left the node able to stop cleanly"
    );
}

#[test]
fn no_file_points_at_a_stopped_node_or_one_that_failed_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    node.wait_ready();
    for f in [".cookie", "rpc.url", "bus.url"] {
        assert!(data.join(f).exists(), "{f} while running");
    }
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
    for f in [".cookie", "rpc.url", "bus.url", "bus.sock"] {
        assert!(!data.join(f).exists(), "{f} left after a clean stop");
    }
    // The bus cannot bind: the start fails after the RPC wrote its files.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let o = vigil(&[
        "dev",
        "--data-dir",
        s(&data),
        "--rpc-addr",
        "127.0.0.1:0",
        "--bus-addr",
        &port,
    ])
    .env_remove("VIGIL_BUS__ADDR")
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bus cannot listen"), "{}", stderr(&o));
    for f in [".cookie", "rpc.url", "bus.url"] {
        assert!(!data.join(f).exists(), "{f} left after a failed start");
    }
}

#[test]
fn init_asks_for_the_passphrase_on_a_terminal_and_warns_about_readable_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A passphrase file others can read: init works, and says so.
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = tmp.path().join("a");
    let o = vigil(&[
        "init",
        "--data-dir",
        s(&data),
        "--genesis",
        "dev",
        "--passphrase-file",
        s(&pass),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is readable by other users (mode 0644): chmod 600"),
        "{}",
        stderr(&o)
    );
    // The next line works as printed.
    assert!(
        stdout(&o).contains(&format!(
            "vigil run --data-dir {} --passphrase-file {}",
            data.display(),
            pass.display()
        )),
        "{}",
        stdout(&o)
    );

    // On a terminal (a pty from `script`), init asks twice, with no echo.
    let data = tmp.path().join("b");
    let cmd = format!(
        "{} init --data-dir {} --genesis dev",
        vigil_bin().display(),
        data.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("VIGIL_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(b"typed secret\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(b"typed secret\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("passphrase for the node key") && out.contains("the same passphrase again"),
        "{out}"
    );
    // The typed passphrase is the key's.
    let good = tmp.path().join("good");
    std::fs::write(&good, "typed secret\n").unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut node = run_node(&data, &good, &[]);
    node.wait_ready();
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

/// Under systemd (`Type=notify`, `WatchdogSec`): the node says READY=1 with a
/// status line once it serves, pings the watchdog every half interval,
/// brackets a SIGHUP reload with RELOADING=1 / READY=1, and says STOPPING=1
/// on SIGTERM. The test plays systemd's side of the socket.
#[test]
fn under_systemd_it_notifies_ready_the_watchdog_a_reload_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "dev", &pass);
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut cmd = run_cmd(&data, &pass, &[]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let mut node = Node::spawn(cmd, &data);
    let mut got = Vec::<String>::new();
    let mut next = |want: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} ({e}); got {got:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            got.push(msg.clone());
            if msg.contains(want) {
                return msg;
            }
        }
    };
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=running: peer 12D3KooW"), "{ready}");
    node.wait_ready();
    let t0 = Instant::now();
    for _ in 0..3 {
        next("WATCHDOG=1");
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    node.signal("HUP");
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let done = next("READY=1");
    assert!(done.contains("last SIGHUP"), "{done}");
    node.signal("TERM");
    next("STOPPING=1");
    assert_eq!(node.wait_exit(20).code(), Some(0), "{}", node.log());
}

/// `packaging/vigil.service` passes `systemd-analyze verify` (with ExecStart
/// pointed at the built binary), is `Type=notify` with a watchdog, and does
/// not restart on the exit codes a restart cannot fix.
#[test]
fn the_systemd_unit_verifies_and_matches_the_exit_codes() {
    use vigil_node::exit::Exit;
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/vigil.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "no {line}");
    }
    let prevent: Vec<u8> = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    let want: Vec<u8> = [Exit::Usage, Exit::Config, Exit::Key, Exit::Genesis, Exit::DataDir]
        .iter()
        .map(|e| e.code())
        .collect();
    assert_eq!(prevent, want);
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: unit syntax not verified");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("vigil.service");
    std::fs::write(&f, unit.replace("/usr/local/bin/vigil", s(&vigil_bin()))).unwrap();
    let o = Command::new(analyze)
        .args(["verify", "--man=no"]) // the man page is installed with the binary
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `vigil` and `vigilctl` write their man pages (one per subcommand, which
/// groff renders without a warning) and bash completion scripts (which bash
/// parses) from their clap definitions.
#[test]
fn completions_and_man_pages_come_from_the_command_line_definitions() {
    let tmp = tempfile::tempdir().unwrap();
    let man = tmp.path().join("man1");
    for (bin, sub) in [(vigil_bin(), "run"), (vigilctl_bin(), "storage-put")] {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let o = Command::new(&bin)
            .args(["man", "--out", s(&man)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let page = man.join(format!("{name}-{sub}.1"));
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(text.contains(&format!(".TH {name}-{sub}")), "{text}");
        if let Ok(groff) = which("groff") {
            let o = Command::new(groff)
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(&page)
                .output()
                .unwrap();
            assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
        }
        let o = Command::new(&bin).args(["completions", "bash"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let script = tmp.path().join(format!("{name}.bash"));
        std::fs::write(&script, &o.stdout).unwrap();
        assert!(stdout(&o).contains("--data-dir"), "{}", stdout(&o));
        let o = Command::new("bash").arg("-n").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = vigil(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");
    assert!(
        stderr(&o).contains("bash") && stderr(&o).contains("zsh"),
        "{}",
        stderr(&o)
    );
}
