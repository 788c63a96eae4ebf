//! The node's keys at rest: its identity (`node.key`, ed25519) and its
//! account on the settlement chain (`account.key`, secp256k1), both in one
//! format.
//!
//! File layout, all integers big-endian:
//!
//! ```text
//! magic ("VIGILKEY": node key, "VIGILEVM": account key) | version 1 | kind
//! kind 1 (encrypted): m_cost_kib u32 | t_cost u32 | p_cost u32 | salt [16] | nonce [12] | ciphertext+tag
//! kind 0 (plaintext, `vigil dev` only): the secret (node key: protobuf keypair; account key: 32 bytes)
//! ```
//!
//! Encryption: ChaCha20-Poly1305 under a 32-byte key derived with Argon2id from
//! the passphrase and salt; the whole header is the AEAD's associated data, so
//! changing any byte of the file (KDF parameters included) fails decryption.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use libp2p_identity::Keypair;
use rand::RngCore;
use vigil_layer2::Account;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"VIGILKEY";
const ACCOUNT_MAGIC: &[u8; 8] = b"VIGILEVM";
const VERSION: u8 = 1;
const KIND_PLAIN: u8 = 0;
const KIND_ENCRYPTED: u8 = 1;
const HEADER_ENCRYPTED: usize = 8 + 1 + 1 + 12 + 16 + 12;
const TAG: usize = 16;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: `vigil init` takes ~150 ms with it (docs/benchmarks.md).
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Errors reading or writing a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// File I/O failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a vigil key file.
    #[error("{0} is not a vigil key file (bad magic bytes)")]
    NotAKeyFile(PathBuf),
    /// Written by a newer vigil.
    #[error("key file {path} has format version {found}; this vigil reads version {VERSION}: upgrade vigil")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version byte found.
        found: u8,
    },
    /// Shorter than its header says.
    #[error("key file {path} is truncated ({len} bytes): restore it from your backup")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Decryption failed.
    #[error("cannot decrypt {0}: wrong passphrase, or the key file was modified")]
    WrongPassphraseOrTampered(PathBuf),
    /// The key is encrypted and no passphrase was given.
    #[error("{0} is encrypted: pass --passphrase-file FILE or set VIGIL_PASSPHRASE")]
    PassphraseRequired(PathBuf),
    /// KDF parameters out of range.
    #[error("key file {path}: invalid Argon2id parameters ({why})")]
    BadKdf {
        /// The file.
        path: PathBuf,
        /// The cause.
        why: String,
    },
    /// A kind byte this vigil does not know.
    #[error("key file {path} has kind {kind}; this vigil knows 0 (plaintext) and 1 (encrypted): restore it from your backup")]
    UnknownKind {
        /// The file.
        path: PathBuf,
        /// The kind byte.
        kind: u8,
    },
    /// The decrypted bytes are not an account key.
    #[error("key file {path} holds no valid secp256k1 account key: {why}")]
    BadAccountKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        why: String,
    },
    /// The decrypted bytes are not a keypair.
    #[error("key file {path} holds no valid ed25519 keypair: {why}")]
    BadKeypair {
        /// The file.
        path: PathBuf,
        /// The cause.
        why: String,
    },
}

/// A loaded node key.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// The ed25519 keypair (libp2p identity).
    pub keypair: Keypair,
    /// False for a `vigil dev` plaintext key.
    pub encrypted: bool,
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    p: KdfParams,
    path: &Path,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).map_err(|e| KeyError::BadKdf {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| KeyError::BadKdf {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn protobuf(keypair: &Keypair) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        keypair
            .to_protobuf_encoding()
            .expect("ed25519 keypairs always encode"),
    )
}

/// Writes `keypair` encrypted under `passphrase`. Refuses to overwrite.
pub fn save_encrypted(
    path: &Path,
    keypair: &Keypair,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<(), KeyError> {
    seal(path, MAGIC, &protobuf(keypair), passphrase, kdf)
}

/// Writes `keypair` unencrypted (throwaway `vigil dev` keys only). Refuses to overwrite.
pub fn save_plaintext(path: &Path, keypair: &Keypair) -> Result<(), KeyError> {
    write_plain(path, MAGIC, &protobuf(keypair))
}

/// Writes an account key encrypted under `passphrase`. Refuses to overwrite.
pub fn save_account_encrypted(
    path: &Path,
    account: &Account,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<(), KeyError> {
    seal(path, ACCOUNT_MAGIC, account.to_bytes().as_ref(), passphrase, kdf)
}

/// Writes an account key unencrypted (`vigil dev`'s well-known key only).
pub fn save_account_plaintext(path: &Path, account: &Account) -> Result<(), KeyError> {
    write_plain(path, ACCOUNT_MAGIC, account.to_bytes().as_ref())
}

fn seal(
    path: &Path,
    magic: &[u8; 8],
    secret: &[u8],
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<(), KeyError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut header = Vec::with_capacity(HEADER_ENCRYPTED);
    header.extend_from_slice(magic);
    header.extend_from_slice(&[VERSION, KIND_ENCRYPTED]);
    for v in [kdf.m_cost_kib, kdf.t_cost, kdf.p_cost] {
        header.extend_from_slice(&v.to_be_bytes());
    }
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    let key = derive(passphrase, &salt, kdf, path)?;
    let cipher = ChaCha20Poly1305::new(key.as_ref().into());
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &header,
            },
        )
        .expect("encryption of a short message cannot fail");
    header.extend_from_slice(&sealed);
    write_private(path, &header)
}

fn write_plain(path: &Path, magic: &[u8; 8], secret: &[u8]) -> Result<(), KeyError> {
    let mut bytes = Zeroizing::new(Vec::new());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&[VERSION, KIND_PLAIN]);
    bytes.extend_from_slice(secret);
    write_private(path, &bytes)
}

