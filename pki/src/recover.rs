//! `pki recover`: completes the journaled commits a killed `pki` run of an earlier build left in
//! the directories the components read, and removes the temporary files and unreferenced
//! generation directories a killed run leaves. Meant to run before anything reads them
//! after a reboot (the kubelet unit's `ExecStartPre`, see `deploy/systemd/`); every writing
//! `pki` command does the same first.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::store;

/// Locks the layout's directories and `kubelet_dir` (those that exist), completes every pending
/// commit in them and removes stale temporary files and generations. Returns the journals completed; fails,
/// naming the journal, when one cannot be completed.
pub fn recover(layout: &Layout, kubelet_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = layout.dirs().into();
    dirs.extend(kubelet_dir.map(Path::to_path_buf));
    let present: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let _locks = store::lock_dirs(&[], &present, durable::LockWait::Block)?
        .ok_or_else(|| Error::Config("directory lock refused while blocking".into()))?;
    let mut completed = Vec::new();
    for dir in &dirs {
        completed.extend(durable::pending_journals(dir).map_err(|e| Error::io(dir, e.into()))?);
        store::clean_stale_temps(dir)?;
    }
    Ok(completed)
}
