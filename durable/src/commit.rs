//! Several files replaced as one step, as far as the file system allows.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;
use crate::journal;
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

/// Replaces several files of one directory together: every content is first written and synced
/// to a temporary file in `dir` (with its [`FileSpec`]); then a journal naming every rename and
/// the digest of every new content is written and synced in `dir` (the commit point); then all
/// are renamed in the given order, `dir` is synced and the journal removed. A crash before the
/// commit point leaves the old files (and temporaries that
/// [`remove_stale_temps`](crate::remove_stale_temps) removes); a crash after it is completed by
/// [`recover`](crate::recover) (which `remove_stale_temps` runs first), so the files end up all
/// old or all new. `names` are plain names of entries of `dir`, each at most once; `dir` must
/// exist.
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
        if !journal::is_plain_name(name.as_bytes()) || !seen.insert(name) {
            let reason = "not a plain file name of the commit's directory, or named twice";
            return Err(fail(
                name,
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            ));
        }
    }
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let remove_staged = |staged: &[(PathBuf, PathBuf)]| {
        for (temp, _) in staged {
            let _ = fs::remove_file(temp);
        }
    };
    let mut entries = Vec::with_capacity(files.len());
    for &(name, bytes, spec) in files {
        let target = dir.join(name);
        let (_, temp) = temp_for(&target).map_err(|e| fail(name, e))?;
        if let Err(e) = write_temp(&temp, bytes, spec) {
            let _ = fs::remove_file(&temp);
            remove_staged(&staged);
            return Err(fail(name, e));
        }
        entries.push(journal::Entry {
            temp: temp.file_name().unwrap_or_default().as_bytes().to_vec(),
            target: name.as_bytes().to_vec(),
            sha256: journal::digest(bytes),
        });
        staged.push((temp, target));
    }
    let journal = match files {
        [] | [_] => None,
        [(first, _, _), ..] => match write_journal(dir, &entries) {
            Ok(j) => Some(j),
            Err(source) => {
                remove_staged(&staged);
                return Err(fail(first, source));
            }
        },
    };
    for (i, (temp, target)) in staged.iter().enumerate() {
        if let Err(source) = fs::rename(temp, target) {
            if journal.is_none() || i == 0 {
                remove_staged(&staged[i..]);
                if let Some(j) = &journal {
                    let _ = fs::remove_file(j);
                }
            }
            return Err(CommitError {
                path: target.clone(),
                source,
            });
        }
    }
    let sync = |()| {
        sync_dir(dir).map_err(|source| CommitError {
            path: dir.to_owned(),
            source,
        })
    };
    sync(())?;
    if let Some(j) = journal {
        fs::remove_file(&j).map_err(|source| CommitError { path: j, source })?;
        sync(())?;
    }
    Ok(())
}

