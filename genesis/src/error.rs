use std::fmt;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One invalid field: where, what was found, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `params.vdf_iterations`.
    pub field: String,
    /// The offending value as written.
    pub value: String,
    /// What the field accepts.
    pub allowed: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: allowed {}", self.field, self.value, self.allowed)
    }
}

/// Errors of loading or validating a genesis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read genesis file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse into the genesis schema.
    #[error("malformed genesis{}: {source}", origin.as_deref().map(|o| format!(" {o}")).unwrap_or_default())]
    Parse {
        /// The file or preset it came from, when known.
        origin: Option<String>,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The genesis parsed but some values are out of range.
    #[error("invalid genesis{}: {}", origin.as_deref().map(|o| format!(" {o}")).unwrap_or_default(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file or preset it came from, when known.
        origin: Option<String>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A name that is neither a preset nor an existing file.
    #[error("unknown genesis `{0}`: use a preset (dev, testnet) or the path of a genesis TOML file")]
    Unknown(String),
}
