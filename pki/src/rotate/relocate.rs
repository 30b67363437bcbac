//! A dry run's scratch copy made self-contained: the paths a rotation recorded (the manifests
//! directory and manifest files in the state file, the files of the origin backup that `abort`
//! restores) are moved into the copy before the phase runs and back afterwards. The phase on the
//! copy then reads and writes only the copy, and the state file it leaves names the real files.
//! A recorded path with no stand-in inside the copy refuses the dry run (fails closed).

use std::fs;
use std::path::{Path, PathBuf};

use super::backup;
use super::plan;
use super::state::{self, State};
use crate::dry_run::Scratch;
use crate::error::{Error, Result};
use crate::store;

/// A file of the copy as it was before it was moved into the copy: bytes and mode.
struct Original {
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

impl Original {
    fn read(path: &Path) -> Option<Original> {
        Some(Original {
            bytes: fs::read(path).ok()?,
            mode: store::mode_of(path)?,
            path: path.to_path_buf(),
        })
    }

    fn put_back(&self) -> Result<()> {
        store::write_atomic(&self.path, &self.bytes, self.mode)
    }
}

/// What [`into_scratch`] moved, to undo with [`back`].
pub(super) struct Relocated {
    /// The state file before, with its content.
    state: Option<(Original, State)>,
    /// The origin backup's index before.
    index: Option<Original>,
}

/// The stand-in inside the copy of `p`, recorded in `origin` (named in the refusal).
pub(super) fn inside(scratch: &Scratch, origin: &Path, p: &Path) -> Result<PathBuf> {
    scratch
        .scratch_path(p)
        .filter(|c| scratch.contains(c))
        .ok_or_else(|| {
            Error::invalid(
                origin,
                format!(
                    "names {}, outside the directories a dry run copies (the cert dir, the files of the kubeconfig dir and of --manifests-dir): refusing to dry-run rather than risk writing it",
                    p.display()
                ),
            )
        })
}

/// Moves the paths recorded in the copy's state file, and in the index of the backup `abort`
/// would restore, into the copy. A state file or index that does not load is left alone: the
/// phase reports it as the real command would.
pub(super) fn into_scratch(scratch: &Scratch) -> Result<Relocated> {
    let state_path = plan::state_path(&scratch.layout);
    let Some((before, s)) =
        Original::read(&state_path).zip(state::load(&state_path).ok().flatten())
    else {
        return Ok(Relocated {
            state: None,
            index: None,
        });
    };
    let mut moved = s.clone();
    if let Some(d) = &s.manifests_dir {
        moved.manifests_dir = Some(inside(scratch, &state_path, d)?);
    }
    for f in &mut moved.manifest_flags {
        f.file = inside(scratch, &state_path, &f.file)?;
    }
    if moved != s {
        state::save(&state_path, &moved)?;
    }
    let mut index = None;
    if let Some(origin) = &s.origin_backup {
        let dir = plan::rotation_dir(&scratch.layout).join(origin);
        let path = dir.join("index.json");
        if !scratch.contains(&path) {
            return Err(Error::invalid(
                &state_path,
                format!(
                    "names the backup {origin}, outside its rotation directory: refusing to dry-run"
                ),
            ));
        }
        if let (Some(original), Ok(mut idx)) = (Original::read(&path), backup::load_index(&dir)) {
            for e in &mut idx.entries {
                e.path = inside(scratch, &path, &e.path)?;
            }
            let text = serde_json::to_string_pretty(&idx).map_err(|e| Error::Render {
                what: "backup index",
                reason: e.to_string(),
            })?;
            store::write_atomic(&path, text.as_bytes(), original.mode)?;
            index = Some(original);
        }
    }
    Ok(Relocated {
        state: Some((before, s)),
        index,
    })
}

/// After the phase: the moved index is put back as it was, and the state file names the real
/// files again (byte for byte as before when the phase did not change it).
pub(super) fn back(scratch: &Scratch, r: &Relocated) -> Result<()> {
    if let Some(index) = &r.index {
        index.put_back()?;
    }
    let state_path = plan::state_path(&scratch.layout);
    let Ok(Some(mut s)) = state::load(&state_path) else {
        return Ok(());
    };
    s.manifests_dir = s.manifests_dir.map(|d| scratch.original_path(&d));
    for f in &mut s.manifest_flags {
        f.file = scratch.original_path(&f.file);
    }
    match &r.state {
        Some((before, unchanged)) if *unchanged == s => before.put_back(),
        _ => state::save(&state_path, &s),
    }
}
