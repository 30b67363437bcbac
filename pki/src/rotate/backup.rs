//! Timestamped backups under `<cert dir>/.rotation/backups/<ts>-<target>-<phase>/` (mode 0700):
//! a copy of every file a phase may change, plus `index.json` recording each file's original
//! path, mode and whether it existed. The index is written last, so a backup without one (a run
//! killed while copying) is ignored. Restoring writes back the exact bytes and modes and removes
//! files that did not exist.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::plan::Plan;
use crate::error::{Error, Result};
use crate::store;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// The original path.
    pub path: PathBuf,
    /// Whether it existed when the backup was taken.
    pub present: bool,
    /// Its permission bits (when present).
    pub mode: Option<u32>,
    /// The copy, relative to the backup directory (when present).
    pub copy: Option<String>,
}

/// The `index.json` of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Index {
    /// When the backup was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// The files, in the order given.
    pub entries: Vec<Entry>,
}

/// Backs up every file `plan` may touch, before `what` (a phase or `abort`), into
/// `backups/<ts>-<target>-<what>/`; returns that path relative to the rotation directory.
pub fn take_for(plan: &Plan, what: &str) -> Result<String> {
    let label = |p: &Path| plan.label(p);
    take(
        &plan.rotation_dir(),
        &format!("{}-{what}", plan.target),
        &plan.touched_files(),
        &label,
    )
}

/// Copies `files` into a new directory `<rotation dir>/backups/<ts>-<name>/` and returns its
/// path relative to `rotation_dir`. `label` maps a path to its relative name inside the backup.
pub fn take(
    rotation_dir: &Path,
    name: &str,
    files: &[PathBuf],
    label: &dyn Fn(&Path) -> String,
) -> Result<String> {
    let backups = rotation_dir.join("backups");
    store::ensure_private_dir(rotation_dir)?;
    store::ensure_private_dir(&backups)?;
    let now = OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    let mut rel = format!("backups/{stamp}-{name}");
    let mut n = 1;
    while rotation_dir.join(&rel).exists() {
        rel = format!("backups/{stamp}-{name}-{n}");
        n += 1;
    }
    let dir = rotation_dir.join(&rel);
    store::ensure_private_dir(&dir)?;
    let mut entries = Vec::new();
    for path in files {
        match fs::read(path) {
            Ok(bytes) => {
                let copy = safe_relative(&label(path));
                let mode = store::mode_of(path);
                store::write_atomic(&dir.join(&copy), &bytes, store::MODE_SECRET)?;
                entries.push(Entry {
                    path: path.clone(),
                    present: true,
                    mode,
                    copy: Some(copy),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => entries.push(Entry {
                path: path.clone(),
                present: false,
                mode: None,
                copy: None,
            }),
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    // Sub-directories made for copies (e.g. `pki/etcd`) get 0700 as well.
    restrict_tree(&dir)?;
    let index = Index {
        taken_at: now,
        entries,
    };
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Render {
        what: "backup index",
        reason: e.to_string(),
    })?;
    store::write_atomic(&dir.join("index.json"), text.as_bytes(), store::MODE_SECRET)?;
    Ok(rel)
}

/// A relative path for a copy inside the backup: no root, no `..`, so a label can never point
/// outside the backup directory.
fn safe_relative(label: &str) -> String {
    let parts: Vec<&str> = label
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    if parts.is_empty() {
        "unnamed".to_owned()
    } else {
        parts.join("/")
    }
}

fn restrict_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(&p, e))?;
            restrict_tree(&p)?;
        }
    }
    Ok(())
}

/// Reads the index of a backup directory.
pub fn load_index(dir: &Path) -> Result<Index> {
    let path = dir.join("index.json");
    let text = store::read_optional(&path)?
        .ok_or_else(|| Error::invalid(&path, "missing: the backup is incomplete"))?;
    serde_json::from_str(&text).map_err(|e| Error::parse(&path, e))
}

/// Puts every file of the backup in `dir` back: the exact bytes and mode for files that
/// existed, removal for files that did not. Idempotent.
pub fn restore(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = load_index(dir)?;
    // Read every copy first, so a damaged backup fails before anything is changed.
    let mut contents = Vec::new();
    for e in &index.entries {
        let data = match (&e.present, &e.copy) {
            (true, Some(copy)) => {
                let p = dir.join(copy);
                Some(fs::read(&p).map_err(|err| Error::io(&p, err))?)
            }
            _ => None,
        };
        contents.push(data);
    }
    let mut changed = Vec::new();
    for (e, data) in index.entries.iter().zip(contents) {
        match data {
            Some(bytes) => {
                // A name linking into a generation is put back as the regular file it was.
                let same = fs::read(&e.path).ok().as_deref() == Some(bytes.as_slice())
                    && store::mode_of(&e.path) == e.mode
                    && !durable::generation::is_managed_link(&e.path);
                if !same {
                    store::write_atomic(&e.path, &bytes, e.mode.unwrap_or(store::MODE_SECRET))?;
                    changed.push(e.path.clone());
                }
            }
            None => match fs::remove_file(&e.path) {
                Ok(()) => {
                    if let Some(parent) = e.path.parent() {
                        store::sync_dir(parent)?;
                    }
                    changed.push(e.path.clone());
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&e.path, err)),
            },
        }
    }
    // Contents the restored names no longer show (a staged CA key in a generation) go now.
    let dirs: std::collections::BTreeSet<&Path> = index
        .entries
        .iter()
        .filter_map(|e| e.path.parent())
        .collect();
    for dir in dirs {
        durable::generation::remove_stale(dir);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_restore_are_exact() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let a = tmp.path().join("a.crt");
        let b = tmp.path().join("sub/b.key");
        let gone = tmp.path().join("new.crt");
        store::write_atomic(&a, b"AAA", 0o644)?;
        store::write_atomic(&b, b"BBB", 0o600)?;
        let rot = tmp.path().join(".rotation");
        let label = |p: &Path| {
            p.strip_prefix(tmp.path())
                .map(|r| r.display().to_string())
                .unwrap_or_default()
        };
        let rel = take(
            &rot,
            "ca-start",
            &[a.clone(), b.clone(), gone.clone()],
            &label,
        )?;
        let dir = rot.join(&rel);
        assert_eq!(store::mode_of(&dir), Some(0o700));
        assert_eq!(store::mode_of(&dir.join("sub")), Some(0o700));
        store::write_atomic(&a, b"changed", 0o600)?;
        std::fs::remove_file(&b).map_err(|e| Error::io(&b, e))?;
        store::write_atomic(&gone, b"created", 0o644)?;
        let changed = restore(&dir)?;
        assert_eq!(changed.len(), 3);
        assert_eq!(std::fs::read(&a).ok(), Some(b"AAA".to_vec()));
        assert_eq!(store::mode_of(&a), Some(0o644));
        assert_eq!(std::fs::read(&b).ok(), Some(b"BBB".to_vec()));
        assert!(!gone.exists());
        assert!(restore(&dir)?.is_empty(), "idempotent");
        assert_eq!(safe_relative("/etc/../x//y"), "etc/x/y");
        Ok(())
    }
}