/// A loaded account key.
#[derive(Debug, Clone)]
pub struct LoadedAccount {
    /// The secp256k1 account.
    pub account: Account,
    /// False for `vigil dev`'s well-known key.
    pub encrypted: bool,
}

/// Reads an account key file; `passphrase` is needed for encrypted keys.
pub fn load_account(path: &Path, passphrase: Option<&[u8]>) -> Result<LoadedAccount, KeyError> {
    let (secret, encrypted) = unseal(path, ACCOUNT_MAGIC, passphrase)?;
    let account = Account::from_bytes(&secret).map_err(|e| KeyError::BadAccountKey {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    Ok(LoadedAccount { account, encrypted })
}

/// Reads a key file; `passphrase` is needed for encrypted keys.
pub fn load(path: &Path, passphrase: Option<&[u8]>) -> Result<LoadedKey, KeyError> {
    let (secret, encrypted) = unseal(path, MAGIC, passphrase)?;
    let keypair = Keypair::from_protobuf_encoding(&secret).map_err(|e| {
        if encrypted {
            KeyError::BadKeypair {
                path: path.to_owned(),
                why: e.to_string(),
            }
        } else {
            KeyError::Truncated {
                path: path.to_owned(),
                len: secret.len() + 10,
            }
        }
    })?;
    Ok(LoadedKey { keypair, encrypted })
}

/// Whether the node key file at `path` is encrypted (needs a passphrase);
/// false when it is plain, missing or unreadable (loading says why).
pub fn key_is_encrypted(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 9 && &b[..8] == MAGIC && b[9] == KIND_ENCRYPTED)
}

/// The secret of a key file with `magic`, and whether it was encrypted.
fn unseal(
    path: &Path,
    magic: &[u8; 8],
    passphrase: Option<&[u8]>,
) -> Result<(Zeroizing<Vec<u8>>, bool), KeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?);
    let truncated = || KeyError::Truncated {
        path: path.to_owned(),
        len: bytes.len(),
    };
    if bytes.len() < 10 {
        return if bytes.starts_with(&magic[..bytes.len().min(8)]) {
            Err(truncated())
        } else {
            Err(KeyError::NotAKeyFile(path.to_owned()))
        };
    }
    if &bytes[..8] != magic {
        return Err(KeyError::NotAKeyFile(path.to_owned()));
    }
    if bytes[8] != VERSION {
        return Err(KeyError::UnsupportedVersion {
            path: path.to_owned(),
            found: bytes[8],
        });
    }
    match bytes[9] {
        KIND_PLAIN => Ok((Zeroizing::new(bytes[10..].to_vec()), false)),
        KIND_ENCRYPTED => {
            if bytes.len() < HEADER_ENCRYPTED + TAG {
                return Err(truncated());
            }
            let passphrase = passphrase.ok_or_else(|| KeyError::PassphraseRequired(path.to_owned()))?;
            let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            let kdf = KdfParams {
                m_cost_kib: word(10),
                t_cost: word(14),
                p_cost: word(18),
            };
            // Bound the cost a tampered header can make us pay: at most 4 GiB, 64 passes.
            if kdf.m_cost_kib > 4 << 20 || kdf.t_cost > 64 || kdf.p_cost > 16 {
                return Err(KeyError::WrongPassphraseOrTampered(path.to_owned()));
            }
            let (header, sealed) = bytes.split_at(HEADER_ENCRYPTED);
            let salt = &header[22..38];
            let nonce = &header[38..50];
            let key = derive(passphrase, salt, kdf, path)?;
            let cipher = ChaCha20Poly1305::new(key.as_ref().into());
            let plain = cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: header,
                    },
                )
                .map_err(|_| KeyError::WrongPassphraseOrTampered(path.to_owned()))?;
            Ok((Zeroizing::new(plain), true))
        }
        other => Err(KeyError::UnknownKind {
            path: path.to_owned(),
            kind: other,
        }),
    }
}

