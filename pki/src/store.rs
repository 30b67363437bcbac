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

/// Writes several files of one directory as one commit (see [`durable::write_many_atomic`]: one
/// rename of the directory's `..data` generation link swaps them all), creating the directory
/// as needed. Used for a certificate and its key, so the pair is all old or all new at every
/// moment. Files in different directories are refused.
pub fn write_many_atomic(files: &[(&Path, &[u8], u32)]) -> Result<()> {
    let Some((first, _, _)) = files.first() else {
        return Ok(());
    };
    let dir = first.parent().unwrap_or(Path::new(""));
    let mut named = Vec::with_capacity(files.len());
    for &(path, data, mode) in files {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if parent == dir => {
                named.push((name, data, FileSpec::mode(mode)))
            }
            _ => {
                return Err(Error::invalid(
                    path,
                    format!("a commit covers one directory, {}", dir.display()),
                ));
            }
        }
    }
    ensure_parent(first)?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    durable::write_many_atomic(dir, &named).map_err(|e| Error::io(&e.path, e.source))
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

/// Exclusive locks on several directories, held until dropped.
#[derive(Debug)]
pub struct DirLocks(#[allow(dead_code)] Vec<DirLock>);

/// Creates `dir` if needed and locks it exclusively, waiting for another holder to finish.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    durable::lock_dir(dir, LockWait::Block).map_err(|e| Error::io(dir, e))
}

/// Creates `dir` if needed and locks it exclusively; `Ok(None)` at once when another process
/// holds the lock.
pub fn try_lock_dir(dir: &Path) -> Result<Option<DirLock>> {
    Ok(lock_dirs(&[dir], &[], LockWait::Try)?.map(|mut l| l.0.remove(0)))
}

/// Locks `create` (each created first if missing) and those of `if_present` that exist, each
/// directory once and all in one global order (by canonical path), so commands locking
/// overlapping sets never deadlock. With [`LockWait::Try`], `Ok(None)` at once when another
/// process holds any of them (none is kept then).
pub fn lock_dirs(
    create: &[&Path],
    if_present: &[&Path],
    wait: LockWait,
) -> Result<Option<DirLocks>> {
    let mut order = std::collections::BTreeSet::new();
    for dir in create {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        order.insert(fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?);
    }
    for dir in if_present {
        match fs::canonicalize(dir) {
            Ok(real) if real.is_dir() => {
                order.insert(real);
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dir, e)),
        }
    }
    let mut held = Vec::with_capacity(order.len());
    for dir in &order {
        match durable::lock_dir(dir, wait) {
            Ok(lock) => held.push(lock),
            Err(e) if durable::is_held(&e) => return Ok(None),
            Err(e) => return Err(Error::io(dir, e)),
        }
    }
    Ok(Some(DirLocks(held)))
}

/// Completes the commits a killed run of an earlier build journaled in `dir`, then removes the
/// stale temporary files and unreferenced generations a killed run may have left there. A commit that cannot be completed stops the command with a
/// message naming its journal; nothing is removed then. Call it only while holding [`lock_dir`]
/// on `dir` itself, so a concurrent run's files are safe.
pub fn clean_stale_temps(dir: &Path) -> Result<()> {
    durable::remove_stale_temps(dir).map_err(pending)
}

/// Refuses with the same message when `dir` holds a commit journal: for readers that cannot
/// take the directory's lock (no write permission) and must not read a half-committed pair.
pub fn refuse_pending(dir: &Path) -> Result<()> {
    match durable::pending_journals(dir).map_err(pending)?.first() {
        None => Ok(()),
        Some(journal) => Err(pending(durable::RecoverError {
            journal: journal.clone(),
            file: None,
            problem: "this command cannot write here to complete it; run a writing `pki` command \
                      (e.g. `pki recover`) as a user who can"
                .into(),
        })),
    }
}

fn pending(e: durable::RecoverError) -> Error {
    Error::PendingCommit {
        journal: e.journal.clone(),
        message: e.to_string(),
    }
}
