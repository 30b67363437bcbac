//! Directories: fsync of their entries, atomic symlinks, private (0700) directories, and the
//! cleanup of temporary files a killed writer left behind.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::generation;
use crate::recover::{RecoverError, recover};
use crate::write::{TEMP_MARKER, temp_for};

/// Flushes a directory's entry table to disk (after a rename, link or unlink in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Permission bits (including set-id and sticky bits) of an existing file; `None` if absent.
pub fn mode_of(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Points `link` at `target` atomically: a symlink made under a temporary name, renamed over
/// `link`, then the directory synced (as the kubelet does for `kubelet-client-current.pem`).
pub fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let (dir, temp) = temp_for(link)?;
    std::os::unix::fs::symlink(target, &temp)?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(&dir)
}

/// Makes `dir` a private directory: created (with missing parents) with mode 0700 from the
/// start, or tightened to exactly 0700 if it already exists.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "exists and is not a directory",
        ));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Completes the multi-file commits a killed writer of an earlier build journaled in `dir`
/// ([`recover`]), then removes the temporary files and the unreferenced generation directories
/// ([`generation`](crate::generation)) a killed writer may have left there (best effort). When a
/// commit cannot be completed, nothing is removed and the error says why. Call it only while holding a
/// [`DirLock`](crate::DirLock) on `dir` that excludes every other writer of `dir`, so no live
/// temporary file is removed.
pub fn remove_stale_temps(dir: &Path) -> Result<(), RecoverError> {
    recover(dir)?;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARKER) {
            let _ = fs::remove_file(entry.path());
        }
    }
    generation::remove_stale(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_created_0700_with_parents() {
        let (_dir, state) = testkit::scratch_path("a/b");
        ensure_private_dir(&state).expect("create");
        assert_eq!(mode_of(&state), Some(0o700));
        ensure_private_dir(&state).expect("idempotent");
        assert_eq!(mode_of(&state), Some(0o700));
    }

    #[test]
    fn existing_dir_is_tightened() {
        let (_dir, open) = testkit::scratch_path("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&open).expect("tighten");
        assert_eq!(mode_of(&open), Some(0o700));
    }

    #[test]
    fn file_in_the_way_is_refused() {
        let (_dir, file) = testkit::scratch_path("file");
        fs::write(&file, b"x").expect("write");
        assert!(ensure_private_dir(&file).is_err());
        assert_eq!(fs::read(&file).expect("read"), b"x");
    }

    #[test]
    fn symlink_is_replaced_atomically() {
        let (dir, link) = testkit::scratch_path("current.pem");
        symlink_atomic(Path::new("a.pem"), &link).expect("first");
        symlink_atomic(Path::new("b.pem"), &link).expect("second");
        assert_eq!(fs::read_link(&link).expect("link"), Path::new("b.pem"));
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, temp) = temp_for(&dir.path().join("ca.crt")).expect("temp");
        fs::write(&temp, b"half").expect("temp");
        fs::write(dir.path().join("ca.crt"), b"x").expect("file");
        fs::write(dir.path().join(".hidden"), b"x").expect("file");
        remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(testkit::entry_names(dir.path()), [".hidden", "ca.crt"]);
    }
}
