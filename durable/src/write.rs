//! One file written crash-safely: replaced atomically, or created only if absent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;

/// Marker in the names of temporary files (`.<name>.tmp-<random>`), see
/// [`remove_stale_temps`](crate::remove_stale_temps).
pub(crate) const TEMP_MARKER: &str = ".tmp-";

/// How a written file must look on disk: its permission bits and, optionally, its owner.
///
/// Both are applied to the temporary file before any byte is written, so the file never
/// exists under its final name, nor with its content, with other permissions or owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Permission bits, applied exactly (the umask does not narrow them).
    pub mode: u32,
    /// `(uid, gid)` to give the file; `None` keeps the creating process's.
    pub owner: Option<(u32, u32)>,
}

impl FileSpec {
    /// A file with `mode`, owned by the creating process.
    pub const fn mode(mode: u32) -> Self {
        Self { mode, owner: None }
    }

    /// The same file, owned by `uid:gid` (needs the privilege to chown).
    pub const fn owned_by(self, uid: u32, gid: u32) -> Self {
        Self {
            owner: Some((uid, gid)),
            ..self
        }
    }
}

impl From<u32> for FileSpec {
    fn from(mode: u32) -> Self {
        Self::mode(mode)
    }
}

/// Replaces `path` with `bytes`: temporary file in the same directory with the final mode and
/// owner, fsync, rename over `path`, fsync of the directory. The temporary file is removed on
/// error. The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], spec: impl Into<FileSpec>) -> io::Result<()> {
    let (dir, temp) = temp_for(path)?;
    let result = write_temp(&temp, bytes, spec.into())
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates `path` holding `bytes`, never replacing an existing file whatever the races: the
/// synced temporary file is hard-linked to `path`, which fails with
/// [`io::ErrorKind::AlreadyExists`] if anything is there. The parent directory must exist.
pub fn create_new(path: &Path, bytes: &[u8], spec: impl Into<FileSpec>) -> io::Result<()> {
    let (dir, temp) = temp_for(path)?;
    let linked = write_temp(&temp, bytes, spec.into()).and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    linked?;
    sync_dir(&dir)
}

/// The directory of `path` (`.` for a bare name) and a fresh temporary name beside it.
pub(crate) fn temp_for(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?
        .to_string_lossy();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let temp = dir.join(format!(
        ".{name}{TEMP_MARKER}{:016x}",
        u64::from_le_bytes(suffix)
    ));
    Ok((dir, temp))
}

/// Creates `temp` (which must not exist) with `spec`, then writes and syncs `bytes`.
pub(crate) fn write_temp(temp: &Path, bytes: &[u8], spec: FileSpec) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(spec.mode)
        .open(temp)?;
    apply_spec(&file, spec)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives an open, still empty file its owner, then its exact mode (after the chown, which may
/// clear set-id bits; and the umask may have narrowed the mode at creation).
fn apply_spec(file: &File, spec: FileSpec) -> io::Result<()> {
    if let Some((uid, gid)) = spec.owner {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(spec.mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode_of;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, Barrier};
    use testkit::entry_names;

    #[test]
    fn replaces_with_exact_mode_and_leaves_no_temp() {
        let (dir, path) = testkit::scratch_path("key");
        write_atomic(&path, b"one", 0o644).expect("first write");
        assert_eq!(mode_of(&path), Some(0o644));
        write_atomic(&path, b"two", 0o600).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), Some(0o600));
        // Wider than a usual umask allows: applied exactly all the same.
        write_atomic(&path, b"three", 0o666).expect("third write");
        assert_eq!(mode_of(&path), Some(0o666));
        assert_eq!(entry_names(dir.path()), ["key"]);
    }

    #[test]
    fn failed_write_removes_its_temp() {
        let (dir, target) = testkit::scratch_path("occupied");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("inside"), b"x").expect("fill");
        // Renaming a file over a non-empty directory fails after the temp was written.
        assert!(write_atomic(&target, b"data", 0o600).is_err());
        assert_eq!(entry_names(dir.path()), ["occupied"]);
    }

    #[test]
    fn create_new_never_replaces() {
        let (dir, path) = testkit::scratch_path("v1.key");
        create_new(&path, b"first", 0o600).expect("create");
        assert_eq!(mode_of(&path), Some(0o600));
        let err = create_new(&path, b"second", 0o600).expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(entry_names(dir.path()), ["v1.key"]);
    }

    #[test]
    fn create_new_race_has_exactly_one_winner() {
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = Arc::new(dir.path().join(format!("v{round}.key")));
            let start = Arc::new(Barrier::new(2));
            let racers: Vec<_> = [b"AAAA", b"BBBB"]
                .into_iter()
                .map(|content| {
                    let (path, start) = (Arc::clone(&path), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        create_new(&path, content, 0o600).map(|()| content)
                    })
                })
                .collect();
            let results: Vec<_> = racers
                .into_iter()
                .map(|r| r.join().expect("thread"))
                .collect();
            let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            let loser = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .expect("loser");
            assert_eq!(loser.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read(&*path).expect("read"), winners[0].as_slice());
            assert_eq!(entry_names(dir.path()).len(), 1, "no temp left");
        }
    }

    #[test]
    fn owner_is_applied_before_the_file_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = fs::metadata(dir.path()).expect("meta");
        // As root, give the file away; otherwise chown to oneself (always allowed) and check
        // that giving it away is refused without leaving anything behind.
        let (uid, gid) = if me.uid() == 0 {
            (65_534, 65_533)
        } else {
            (me.uid(), me.gid())
        };
        let path = dir.path().join("owned");
        write_atomic(&path, b"x", FileSpec::mode(0o640).owned_by(uid, gid)).expect("write");
        let meta = fs::metadata(&path).expect("meta");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(mode_of(&path), Some(0o640));
        let created = dir.path().join("created");
        create_new(&created, b"x", FileSpec::mode(0o600).owned_by(uid, gid)).expect("create");
        let meta = fs::metadata(&created).expect("meta");
        assert_eq!(
            (meta.uid(), meta.gid(), mode_of(&created)),
            (uid, gid, Some(0o600))
        );
        if me.uid() != 0 {
            let foreign = FileSpec::mode(0o600).owned_by(0, 0);
            assert!(create_new(&dir.path().join("foreign"), b"x", foreign).is_err());
            assert_eq!(entry_names(dir.path()), ["created", "owned"]);
        }
    }

    #[test]
    fn temp_names_are_unique_and_marked() {
        let (_, a) = temp_for(Path::new("d/file")).expect("temp");
        let (_, b) = temp_for(Path::new("d/file")).expect("temp");
        assert_ne!(a, b);
        let name = a.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with(".file.tmp-"), "{name}");
        let (dir, _) = temp_for(Path::new("bare")).expect("temp");
        assert_eq!(dir, Path::new("."));
    }
}
