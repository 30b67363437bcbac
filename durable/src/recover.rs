//! Completing the commits a killed [`write_many_atomic`](crate::write_many_atomic) left
//! journaled, or saying loudly why one cannot be completed.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;
use crate::journal::{self, Entry};

/// A journaled commit that could not be completed. Its journal and the staged files it names
/// are kept, and every writer of the directory stops on it until the cause is fixed.
#[derive(Debug)]
pub struct RecoverError {
    /// The journal of the unfinished commit (or the directory, when it cannot be listed).
    pub journal: PathBuf,
    /// The file that could not be put in place, when one is concerned.
    pub file: Option<PathBuf>,
    /// What went wrong.
    pub problem: String,
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unfinished multi-file commit {}: {}. Nothing in this directory is written until it \
             is completed: fix the cause and run the command again (it completes the commit \
             first); do not delete the journal or the staged `.*.tmp-*` files it names",
            self.journal.display(),
            self.problem
        )
    }
}

impl std::error::Error for RecoverError {}

impl From<RecoverError> for io::Error {
    fn from(e: RecoverError) -> Self {
        io::Error::other(e.to_string())
    }
}

/// The commit journals waiting in `dir` (none when `dir` does not exist).
pub fn pending_journals(dir: &Path) -> Result<Vec<PathBuf>, RecoverError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unlistable(dir, &e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unlistable(dir, &e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(journal::PREFIX)
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Completes every commit journaled in `dir`: each staged file still present is renamed over its
/// target, a target whose staged file is gone must already hold the committed content (checked
/// by digest), then `dir` is synced and the journal removed. Stops at the first commit that
/// cannot be completed and returns why, keeping its journal and staged files. Call it only while
/// holding a [`DirLock`](crate::DirLock) on `dir` that excludes every other writer.
pub fn recover(dir: &Path) -> Result<(), RecoverError> {
    for path in pending_journals(dir)? {
        complete(dir, &path)?;
    }
    Ok(())
}

fn complete(dir: &Path, path: &Path) -> Result<(), RecoverError> {
    let fail = |file: Option<PathBuf>, problem: String| RecoverError {
        journal: path.to_owned(),
        file,
        problem,
    };
    let text = fs::read(path).map_err(|e| fail(None, format!("cannot read it: {e}")))?;
    let entries = journal::parse(&text).map_err(|why| fail(None, format!("unreadable: {why}")))?;
    for Entry {
        temp,
        target,
        sha256,
    } in &entries
    {
        let (temp, target) = (dir.join(journal::os(temp)), dir.join(journal::os(target)));
        match fs::symlink_metadata(&temp) {
            Ok(_) => fs::rename(&temp, &target).map_err(|e| {
                let problem = format!(
                    "cannot put the staged {} in place as {}: {e}",
                    temp.display(),
                    target.display()
                );
                fail(Some(target.clone()), problem)
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !holds(&target, sha256) {
                    let problem = format!(
                        "its staged file {} is gone and {} does not hold the committed content \
                         (was the directory changed by hand while the commit was pending? \
                         restore this directory from a backup)",
                        temp.display(),
                        target.display()
                    );
                    return Err(fail(Some(target), problem));
                }
            }
            Err(e) => {
                return Err(fail(
                    Some(target),
                    format!("cannot inspect {}: {e}", temp.display()),
                ));
            }
        }
    }
    let synced =
        |()| sync_dir(dir).map_err(|e| fail(None, format!("cannot sync the directory: {e}")));
    synced(())?;
    fs::remove_file(path).map_err(|e| fail(None, format!("cannot remove it: {e}")))?;
    synced(())
}

/// Whether `target` is a regular file whose content has digest `sha256`.
fn holds(target: &Path, sha256: &str) -> bool {
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => fs::read(target)
            .map(|bytes| journal::digest(&bytes) == sha256)
            .unwrap_or(false),
        _ => false,
    }
}

fn unlistable(dir: &Path, e: &io::Error) -> RecoverError {
    RecoverError {
        journal: dir.to_owned(),
        file: None,
        problem: format!("cannot list the directory for commit journals: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remove_stale_temps;
    use crate::write::{FileSpec, temp_for, write_temp};
    use std::os::unix::ffi::OsStrExt;

    /// Writes a journal of `entries` as the journaled commits of earlier builds did: a synced
    /// temporary renamed into place.
    fn write_journal(dir: &Path, entries: &[Entry]) {
        let (_, temp) = temp_for(&dir.join("journal")).expect("temp");
        write_temp(&temp, &journal::render(entries), FileSpec::mode(0o600)).expect("journal");
        fs::rename(&temp, dir.join(format!("{}1", journal::PREFIX))).expect("rename");
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
        write_journal(dir, &entries);
        fs::rename(&temps[0], dir.join("a.key")).expect("first rename");
    }

    fn pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let read = |n| fs::read(dir.join(n)).expect("read");
        (read("a.key"), read("a.crt"))
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
