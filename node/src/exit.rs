//! The exit codes of `vigil`: stable, documented in `docs/operator-guide.md`,
//! so a supervisor or script can tell "fix the config" from "another node
//! holds the port" without parsing the message.
//!
//! An error gets its class from a tag ([`Classify::class`]) where the
//! node knows what failed, or from the typed error in its chain
//! ([`ConfigError`], [`KeyError`], an `AddrInUse` I/O error).

use std::fmt;

use crate::config::ConfigError;
use crate::keys::KeyError;

/// Why `vigil` exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 1: any other failure (the message says what).
    Failure = 1,
    /// 2: the command line is wrong (clap prints the usage).
    Usage = 2,
    /// 3: the configuration is invalid (config.toml, `VIGIL_*__*`, a flag's value).
    Config = 3,
    /// 4: the key cannot be loaded: wrong or missing passphrase, corrupt or unreadable key file.
    Key = 4,
    /// 5: a listen address (p2p, admin RPC or bus) is taken.
    AddrInUse = 5,
    /// 6: the genesis does not match the data dir, or cannot be read.
    Genesis = 6,
    /// 7: the data dir is missing, damaged, or used by another node.
    DataDir = 7,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The class of `e`: its tag, else its typed cause, else [`Exit::Failure`].
    pub fn of(e: &anyhow::Error) -> Self {
        for cause in e.chain() {
            if let Some(c) = cause.downcast_ref::<Classified>() {
                return c.class;
            }
            if cause.is::<ConfigError>() {
                return Self::Config;
            }
            if cause.is::<KeyError>() {
                return Self::Key;
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::AddrInUse {
                    return Self::AddrInUse;
                }
            }
            if let Some(e) = cause.downcast_ref::<vigil_actors::Error>() {
                match e {
                    vigil_actors::Error::AddrInUse(_) => return Self::AddrInUse,
                    vigil_actors::Error::GenesisMismatch { .. } => return Self::Genesis,
                    vigil_actors::Error::Locked { .. } | vigil_actors::Error::NotInitialized { .. } => {
                        return Self::DataDir
                    }
                    _ => {}
                }
            }
        }
        Self::Failure
    }
}

/// An error with its exit class; it displays as the error it wraps.
struct Classified {
    class: Exit,
    inner: anyhow::Error,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.inner, self.class)
    }
}

impl std::error::Error for Classified {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// Tags an error with its exit class.
pub trait Classify<T> {
    /// `Err(e)` becomes `e` tagged with `class`; the message is unchanged.
    fn class(self, class: Exit) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn class(self, class: Exit) -> anyhow::Result<T> {
        self.map_err(|e| tag(e.into(), class))
    }
}

/// `e` tagged with `class` (a tag already on it wins: it is the more precise).
pub fn tag(e: anyhow::Error, class: Exit) -> anyhow::Error {
    if e.chain().any(|c| c.is::<Classified>()) {
        return e;
    }
    anyhow::Error::new(Classified { class, inner: e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_tag_keeps_the_message_and_survives_context() {
        let e = Err::<(), _>(anyhow::anyhow!("no node.key in /d"))
            .class(Exit::DataDir)
            .context("cannot start")
            .unwrap_err();
        assert_eq!(Exit::of(&e), Exit::DataDir);
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        assert_eq!(chain, ["cannot start", "no node.key in /d"]);
    }

    #[test]
    fn typed_causes_are_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        let e = anyhow::Error::new(io).context("the admin RPC cannot listen");
        assert_eq!(Exit::of(&e), Exit::AddrInUse);
        let e = anyhow::Error::new(ConfigError::Missing("/x.toml".into()));
        assert_eq!(Exit::of(&e), Exit::Config);
        assert_eq!(Exit::of(&anyhow::anyhow!("something else")), Exit::Failure);
    }
}
