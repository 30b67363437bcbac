//! Crash-safe file IO for the PKI, on top of the workspace's [`durable`] crate: every write goes
//! to a temporary file in the target directory, is synced, renamed over the target and the
//! directory is synced, so a reader (or a rerun after a crash) sees either the old or the new
//! content, never a mix. This module only creates missing parent directories and names the file
//! in errors.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use durable::{FileSpec, LockWait};

use crate::error::{Error, Result};

/// File mode for certificates and public keys.
pub const MODE_PUBLIC: u32 = 0o644;
/// File mode for private keys and kubeconfigs.
pub const MODE_SECRET: u32 = 0o600;

/// Creates the parent directory of `path` (mode 0755) if needed.
fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// Writes `data` to `path` atomically with the given permission bits, creating parent
/// directories (mode 0755) as needed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    ensure_parent(path)?;
    durable::write_atomic(path, data, mode).map_err(|e| Error::io(path, e))
}

/// Writes several files as one journaled commit (see [`durable::write_many_atomic`]), creating
/// parent directories as needed. Used for a certificate and its key: after a crash, the next
/// [`clean_stale_temps`] of the directory completes the commit, so the pair is all old or all new.
pub fn write_many_atomic(files: &[(&Path, &[u8], u32)]) -> Result<()> {
    for (path, _, _) in files {
        ensure_parent(path)?;
    }
    let files: Vec<(&Path, &[u8], FileSpec)> = files
        .iter()
        .map(|&(path, data, mode)| (path, data, FileSpec::mode(mode)))
        .collect();
    durable::write_many_atomic(&files).map_err(|e| Error::io(&e.path, e.source))
}

/// Points `link` at `target` atomically, as the kubelet does for `kubelet-client-current.pem`.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    durable::symlink_atomic(target, link).map_err(|e| Error::io(link, e))
}

/// Permission bits of an existing file.
pub fn mode_of(path: &Path) -> Option<u32> {
    durable::mode_of(path)
}

/// Flushes a directory entry table to disk (after a rename).
pub fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Makes `dir` a private directory: created (with parents) mode 0700 from the start, or an
/// existing one tightened to 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    durable::ensure_private_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Reads a file as UTF-8 text; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::parse(path, "not UTF-8 text")),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads a file holding secret text (a private key or a kubeconfig) into a buffer that is
/// wiped on drop; `Ok(None)` when it does not exist.
pub fn read_secret_optional(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>> {
    Ok(read_optional(path)?.map(zeroize::Zeroizing::new))
}

/// An exclusive lock on a directory, held until dropped.
pub type DirLock = durable::DirLock;

/// Creates `dir` if needed and locks it exclusively, waiting for another holder to finish.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    durable::lock_dir(dir, LockWait::Block).map_err(|e| Error::io(dir, e))
}

/// Creates `dir` if needed and locks it exclusively; `Ok(None)` at once when another process
/// holds the lock.
pub fn try_lock_dir(dir: &Path) -> Result<Option<DirLock>> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match durable::lock_dir(dir, LockWait::Try) {
        Ok(lock) => Ok(Some(lock)),
        Err(e) if durable::is_held(&e) => Ok(None),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Completes the commits a killed run journaled in `dir`, then removes the stale temporary
/// files it may have left there (best effort). Call it
/// only while holding [`lock_dir`] on the directory tree, so a concurrent run's files are safe.
pub fn clean_stale_temps(dir: &Path) {
    durable::remove_stale_temps(dir);
}
