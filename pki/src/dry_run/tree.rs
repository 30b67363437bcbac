//! The file trees of a dry run: listing the files of a directory, copying them into the
//! scratch copy with their modes, and comparing two files by content and mode.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Regular files and symlinks under `dir`, relative to it, sorted; lock and temp files of a
/// run are not content and are left out, nor are the generation directories and `..data` link
/// behind the names of a multi-file commit (a name is listed, its content compared through the
/// link).
pub(super) fn list_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, Path::new(""), recursive, &mut out)?;
    out.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        !name.is_some_and(|n| n.contains(".tmp-") || n.ends_with(".lock"))
    });
    out.sort();
    Ok(out)
}

fn walk(base: &Path, rel: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if durable::generation::is_internal(&entry.file_name()) {
            continue;
        }
        let child = rel.join(entry.file_name());
        if kind.is_dir() {
            if recursive {
                walk(base, &child, recursive, out)?;
            }
        } else {
            out.push(child);
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) mode 0700.
pub(super) fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Copies the files of `from` (its sub-directories too when `recursive`) into `to`. In a
/// recursive copy a symbolic link to a directory is refused: copied as a link, a write below it
/// in the scratch copy would land in the real directory it points to.
pub(super) fn copy_tree(from: &Path, to: &Path, recursive: bool) -> Result<()> {
    private_dir(to)?;
    for rel in list_files(from, recursive)? {
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            private_dir(parent)?;
        }
        let meta = fs::symlink_metadata(&src).map_err(|e| Error::io(&src, e))?;
        if durable::generation::is_managed_link(&src) {
            // The copy holds the content as a regular file; the command run on it commits its
            // own generations there.
            let mode = fs::metadata(&src).map_err(|e| Error::io(&src, e))?;
            fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode.permissions().mode()))
                .map_err(|e| Error::io(&dst, e))?;
        } else if meta.file_type().is_symlink() {
            if recursive && src.is_dir() {
                return Err(Error::invalid(
                    &src,
                    "is a symbolic link to a directory: a dry run cannot copy it without the risk of writing through it",
                ));
            }
            let target = fs::read_link(&src).map_err(|e| Error::io(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| Error::io(&dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.permissions().mode()))
                .map_err(|e| Error::io(&dst, e))?;
        }
    }
    Ok(())
}

/// Whether two files (or symlinks) are the same: link target, or mode and content (through a
/// generation link, the content it shows).
pub(super) fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let managed = |p: &Path| durable::generation::is_managed_link(p);
    let meta = |p: &Path| {
        if managed(p) {
            fs::metadata(p)
        } else {
            fs::symlink_metadata(p)
        }
        .map_err(|e| Error::io(p, e))
    };
    let (ma, mb) = (meta(a)?, meta(b)?);
    if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
        return Ok(fs::read_link(a).ok() == fs::read_link(b).ok());
    }
    if ma.permissions().mode() != mb.permissions().mode() {
        return Ok(false);
    }
    // Either file may be a private key or a kubeconfig: wipe both buffers after comparing.
    let read = |p: &Path| {
        fs::read(p)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| Error::io(p, e))
    };
    Ok(*read(a)? == *read(b)?)
}
