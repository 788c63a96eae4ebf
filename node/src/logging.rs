//! tracing-subscriber setup: `RUST_LOG` (or `log.level`) filter, pretty or
//! JSON lines on stderr. The filter can be replaced while the node runs
//! (SIGHUP rereads `log.level`), unless `RUST_LOG` set it.

use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Replaces the running log filter; `None` when `RUST_LOG` fixed it (or
/// another subscriber was installed first, in tests).
pub type ReloadFilter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Installs the global subscriber. `RUST_LOG` wins over `log.level` when set.
pub fn init(cfg: &LogConfig) -> Option<ReloadFilter> {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let ansi = std::io::stderr().is_terminal();
    let (reload, result): (ReloadFilter, Result<(), _>) = match cfg.format {
        LogFormat::Pretty => {
            let b = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter_reloading();
            let h = b.reload_handle();
            (
                reloader(move |f| h.reload(f).map_err(|e| e.to_string())),
                b.try_init(),
            )
        }
        LogFormat::Json => {
            let b = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter_reloading();
            let h = b.reload_handle();
            (
                reloader(move |f| h.reload(f).map_err(|e| e.to_string())),
                b.try_init(),
            )
        }
    };
    // A second init (tests) keeps the first subscriber.
    if result.is_err() || from_env {
        return None;
    }
    Some(reload)
}

fn reloader(apply: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) -> ReloadFilter {
    Arc::new(move |level: &str| apply(EnvFilter::try_new(level).map_err(|e| e.to_string())?))
}
