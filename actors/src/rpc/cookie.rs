//! The auth cookie and the `rpc.url` file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::{Error, Result};

/// Cookie file name inside the data dir.
pub const COOKIE_FILE: &str = ".cookie";
/// File holding the RPC URL inside the data dir.
pub const URL_FILE: &str = "rpc.url";

pub(super) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Writes `contents` to `dir/name` through a temp file and rename, with `mode`.
fn write_atomic(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)
}

pub(super) fn write_cookie(dir: &Path, token: &str) -> Result<()> {
    write_atomic(dir, COOKIE_FILE, token, 0o600)
}

pub(super) fn write_url(dir: &Path, url: &str) -> Result<()> {
    write_atomic(dir, URL_FILE, &format!("{url}\n"), 0o644)
}

/// Reads a cookie file, trimming whitespace.
pub fn read_cookie(path: &Path) -> std::io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// Removes `.cookie` and `rpc.url` so clients do not talk to a stopped node.
pub(super) fn remove_files(dir: &Path) {
    for name in [COOKIE_FILE, URL_FILE] {
        let path: PathBuf = dir.join(name);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn cookie_is_private_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let a = new_token();
        write_cookie(dir.path(), &a).unwrap();
        let mode = fs::metadata(dir.path().join(COOKIE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_cookie(&dir.path().join(COOKIE_FILE)).unwrap(), a);
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(b.len(), 64);
        write_cookie(dir.path(), &b).unwrap();
        assert_eq!(read_cookie(&dir.path().join(COOKIE_FILE)).unwrap(), b);
        remove_files(dir.path());
        assert!(!dir.path().join(COOKIE_FILE).exists());
    }
}
