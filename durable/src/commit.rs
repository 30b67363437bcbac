//! Several files replaced as one step, as far as the file system allows.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
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

/// Replaces several files together: every content is first written and synced to a temporary
/// file (with its [`FileSpec`]), then all are renamed in the given order, then each directory is
/// synced. Nothing is renamed unless every file was staged, and staged temporaries are removed on
/// error. Each file is always either entirely old or entirely new; the window in which some are
/// new and some old is a series of renames. Parent directories must exist.
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
    for (i, (temp, path, _)) in staged.iter().enumerate() {
        if let Err(source) = fs::rename(temp, path) {
            remove_staged(&staged[i..]);
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
    Ok(())
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
}
