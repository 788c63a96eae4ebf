//! The data directory: its layout and `vigil init`.
//!
//! ```text
//! DIR/config.toml   commented defaults (edit to configure)
//! DIR/genesis.toml  the genesis this node runs; its hash is pinned in db/meta
//! DIR/node.key      ed25519 identity, encrypted (0600)
//! DIR/account.key   secp256k1 account on the settlement chain, encrypted the same way (0600)
//! DIR/db/           sled database
//! DIR/.cookie       RPC auth token, rewritten at every start (0600)
//! DIR/rpc.url       RPC URL of the running node
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libp2p_identity::{Keypair, PeerId};
use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};
use vigil_genesis::Genesis;

use crate::config::commented_template;
use crate::keys::{self, KdfParams, LoadedAccount};
use vigil_layer2::Account;

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data dir at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `genesis.toml`.
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.toml")
    }
    /// `node.key`.
    pub fn key(&self) -> PathBuf {
        self.root.join("node.key")
    }
    /// `account.key`.
    pub fn account_key(&self) -> PathBuf {
        self.root.join("account.key")
    }
    /// `db/`.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// `.cookie`.
    pub fn cookie(&self) -> PathBuf {
        self.root.join(vigil_actors::rpc::COOKIE_FILE)
    }
    /// The parts of a data dir that are missing, when some are there: a
    /// damaged data dir (empty when complete, or when none is there).
    pub fn missing_parts(&self) -> Vec<&'static str> {
        let parts = [
            (self.key(), "node.key"),
            (self.genesis(), "genesis.toml"),
            (self.db(), "db/"),
        ];
        let missing: Vec<&'static str> = parts
            .iter()
            .filter(|(p, _)| !p.exists())
            .map(|(_, n)| *n)
            .collect();
        if missing.len() == parts.len() {
            Vec::new()
        } else {
            missing
        }
    }

    /// Whether `init` has completed here (the key is written last).
    pub fn is_initialized(&self) -> bool {
        self.key().exists() && self.genesis().exists() && self.db().exists()
    }
}

/// How `init` protects the node key.
#[derive(Debug)]
pub enum KeyProtection<'a> {
    /// Encrypted under this passphrase.
    Passphrase(&'a [u8], KdfParams),
    /// Unencrypted (`vigil dev`).
    Plaintext,
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The node's peer id.
    pub peer_id: PeerId,
    /// Its account on the settlement chain.
    pub evm_address: String,
    /// The data dir.
    pub dir: PathBuf,
}

/// Creates a data dir: genesis, config template, database, key. Refuses a
/// non-empty dir; on failure removes what it created.
pub fn init(dir: &DataDir, genesis: &Genesis, protection: KeyProtection<'_>) -> Result<InitReport> {
    init_with_key(dir, genesis, protection, Keypair::generate_ed25519())
}

/// [`init`] with a key made beforehand (`vigil-testnet` needs the peer ids
/// of its bootnodes before it writes their genesis).
pub fn init_with_key(
    dir: &DataDir,
    genesis: &Genesis,
    protection: KeyProtection<'_>,
    keypair: Keypair,
) -> Result<InitReport> {
    let root = dir.root();
    let existed = root.exists();
    if existed {
        let entries: Vec<String> = fs::read_dir(root)
            .with_context(|| format!("cannot read {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if !entries.is_empty() {
            let mut shown = entries;
            shown.sort();
            shown.truncate(5);
            bail!(
                "data dir {} is not empty (it holds {}): init never touches existing files; choose a new or empty directory",
                root.display(),
                shown.join(", ")
            );
        }
    }
    let result = create(dir, genesis, protection, keypair);
    if result.is_err() {
        // Leave nothing half-made: remove what this call created.
        if existed {
            if let Ok(entries) = fs::read_dir(root) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = fs::remove_dir_all(root);
        }
    }
    result
}

fn create(
    dir: &DataDir,
    genesis: &Genesis,
    protection: KeyProtection<'_>,
    keypair: Keypair,
) -> Result<InitReport> {
    let root = dir.root();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("cannot create the data dir {}", root.display()))?;
    let hash = genesis.hash();
    let genesis_text = format!(
        "# genesis of network `{}`\n# hash {}\n# This file is pinned by its hash in db/meta: editing a value makes the node refuse to start.\n{}",
        genesis.network,
        hash,
        genesis.to_toml()
    );
    fs::write(dir.genesis(), genesis_text).context("cannot write genesis.toml")?;
    fs::write(dir.config(), commented_template()).context("cannot write config.toml")?;
    // No background flusher: it would hold the database briefly after the drop
    // below, and `vigil dev` opens it again at once. Create flushes explicitly.
    let opts = StoreOptions {
        flush_every_ms: None,
        ..StoreOptions::default()
    };
    let db = open_node_db(&dir.db(), hash, OpenMode::Create, &opts).context("cannot create the database")?;
    drop(db);
    // The account key before the node key: the node key marks the dir as
    // initialized.
    let account = match protection {
        KeyProtection::Passphrase(p, kdf) => {
            let a = Account::generate();
            keys::save_account_encrypted(&dir.account_key(), &a, p, kdf)?;
            a
        }
        KeyProtection::Plaintext => {
            let a = Account::anvil_dev();
            keys::save_account_plaintext(&dir.account_key(), &a)?;
            a
        }
    };
    match protection {
        KeyProtection::Passphrase(p, kdf) => keys::save_encrypted(&dir.key(), &keypair, p, kdf)?,
        KeyProtection::Plaintext => keys::save_plaintext(&dir.key(), &keypair)?,
    }
    Ok(InitReport {
        evm_address: account.address().to_string(),
        peer_id: keypair.public().to_peer_id(),
        dir: root.to_owned(),
    })
}

/// Loads the account key; a data dir made before there was one gets one
/// now, protected as its node key is (under the same passphrase, or
/// `vigil dev`'s well-known key for a plaintext dev dir).
pub fn load_or_create_account(
    dir: &DataDir,
    passphrase: Option<&[u8]>,
    node_key_encrypted: bool,
) -> Result<(LoadedAccount, bool)> {
    let path = dir.account_key();
    if path.exists() {
        return Ok((keys::load_account(&path, passphrase)?, false));
    }
    let account = match (node_key_encrypted, passphrase) {
        (true, Some(p)) => {
            let a = Account::generate();
            keys::save_account_encrypted(&path, &a, p, KdfParams::default())?;
            LoadedAccount {
                account: a,
                encrypted: true,
            }
        }
        (true, None) => bail!(
            "{} is missing and the node key is encrypted: pass the passphrase to create it",
            path.display()
        ),
        (false, _) => {
            let a = Account::anvil_dev();
            keys::save_account_plaintext(&path, &a)?;
            LoadedAccount {
                account: a,
                encrypted: false,
            }
        }
    };
    Ok((account, true))
}
