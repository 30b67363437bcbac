//! Several files replaced as one step, as far as the file system allows.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;
use crate::write::{FileSpec, temp_for, write_temp};

/// A failed multi-file commit: the file (or directory) concerned and the system error.
#[derive(Debug)]
pub struct CommitError {
    /// The target file, or the directory whose sync failed.
    pub path: PathBuf,
    /// What the system said.
    pub source: io::Error,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<CommitError> for io::Error {
    fn from(e: CommitError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}

/// Name prefix of a commit journal: the list of renames of one [`write_many_atomic`], written
/// before the first rename and removed after the last, so a crash in between is rolled forward
/// by [`recover`].
const JOURNAL_PREFIX: &str = ".durable-commit-";

/// Replaces several files together: every content is first written and synced to a temporary
/// file (with its [`FileSpec`]); then a journal naming every rename is written and synced in the
/// first file's directory (the commit point); then all are renamed in the given order, each
/// directory is synced and the journal removed. A crash before the commit point leaves the old
/// files (and temporaries that [`remove_stale_temps`](crate::remove_stale_temps) removes); a
/// crash after it is completed by [`recover`] (which `remove_stale_temps` runs first), so the
/// files end up all old or all new. Parent directories must exist.
pub fn write_many_atomic(files: &[(&Path, &[u8], FileSpec)]) -> Result<(), CommitError> {
    let mut staged: Vec<(PathBuf, &Path, PathBuf)> = Vec::with_capacity(files.len());
    let remove_staged = |staged: &[(PathBuf, &Path, PathBuf)]| {
        for (temp, _, _) in staged {
            let _ = fs::remove_file(temp);
        }
    };
    for &(path, bytes, spec) in files {
        let fail = |source| CommitError {
            path: path.to_owned(),
            source,
        };
        let (dir, temp) = temp_for(path).map_err(fail)?;
        if let Err(e) = write_temp(&temp, bytes, spec) {
            let _ = fs::remove_file(&temp);
            remove_staged(&staged);
            return Err(fail(e));
        }
        staged.push((temp, path, dir));
    }
    let journal = match staged.as_slice() {
        [] | [_] => None,
        [(_, first, dir), ..] => match write_journal(dir, &staged) {
            Ok(j) => Some(j),
            Err(source) => {
                remove_staged(&staged);
                return Err(CommitError {
                    path: first.to_path_buf(),
                    source,
                });
            }
        },
    };
    for (i, (temp, path, _)) in staged.iter().enumerate() {
        if let Err(source) = fs::rename(temp, path) {
            if journal.is_none() || i == 0 {
                remove_staged(&staged[i..]);
                if let Some(j) = &journal {
                    let _ = fs::remove_file(j);
                }
            }
            return Err(CommitError {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let dirs: BTreeSet<&PathBuf> = staged.iter().map(|(_, _, dir)| dir).collect();
    for dir in dirs {
        sync_dir(dir).map_err(|source| CommitError {
            path: dir.clone(),
            source,
        })?;
    }
    if let (Some(j), Some((_, _, dir))) = (journal, staged.first()) {
        fs::remove_file(&j).map_err(|source| CommitError {
            path: j.clone(),
            source,
        })?;
        sync_dir(dir).map_err(|source| CommitError {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes the journal of `staged` (one `temp NUL target` line per file, absolute paths) to a
/// temporary file in `dir`, syncs it and renames it into place: after this, the commit happens.
fn write_journal(dir: &Path, staged: &[(PathBuf, &Path, PathBuf)]) -> io::Result<PathBuf> {
    let mut text = Vec::new();
    for (temp, target, _) in staged {
        for p in [temp.as_path(), *target] {
            let abs = std::path::absolute(p)?;
            let bytes = abs.as_os_str().as_bytes();
            if bytes.contains(&0) || bytes.contains(&b'\n') {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "unusable path"));
            }
            text.extend_from_slice(bytes);
            text.push(0);
        }
        text.push(b'\n');
    }
    let (_, temp) = temp_for(&dir.join("journal"))?;
    let name = temp
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = name.rsplit('-').next().unwrap_or("0");
    let journal = dir.join(format!("{JOURNAL_PREFIX}{suffix}"));
    if let Err(e) = write_temp(&temp, &text, FileSpec::mode(0o600))
        .and_then(|()| fs::rename(&temp, &journal))
        .and_then(|()| sync_dir(dir))
    {
        let _ = fs::remove_file(&temp);
        let _ = fs::remove_file(&journal);
        return Err(e);
    }
    Ok(journal)
}

/// Completes every commit a killed [`write_many_atomic`] left journaled in `dir`: each staged
/// file still present is renamed over its target, the directories are synced and the journal
/// removed (best effort). Call it only while holding a [`DirLock`](crate::DirLock) that excludes
/// every other writer.
pub fn recover(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(JOURNAL_PREFIX) {
            continue;
        }
        let journal = entry.path();
        let Ok(text) = fs::read(&journal) else {
            continue;
        };
        let mut dirs = BTreeSet::new();
        let mut complete = true;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut parts = line.split(|b| *b == 0).filter(|p| !p.is_empty());
            let (Some(temp), Some(target)) = (parts.next(), parts.next()) else {
                complete = false;
                continue;
            };
            let temp = PathBuf::from(std::ffi::OsStr::from_bytes(temp));
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(target));
            if temp.exists() && fs::rename(&temp, &target).is_err() {
                complete = false;
            }
            if let Some(d) = target.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in &dirs {
            let _ = sync_dir(d);
        }
        if complete && fs::remove_file(&journal).is_ok() {
            let _ = sync_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode_of;

    #[test]
    fn commits_all_files_with_their_modes() {
        let (dir, sub) = testkit::scratch_path("etcd");
        fs::create_dir(&sub).expect("mkdir");
        let key = dir.path().join("ca.key");
        let crt = sub.join("ca.crt");
        fs::write(&crt, b"old").expect("seed");
        write_many_atomic(&[
            (&key, b"KEY", FileSpec::mode(0o600)),
            (&crt, b"CRT", FileSpec::mode(0o644)),
        ])
        .expect("commit");
        assert_eq!(fs::read(&key).expect("key"), b"KEY");
        assert_eq!(fs::read(&crt).expect("crt"), b"CRT");
        assert_eq!((mode_of(&key), mode_of(&crt)), (Some(0o600), Some(0o644)));
        assert_eq!(fs::read_dir(&sub).expect("list").count(), 1, "no temp left");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2);
    }

    #[test]
    fn nothing_changes_when_staging_fails() {
        let (dir, first) = testkit::scratch_path("first");
        fs::write(&first, b"old").expect("seed");
        let missing_dir = dir.path().join("absent/second");
        let err = write_many_atomic(&[
            (&first, b"new", FileSpec::mode(0o600)),
            (&missing_dir, b"new", FileSpec::mode(0o600)),
        ])
        .expect_err("second cannot be staged");
        assert_eq!(err.path, missing_dir);
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(&first).expect("read"), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn a_journaled_commit_is_rolled_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("a.key");
        let crt = dir.path().join("a.crt");
        fs::write(&key, b"old-key").expect("seed");
        fs::write(&crt, b"old-crt").expect("seed");
        let (_, tk) = temp_for(&key).expect("temp");
        let (_, tc) = temp_for(&crt).expect("temp");
        write_temp(&tk, b"new-key", FileSpec::mode(0o600)).expect("stage");
        write_temp(&tc, b"new-crt", FileSpec::mode(0o644)).expect("stage");
        let staged = [
            (tk.clone(), key.as_path(), dir.path().to_path_buf()),
            (tc.clone(), crt.as_path(), dir.path().to_path_buf()),
        ];
        write_journal(dir.path(), &staged).expect("journal");
        // the writer died after the first rename
        fs::rename(&tk, &key).expect("first rename");
        crate::remove_stale_temps(dir.path());
        assert_eq!(fs::read(&key).expect("key"), b"new-key");
        assert_eq!(fs::read(&crt).expect("crt"), b"new-crt");
        assert_eq!(testkit::entry_names(dir.path()), ["a.crt", "a.key"]);
    }

    #[test]
    fn staged_files_without_a_journal_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("a.key");
        fs::write(&key, b"old-key").expect("seed");
        let (_, tk) = temp_for(&key).expect("temp");
        write_temp(&tk, b"new-key", FileSpec::mode(0o600)).expect("stage");
        crate::remove_stale_temps(dir.path());
        assert_eq!(fs::read(&key).expect("key"), b"old-key");
        assert_eq!(testkit::entry_names(dir.path()), ["a.key"]);
    }
}
