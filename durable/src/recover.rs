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