/// Reads the passphrase from `file`, else `VIGIL_PASSPHRASE`; one trailing newline is dropped.
pub fn read_passphrase(file: Option<&Path>) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    use anyhow::Context as _;
    let raw = match file {
        Some(f) => {
            warn_if_readable_by_others(f, "passphrase file");
            Zeroizing::new(
                std::fs::read(f)
                    .with_context(|| format!("cannot read the passphrase file {}", f.display()))?,
            )
        }
        None => match std::env::var_os("VIGIL_PASSPHRASE") {
            Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            None => return Ok(None),
        },
    };
    let mut p = raw;
    if p.ends_with(b"\n") {
        p.pop();
        if p.ends_with(b"\r") {
            p.pop();
        }
    }
    anyhow::ensure!(
        !p.is_empty(),
        "the passphrase is empty: put a passphrase in the file (or VIGIL_PASSPHRASE)"
    );
    Ok(Some(p))
}

/// Warns on stderr when a secret file can be read by its group or others.
pub fn warn_if_readable_by_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "WARNING: {what} {} is readable by other users (mode {mode:04o}): chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

/// Asks for the passphrase on the terminal (no echo), twice when
/// `confirm`; `None` when stdin is not a terminal.
pub fn prompt_passphrase(confirm: bool) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Zeroizing::new(rpassword::prompt_password("passphrase for the node key: ")?.into_bytes());
    anyhow::ensure!(!first.is_empty(), "the passphrase is empty");
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("the same passphrase again: ")?.into_bytes());
        anyhow::ensure!(first == again, "the two passphrases differ: nothing was created");
    }
    Ok(Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn round_trip_and_every_failure_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = Keypair::generate_ed25519();
        save_encrypted(&path, &kp, b"correct horse", FAST).unwrap();
        let loaded = load(&path, Some(b"correct horse")).unwrap();
        assert_eq!(loaded.keypair.public(), kp.public());
        assert!(loaded.encrypted);

        let e = load(&path, Some(b"wrong")).unwrap_err();
        assert!(matches!(e, KeyError::WrongPassphraseOrTampered(_)), "{e}");
        assert!(matches!(
            load(&path, None).unwrap_err(),
            KeyError::PassphraseRequired(_)
        ));

        let good = std::fs::read(&path).unwrap();
        // Flip one byte anywhere: header (KDF params, salt, nonce) or ciphertext.
        for i in [13, 25, 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            let p = dir.path().join(format!("flip{i}"));
            std::fs::write(&p, &bad).unwrap();
            let e = load(&p, Some(b"correct horse")).unwrap_err();
            assert!(
                matches!(e, KeyError::WrongPassphraseOrTampered(_)),
                "byte {i}: {e}"
            );
        }
        for len in [4, 30, good.len() - 20] {
            let p = dir.path().join(format!("trunc{len}"));
            std::fs::write(&p, &good[..len]).unwrap();
            let e = load(&p, Some(b"correct horse")).unwrap_err();
            assert!(
                matches!(
                    e,
                    KeyError::Truncated { .. } | KeyError::WrongPassphraseOrTampered(_)
                ),
                "len {len}: {e}"
            );
        }
        let p = dir.path().join("junk");
        std::fs::write(&p, b"hello world, not a key").unwrap();
        assert!(matches!(load(&p, None).unwrap_err(), KeyError::NotAKeyFile(_)));
    }

    #[test]
    fn an_account_key_round_trips_encrypted_and_plain_and_is_not_a_node_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.key");
        let acc = Account::generate();
        save_account_encrypted(&path, &acc, b"correct horse", FAST).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = load_account(&path, Some(b"correct horse")).unwrap();
        assert!(loaded.encrypted);
        assert_eq!(loaded.account.address(), acc.address());
        assert!(matches!(
            load_account(&path, Some(b"wrong")).unwrap_err(),
            KeyError::WrongPassphraseOrTampered(_)
        ));
        assert!(matches!(
            load_account(&path, None).unwrap_err(),
            KeyError::PassphraseRequired(_)
        ));
        // The secret is not in the file.
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(32).any(|w| w == acc.to_bytes().as_ref()));
        // One kind of key is never read as the other.
        assert!(matches!(
            load(&path, Some(b"correct horse")).unwrap_err(),
            KeyError::NotAKeyFile(_)
        ));
        let node = dir.path().join("node.key");
        save_plaintext(&node, &Keypair::generate_ed25519()).unwrap();
        assert!(matches!(
            load_account(&node, None).unwrap_err(),
            KeyError::NotAKeyFile(_)
        ));
        // vigil dev's well-known key, in plain.
        let dev = dir.path().join("dev.key");
        save_account_plaintext(&dev, &Account::anvil_dev()).unwrap();
        let loaded = load_account(&dev, None).unwrap();
        assert!(!loaded.encrypted && loaded.account.is_anvil_dev());
        let mut bad = std::fs::read(&dev).unwrap();
        bad[9] = 7;
        std::fs::write(&dev, &bad).unwrap();
        assert!(matches!(
            load_account(&dev, None).unwrap_err(),
            KeyError::UnknownKind { kind: 7, .. }
        ));
    }

    #[test]
    fn refuses_to_overwrite_and_writes_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = Keypair::generate_ed25519();
        save_plaintext(&path, &kp).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(save_plaintext(&path, &kp).is_err());
        let loaded = load(&path, None).unwrap();
        assert!(!loaded.encrypted);
        assert_eq!(loaded.keypair.public(), kp.public());
    }
}
