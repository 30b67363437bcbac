//! Several files replaced as one step, as far as the file system allows.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::write::FileSpec;
use crate::{generation, journal};

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

/// Replaces several files of one directory together. Two or more files are one generation
/// commit ([`generation`](crate::generation)): their new contents are written and synced into a
/// fresh generation directory, then one rename of the `..data` link swaps all of them, so after a
/// crash at any point every name shows the old content or every name the new, as the files lie,
/// with nothing to complete. The names become links `<name> -> ..data/<name>`. One file is
/// replaced like [`write_atomic`](crate::write_atomic), as a regular file. `names` are plain
/// names of entries of `dir` (not `..`-prefixed, which the generations use), each at most once;
/// `dir` must exist. A failure before the swap leaves every file as it was.
pub fn write_many_atomic(
    dir: &Path,
    files: &[(&OsStr, &[u8], FileSpec)],
) -> Result<(), CommitError> {
    let fail = |name: &OsStr, source| CommitError {
        path: dir.join(name),
        source,
    };
    let mut seen = BTreeSet::new();
    for &(name, _, _) in files {
        let plain = journal::is_plain_name(name.as_bytes()) && !generation::is_internal(name);
        if !plain || !seen.insert(name) {
            let reason = "not a plain file name of the commit's directory, or named twice";
            return Err(fail(
                name,
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            ));
        }
    }
    match files {
        [] => Ok(()),
        [(name, bytes, spec)] => {
            crate::write_atomic(&dir.join(name), bytes, *spec).map_err(|e| fail(name, e))
        }
        [(first, _, _), ..] => generation::commit(dir, files).map_err(|source| CommitError {
            path: dir.join(first),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode_of;
    use std::fs;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn commits_all_files_with_their_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("ca.crt"), b"old").expect("seed");
        write_many_atomic(
            dir.path(),
            &[
                (name("ca.key"), b"KEY", FileSpec::mode(0o600)),
                (name("ca.crt"), b"CRT", FileSpec::mode(0o644)),
            ],
        )
        .expect("commit");
        let (key, crt) = (dir.path().join("ca.key"), dir.path().join("ca.crt"));
        assert_eq!(fs::read(&key).expect("key"), b"KEY");
        assert_eq!(fs::read(&crt).expect("crt"), b"CRT");
        assert_eq!((mode_of(&key), mode_of(&crt)), (Some(0o600), Some(0o644)));
        let names = testkit::entry_names(dir.path());
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], crate::generation::DATA);
        assert!(
            names[1].starts_with(crate::generation::GEN_PREFIX),
            "{names:?}"
        );
        assert_eq!(names[2..], ["ca.crt", "ca.key"]);
    }

    #[test]
    fn names_outside_the_directory_or_twice_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            vec!["../x", "a"],
            vec!["sub/x", "a"],
            vec!["a", "a"],
            vec!["..", "a"],
            vec!["..data", "a"],
            vec!["..gen-1", "a"],
        ] {
            let files: Vec<(&OsStr, &[u8], FileSpec)> = bad
                .iter()
                .map(|n| (name(n), &b"x"[..], FileSpec::mode(0o600)))
                .collect();
            let err = write_many_atomic(dir.path(), &files).expect_err("refused");
            assert_eq!(err.source.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(testkit::entry_names(dir.path()).is_empty());
    }

    #[test]
    fn nothing_changes_when_staging_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("first"), b"old").expect("seed");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let err = write_many_atomic(
            &dir.path().join("absent"),
            &[(name("first"), b"new", FileSpec::mode(0o600))],
        )
        .expect_err("no directory");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(dir.path().join("first")).expect("read"), b"old");
        assert_eq!(testkit::entry_names(dir.path()), ["first", "sub"]);
    }
}
