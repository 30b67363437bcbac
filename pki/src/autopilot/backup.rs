//! Copies of the files a pass is about to renew, taken before renewal, so a component that does
//! not come back healthy gets its previous certificate and key again. Kept under
//! `<cert dir>/.autopilot/backups/<UTC timestamp>/` (mode 0700, files 0600); the newest five are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::{self, MODE_SECRET};

/// A file to write back: where, what, with which mode.
type Restored<'a> = (&'a Path, &'a [u8], u32);

/// A taken backup: original path → (content, mode).
#[derive(Default)]
pub struct Backup {
    dir: PathBuf,
    files: BTreeMap<PathBuf, (zeroize::Zeroizing<Vec<u8>>, u32)>,
}

impl Backup {
    /// Copies `files` (those that exist) into a new directory under `backups_dir`.
    pub fn take(backups_dir: &Path, stamp: &str, files: &[PathBuf]) -> Result<Backup> {
        let dir = backups_dir.join(stamp);
        store::ensure_private_dir(&dir)?;
        let mut b = Backup {
            dir,
            files: BTreeMap::new(),
        };
        for (i, f) in files.iter().enumerate() {
            let data = match std::fs::read(f) {
                Ok(d) => zeroize::Zeroizing::new(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(f, e)),
            };
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            store::write_atomic(&b.dir.join(format!("{i:02}-{name}")), &data, MODE_SECRET)?;
            let mode = store::mode_of(f).unwrap_or(MODE_SECRET);
            b.files.insert(f.clone(), (data, mode));
        }
        Ok(b)
    }

    /// Removes all but the newest `keep` backups under `backups_dir` (names sort by time).
    pub fn prune(backups_dir: &Path, keep: usize) -> Result<()> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(backups_dir)
            .map_err(|e| Error::io(backups_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(keep);
        for old in &names[..excess] {
            std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
        Ok(())
    }

    /// Where the copies are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes back the saved content of `files` (those in the backup) as one commit per
    /// directory, so a certificate and its key are both old or both new at every moment, and a
    /// component that watches them through their generation links sees the change (the replaced
    /// generation's files go away); returns what it restored.
    pub fn restore(&self, files: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut by_dir: BTreeMap<&Path, Vec<Restored<'_>>> = BTreeMap::new();
        for f in files {
            if let Some((data, mode)) = self.files.get(f) {
                let dir = f.parent().unwrap_or(Path::new(""));
                by_dir.entry(dir).or_default().push((f, data, *mode));
            }
        }
        let mut done = Vec::new();
        for group in by_dir.values() {
            store::write_many_atomic(group)?;
            done.extend(group.iter().map(|(f, _, _)| f.to_path_buf()));
        }
        Ok(done)
    }
}
