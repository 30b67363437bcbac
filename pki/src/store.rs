//! Crash-safe file IO: every write goes to a temporary file in the target directory, is synced,
//! renamed over the target and the directory is synced, so a reader (or a rerun after a crash)
//! sees either the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// File mode for certificates and public keys.
pub const MODE_PUBLIC: u32 = 0o644;
/// File mode for private keys and kubeconfigs.
pub const MODE_SECRET: u32 = 0o600;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` atomically with the given permission bits, creating parent
/// directories (mode 0755) as needed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_and_rename(&tmp, path, &dir, data, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes several files as one step as far as the file system allows: every new content is
/// first written and synced to a temporary file, then all are renamed in order, then the
/// directories are synced. Used for a certificate and its key, so the window in which a
/// reader sees a new key with an old certificate is a pair of renames, not a key generation.
/// Each file is always either entirely old or entirely new.
pub fn write_many_atomic(files: &[(&Path, &[u8], u32)]) -> Result<()> {
    let mut staged: Vec<(PathBuf, &Path, PathBuf)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, &Path, PathBuf)]| {
        for (tmp, _, _) in staged {
            let _ = fs::remove_file(tmp);
        }
    };
    for (path, data, mode) in files {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Err(e) = fs::create_dir_all(&dir) {
            cleanup(&staged);
            return Err(Error::io(&dir, e));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write_synced(&tmp, data, *mode) {
            let _ = fs::remove_file(&tmp);
            cleanup(&staged);
            return Err(e);
        }
        staged.push((tmp, path, dir));
    }
    for (tmp, path, _) in &staged {
        fs::rename(tmp, path).map_err(|e| Error::io(*path, e))?;
    }
    for (_, _, dir) in &staged {
        sync_dir(dir)?;
    }
    Ok(())
}

fn write_synced(tmp: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| Error::io(tmp, e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(tmp, e))?;
    file.write_all(data).map_err(|e| Error::io(tmp, e))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))
}

fn write_and_rename(tmp: &Path, path: &Path, dir: &Path, data: &[u8], mode: u32) -> Result<()> {
    // write_synced sets the mode exactly (the umask may have narrowed it at creation).
    write_synced(tmp, data, mode)?;
    fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

/// Points `link` at `target` atomically (a symlink made under a temporary name, then renamed
/// over `link`), as the kubelet does for `kubelet-client-current.pem`.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    let dir = match link.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(link, e));
    }
    sync_dir(&dir)
}

/// Permission bits of an existing file.
pub fn mode_of(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Flushes a directory entry table to disk (after a rename).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
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

/// An exclusive advisory lock on a directory (flock on the directory itself, so no lock file
/// is left behind). Held until dropped; a second `pki` run on the same directory waits.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Creates `dir` if needed and locks it exclusively, waiting for another holder to finish.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
    file.lock().map_err(|e| Error::io(dir, e))?;
    Ok(DirLock { _dir: file })
}

/// Removes stale temporary files a killed run may have left in `dir` (best effort). Call it
/// only while holding [`lock_dir`] on the directory tree, so a concurrent run's files are safe.
pub fn clean_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = fs::remove_file(entry.path());
        }
    }
}
