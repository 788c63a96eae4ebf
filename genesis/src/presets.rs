use crate::{Genesis, Result};

/// Names accepted by [`Genesis::load`] besides a file path.
pub const PRESET_NAMES: [&str; 2] = ["dev", "testnet"];

/// A genesis embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// One node on one machine; cheap VDF and encoding.
    Dev,
    /// The shared test network's parameters (DESIGN.md figures).
    Testnet,
}

impl Preset {
    /// Looks a preset up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dev" => Some(Self::Dev),
            "testnet" => Some(Self::Testnet),
            _ => None,
        }
    }

    /// The preset's TOML text, as embedded.
    pub fn toml(self) -> &'static str {
        match self {
            Self::Dev => include_str!("presets/dev.toml"),
            Self::Testnet => include_str!("presets/testnet.toml"),
        }
    }

    /// The parsed preset.
    pub fn genesis(self) -> Result<Genesis> {
        Genesis::from_toml_str(self.toml(), Some(format!("preset `{}`", self.name())))
    }

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Testnet => "testnet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_differ() {
        let dev = Preset::Dev.genesis().unwrap();
        let testnet = Preset::Testnet.genesis().unwrap();
        assert_ne!(dev.hash(), testnet.hash());
        assert_eq!(Preset::from_name("dev"), Some(Preset::Dev));
        assert_eq!(Preset::from_name("main"), None);
    }
}
