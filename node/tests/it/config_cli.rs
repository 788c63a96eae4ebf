use std::path::Path;

use crate::util::*;

fn dump(data: &Path, env: &[(&str, &str)], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--data-dir", s(data), "--dump-config"];
    args.extend_from_slice(extra);
    let mut cmd = vigil(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn dumped(o: &std::process::Output) -> toml::Value {
    assert!(o.status.success(), "{}", stderr(o));
    toml::from_str(&stdout(o)).unwrap()
}

#[test]
fn precedence_defaults_file_env_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();

    // Defaults.
    let v = dumped(&dump(&data, &[], &[]));
    assert_eq!(v["rpc"]["addr"].as_str(), Some("127.0.0.1:8645"));
    assert_eq!(v["log"]["format"].as_str(), Some("pretty"));

    // DATA_DIR/config.toml beats defaults.
    std::fs::write(
        data.join("config.toml"),
        "[rpc]\naddr = \"127.0.0.1:1001\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let v = dumped(&dump(&data, &[], &[]));
    assert_eq!(v["rpc"]["addr"].as_str(), Some("127.0.0.1:1001"));
    assert_eq!(v["log"]["format"].as_str(), Some("json"));

    // Environment beats the file; unrelated VIGIL_ variables are not config keys.
    let env = [
        ("VIGIL_RPC__ADDR", "127.0.0.1:1002"),
        ("VIGIL_PASSPHRASE", "x"),
        ("VIGIL_SHUTDOWN__ACTOR_TIMEOUT_MS", "777"),
    ];
    let v = dumped(&dump(&data, &env, &[]));
    assert_eq!(v["rpc"]["addr"].as_str(), Some("127.0.0.1:1002"));
    assert_eq!(v["shutdown"]["actor_timeout_ms"].as_integer(), Some(777));
    assert_eq!(v["log"]["format"].as_str(), Some("json"));

    // Flags beat everything.
    let flags = [
        "--rpc-addr",
        "127.0.0.1:1003",
        "--log-format",
        "pretty",
        "--listen",
        "/ip4/127.0.0.1/tcp/4001",
    ];
    let v = dumped(&dump(&data, &env, &flags));
    assert_eq!(v["rpc"]["addr"].as_str(), Some("127.0.0.1:1003"));
    assert_eq!(v["log"]["format"].as_str(), Some("pretty"));
    assert_eq!(v["network"]["listen"].as_array().unwrap().len(), 1);

    // --config replaces DATA_DIR/config.toml.
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, "[storage]\ncache_capacity_mb = 5\n").unwrap();
    let v = dumped(&dump(&data, &[], &["--config", s(&other)]));
    assert_eq!(v["storage"]["cache_capacity_mb"].as_integer(), Some(5));
    assert_eq!(v["rpc"]["addr"].as_str(), Some("127.0.0.1:8645"));
}

#[test]
fn the_init_template_is_valid_and_means_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("data");
    init(&data, "dev", &pass);
    let template = std::fs::read_to_string(data.join("config.toml")).unwrap();
    assert!(template.contains("# addr = \"127.0.0.1:8645\""), "{template}");
    let with_template = dumped(&dump(&data, &[], &[]));
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(with_template, dumped(&dump(&empty, &[], &[])));
}

fn refused(data: &Path, file: &str, env: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("config.toml"), file).unwrap();
    let o = dump(data, env, &[]);
    assert_eq!(o.status.code(), Some(3), "accepted: {}", stdout(&o)); // 3: config error
    stderr(&o)
}

#[test]
fn bad_config_is_refused_with_the_key_and_what_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");

    let e = refused(&data, "[rpc]\nmax_connections = \"lots\"\n", &[]);
    assert!(e.contains("max_connections"), "{e}");

    let e = refused(
        &data,
        "[storage]\ncache_capacity_mb = 0\n[shutdown]\nactor_timeout_ms = 1\n",
        &[],
    );
    assert!(
        e.contains("storage.cache_capacity_mb = 0: allowed 1..=65536"),
        "{e}"
    );
    assert!(
        e.contains("shutdown.actor_timeout_ms = 1: allowed 100..=600000"),
        "{e}"
    );

    let e = refused(&data, "[rpc]\nadress = \"127.0.0.1:1\"\n", &[]);
    assert!(e.contains("unknown field `adress`") && e.contains("addr"), "{e}");

    let e = refused(&data, "[telemetry]\nenabled = true\n", &[]);
    assert!(e.contains("unknown field `telemetry`"), "{e}");

    let e = refused(&data, "[rpc]\naddr = \"0.0.0.0:8645\"\n", &[]);
    assert!(
        e.contains("rpc.addr = 0.0.0.0:8645") && e.contains("loopback"),
        "{e}"
    );

    let e = refused(&data, "", &[("VIGIL_LOG__FORMAT", "yaml")]);
    assert!(e.contains("log.format") && e.contains("yaml"), "{e}");

    let e = refused(&data, "[network]\nbootnodes = [\"/ip4/1.2.3.4/tcp/1\"]\n", &[]);
    assert!(
        e.contains("network.bootnodes[0]") && e.contains("/p2p/<peer id>"),
        "{e}"
    );

    let e = refused(&data, "[rpc\naddr=", &[]);
    assert!(e.contains("config.toml"), "{e}");

    // Flags are checked by the parser.
    let o = vigil(&[
        "run",
        "--data-dir",
        s(&data),
        "--rpc-addr",
        "localhost",
        "--dump-config",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--rpc-addr"), "{}", stderr(&o));
}

#[test]
fn the_operator_guide_documents_every_config_key() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator-guide.md")).unwrap();
    for (key, _) in vigil_node::config::KEYS {
        assert!(
            guide.contains(&format!("`{key}`")),
            "docs/operator-guide.md does not document `{key}`"
        );
    }
}

#[test]
fn a_log_filter_that_would_silence_the_node_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // `loud` parses as a target: the node would log nothing else at all.
    let o = dump(&data, &[("VIGIL_LOG__LEVEL", "loud")], &[]);
    assert!(!o.status.success(), "accepted: {}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("log.level") && e.contains("`loud` is neither a level nor target=level"),
        "{e}"
    );
    let o = dump(&data, &[("RUST_LOG", "info,vigil_actors=loud")], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("RUST_LOG (environment)"), "{}", stderr(&o));
    let o = dump(&data, &[("RUST_LOG", "verbose")], &[]);
    assert!(
        stderr(&o).contains("`verbose` is neither a level"),
        "{}",
        stderr(&o)
    );
    // Good ones pass.
    for good in [
        "info",
        "warn,vigil_actors=debug",
        "OFF",
        "vigil_actors::net=trace",
    ] {
        let o = dump(&data, &[("RUST_LOG", good), ("VIGIL_LOG__LEVEL", good)], &[]);
        assert!(o.status.success(), "{good}: {}", stderr(&o));
    }
}
