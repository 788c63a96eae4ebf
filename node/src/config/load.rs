//! Layered loading with the `config` crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use vigil_genesis::Problem;

use super::{Config, LogFormat};

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--rpc-addr`.
    pub rpc_addr: Option<SocketAddr>,
    /// `--listen`, repeatable; replaces `network.listen` when given.
    pub listen: Vec<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--bus-addr`.
    pub bus_addr: Option<SocketAddr>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--config FILE` names a file that does not exist.
    #[error("config file {0} not found: pass an existing file to --config, or leave --config out to use DATA_DIR/config.toml and the defaults")]
    Missing(PathBuf),
    /// A source could not be read or parsed (TOML syntax and the like).
    #[error("cannot load the configuration: {0}")]
    Load(#[source] config::ConfigError),
    /// A key has the wrong type or is unknown.
    #[error("configuration key `{path}`: {message}{}", allowed.map(|a| format!("\n  allowed: {a}")).unwrap_or_default())]
    Type {
        /// Key path, e.g. `rpc.addr`.
        path: String,
        /// What serde found wrong.
        message: String,
        /// What the key accepts, when it is a known key.
        allowed: Option<&'static str>,
    },
    /// Values out of range; every problem is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Environment variables that configure the node (`VIGIL_<SECTION>__<KEY>`).
/// Others with the prefix (`VIGIL_PASSPHRASE`, `VIGIL_DATA_DIR`) are flags' and skipped.
fn config_env(vars: &[(String, String)]) -> config::Map<String, String> {
    vars.iter()
        .filter(|(k, _)| k.starts_with("VIGIL_") && k.contains("__"))
        .cloned()
        .collect()
}

/// Loads defaults < `file` < environment `vars` < `overrides`, then validates.
pub fn load(
    file: Option<&Path>,
    vars: &[(String, String)],
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix("VIGIL")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("network.listen")
            .with_list_parse_key("network.bootnodes")
            .with_list_parse_key("rpc.allowed_hosts")
            .with_list_parse_key("rpc.cors_origins")
            .with_list_parse_key("rpc.allowed_networks")
            .with_list_parse_key("bus.allowed_origins")
            .try_parsing(true)
            .source(Some(config_env(vars))),
    );
    let set = |b: config::ConfigBuilder<_>, key: &str, v: config::Value| {
        b.set_override(key, v).map_err(ConfigError::Load)
    };
    if let Some(addr) = overrides.rpc_addr {
        builder = set(builder, "rpc.addr", addr.to_string().into())?;
    }
    if !overrides.listen.is_empty() {
        builder = set(builder, "network.listen", overrides.listen.clone().into())?;
    }
    if let Some(addr) = overrides.bus_addr {
        builder = set(builder, "bus.addr", addr.to_string().into())?;
    }
    if let Some(addr) = overrides.metrics_addr {
        builder = set(builder, "metrics.addr", addr.to_string().into())?;
    }
    if let Some(format) = overrides.log_format {
        builder = set(builder, "log.format", format.as_str().into())?;
    }
    let layered = builder.build().map_err(ConfigError::Load)?;
    let cfg: Config = serde_path_to_error::deserialize(layered).map_err(|e| {
        let path = e.path().to_string();
        let allowed = super::KEYS.iter().find(|(k, _)| *k == path).map(|(_, doc)| *doc);
        ConfigError::Type {
            path,
            message: e.into_inner().to_string(),
            allowed,
        }
    })?;
    let mut problems = cfg.problems();
    // RUST_LOG wins over log.level when set: a bad one must not silence the
    // node either.
    if let Some((_, filter)) = vars.iter().find(|(k, _)| k == "RUST_LOG") {
        if let Err(allowed) = super::validate::check_log_filter(filter) {
            problems.push(vigil_genesis::Problem {
                field: "RUST_LOG (environment)".into(),
                value: format!("{filter:?}"),
                allowed,
            });
        }
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn layers_apply_in_order() {
        let file = write("[rpc]\naddr = \"127.0.0.1:1001\"\nmax_connections = 7\n[log]\nformat = \"json\"\n");
        let none = Overrides::default();
        let c = load(Some(file.path()), &[], &none).unwrap();
        assert_eq!(c.rpc.addr.port(), 1001);
        assert_eq!(c.rpc.max_connections, 7);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.storage, Default::default());

        let vars = env(&[
            ("VIGIL_RPC__ADDR", "127.0.0.1:1002"),
            ("VIGIL_PASSPHRASE", "x"),
            ("VIGIL_STORAGE__CACHE_CAPACITY_MB", "9"),
        ]);
        let c = load(Some(file.path()), &vars, &none).unwrap();
        assert_eq!(c.rpc.addr.port(), 1002);
        assert_eq!(c.rpc.max_connections, 7);
        assert_eq!(c.storage.cache_capacity_mb, 9);

        let flags = Overrides {
            rpc_addr: Some("127.0.0.1:1003".parse().unwrap()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            log_format: Some(LogFormat::Pretty),
            bus_addr: Some("127.0.0.1:1004".parse().unwrap()),
            metrics_addr: None,
        };
        let c = load(Some(file.path()), &vars, &flags).unwrap();
        assert_eq!(c.rpc.addr.port(), 1003);
        assert_eq!(c.bus.addr.port(), 1004);
        assert_eq!(c.network.listen, ["/ip4/127.0.0.1/tcp/0"]);
        assert_eq!(c.log.format, LogFormat::Pretty);
    }

    #[test]
    fn env_lists_split_on_commas() {
        let vars = env(&[(
            "VIGIL_NETWORK__LISTEN",
            "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
        )]);
        let c = load(None, &vars, &Overrides::default()).unwrap();
        assert_eq!(c.network.listen.len(), 2);
    }

    #[test]
    fn unknown_key_is_named() {
        let file = write("[rpc]\nadress = \"127.0.0.1:1\"\n");
        let msg = load(Some(file.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("adress"), "{msg}");
        let vars = env(&[("VIGIL_RPCX__ADDR", "1")]);
        let msg = load(None, &vars, &Overrides::default()).unwrap_err().to_string();
        assert!(msg.contains("rpcx"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let file = write("[rpc]\nmax_connections = \"many\"\n");
        let msg = load(Some(file.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("max_connections"), "{msg}");
        let file = write("[rpc]\naddr = \"not an address\"\n");
        let msg = load(Some(file.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("rpc.addr") && msg.contains("allowed: HOST:PORT"),
            "{msg}"
        );
    }

    #[test]
    fn every_range_problem_is_listed() {
        let file =
            write("[rpc]\nmax_connections = 0\naddr = \"0.0.0.0:1\"\n[storage]\ncache_capacity_mb = 0\n");
        let err = load(Some(file.path()), &[], &Overrides::default()).unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("{err}")
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["rpc.addr", "rpc.max_connections", "storage.cache_capacity_mb"]
        );
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn a_pace_over_an_hour_is_refused_and_one_under_it_taken() {
        let file = write("[vdf]\nmin_epoch_ms = 3600001\n");
        let msg = load(Some(file.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("vdf.min_epoch_ms") && msg.contains("0..=3600000"),
            "{msg}"
        );
        let file = write("[vdf]\nmin_epoch_ms = 2000\n");
        let c = load(Some(file.path()), &[], &Overrides::default()).unwrap();
        assert_eq!(c.vdf.min_epoch_ms, 2000);
    }

    #[test]
    fn a_clock_offset_over_a_week_is_refused_and_a_negative_one_taken() {
        let file = write("[debug]\nclock_offset_ms = 604800001\n");
        let msg = load(Some(file.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("debug.clock_offset_ms") && msg.contains("-604800000..=604800000"),
            "{msg}"
        );
        let file = write("[debug]\nclock_offset_ms = -3600000\n");
        let c = load(Some(file.path()), &[], &Overrides::default()).unwrap();
        assert_eq!(c.debug.clock_offset_ms, -3_600_000);
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let msg = load(
            Some(Path::new("/nonexistent/vigil.toml")),
            &[],
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("/nonexistent/vigil.toml") && msg.contains("--config"),
            "{msg}"
        );
    }
}