/// Writes the journal of `entries` to a temporary file in `dir`, syncs it and renames it into
/// place: after this, the commit happens.
fn write_journal(dir: &Path, entries: &[journal::Entry]) -> io::Result<PathBuf> {
    let (_, temp) = temp_for(&dir.join("journal"))?;
    let name = temp
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = name.rsplit('-').next().unwrap_or("0");
    let path = dir.join(format!("{}{suffix}", journal::PREFIX));
    if let Err(e) = write_temp(&temp, &journal::render(entries), FileSpec::mode(0o600))
        .and_then(|()| fs::rename(&temp, &path))
        .and_then(|()| sync_dir(dir))
    {
        let _ = fs::remove_file(&temp);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mode_of, recover, remove_stale_temps};

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    /// A key+cert commit of `dir` killed right after its first rename: the journal, the new key
    /// in place, the new certificate still staged.
    fn killed_after_first_rename(dir: &Path) {
        fs::write(dir.join("a.key"), b"old-key").expect("seed");
        fs::write(dir.join("a.crt"), b"old-crt").expect("seed");
        let mut entries = Vec::new();
        let mut temps = Vec::new();
        for (target, bytes) in [("a.key", &b"new-key"[..]), ("a.crt", b"new-crt")] {
            let (_, temp) = temp_for(&dir.join(target)).expect("temp");
            write_temp(&temp, bytes, FileSpec::mode(0o600)).expect("stage");
            entries.push(journal::Entry {
                temp: temp.file_name().expect("name").as_bytes().to_vec(),
                target: target.as_bytes().to_vec(),
                sha256: journal::digest(bytes),
            });
            temps.push(temp);
        }
        write_journal(dir, &entries).expect("journal");
        fs::rename(&temps[0], dir.join("a.key")).expect("first rename");
    }

    fn pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let read = |n| fs::read(dir.join(n)).expect("read");
        (read("a.key"), read("a.crt"))
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
        assert_eq!(testkit::entry_names(dir.path()), ["ca.crt", "ca.key"]);
    }

    #[test]
    fn names_outside_the_directory_or_twice_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            vec!["../x", "a"],
            vec!["sub/x", "a"],
            vec!["a", "a"],
            vec!["..", "a"],
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

    #[test]
    fn a_journaled_commit_is_rolled_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        killed_after_first_rename(dir.path());
        remove_stale_temps(dir.path()).expect("recover");
        assert_eq!(pair(dir.path()), (b"new-key".to_vec(), b"new-crt".to_vec()));
        assert_eq!(testkit::entry_names(dir.path()), ["a.crt", "a.key"]);
    }

    /// Reproduction: a roll-forward whose rename fails must keep the journal and the staged
    /// files, and every later attempt must refuse (naming the journal) until the cause is gone;
    /// then it completes the pair.
    #[test]
    fn a_roll_forward_that_cannot_finish_refuses_and_keeps_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        killed_after_first_rename(dir.path());
        let crt = dir.path().join("a.crt");
        fs::remove_file(&crt).expect("rm");
        fs::create_dir(&crt).expect("a directory in the way");
        fs::write(crt.join("inside"), b"x").expect("non-empty");
        for attempt in 0..2 {
            let err = remove_stale_temps(dir.path()).expect_err("cannot finish");
            let text = err.to_string();
            assert!(text.contains(".durable-commit-"), "{attempt}: {text}");
            assert!(text.contains("a.crt"), "{attempt}: {text}");
            assert_eq!(err.file.as_deref(), Some(crt.as_path()));
            let left = testkit::entry_names(dir.path());
            assert_eq!(left.len(), 4, "journal, staged crt, key, dir: {left:?}");
        }
        fs::remove_dir_all(&crt).expect("operator clears the way");
        remove_stale_temps(dir.path()).expect("completes");
        assert_eq!(pair(dir.path()), (b"new-key".to_vec(), b"new-crt".to_vec()));
        assert_eq!(testkit::entry_names(dir.path()), ["a.crt", "a.key"]);
    }

    /// Reproduction: the directory moved (restored elsewhere, mounted at another path) while a
    /// commit was pending still completes it, names being relative to the journal.
    #[test]
    fn a_relocated_directory_completes_its_commit() {
        let root = tempfile::tempdir().expect("tempdir");
        let (before, after) = (root.path().join("pki"), root.path().join("restored"));
        fs::create_dir(&before).expect("mkdir");
        killed_after_first_rename(&before);
        fs::rename(&before, &after).expect("move the directory");
        remove_stale_temps(&after).expect("recover");
        assert_eq!(pair(&after), (b"new-key".to_vec(), b"new-crt".to_vec()));
        assert_eq!(testkit::entry_names(&after), ["a.crt", "a.key"]);
    }

    /// A staged file that vanished, with its target not holding the committed bytes, is refused:
    /// never counted as done.
    #[test]
    fn a_lost_staged_file_is_refused_not_counted_as_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        killed_after_first_rename(dir.path());
        for temp in testkit::entry_names(dir.path())
            .iter()
            .filter(|n| n.contains(".tmp-"))
        {
            fs::remove_file(dir.path().join(temp)).expect("lose the staged crt");
        }
        let err = recover(dir.path()).expect_err("refused");
        assert!(
            err.to_string()
                .contains("does not hold the committed content"),
            "{err}"
        );
        assert_eq!(crate::pending_journals(dir.path()).expect("list").len(), 1);
    }

    #[test]
    fn staged_files_without_a_journal_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("a.key");
        fs::write(&key, b"old-key").expect("seed");
        let (_, tk) = temp_for(&key).expect("temp");
        write_temp(&tk, b"new-key", FileSpec::mode(0o600)).expect("stage");
        remove_stale_temps(dir.path()).expect("clean");
        assert_eq!(fs::read(&key).expect("key"), b"old-key");
        assert_eq!(testkit::entry_names(dir.path()), ["a.key"]);
    }
}
