//! What every rotation command that changes files does first: take the exclusive lock of every
//! directory a rotation writes to (refused at once, not queued, while another command holds
//! any), then complete the commits and remove the temp files a crashed run left in each.

use std::path::{Path, PathBuf};

use durable::LockWait;

use super::plan::{self, Plan, Target};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::store;

/// Locks the directories a rotation writes (the cert dir, its `etcd/`, the kubeconfig dir, the
/// rotation's own directories and the manifests directory when one is given; released when
/// dropped), then completes pending commits and cleans stale temp files in each. Refuses at once
/// when another command (another `pki rotate`, `renew`, `kubelet`) holds a lock: a rotation
/// queued behind another would run on files it did not see.
pub(crate) fn open(layout: &Layout, manifests_dir: Option<&Path>) -> Result<store::DirLocks> {
    let staged = Target::ALL.map(|t| Plan::new(t, layout.clone(), None).staged_dir());
    let mut dirs: Vec<PathBuf> = layout.dirs().into();
    dirs.push(plan::rotation_dir(layout));
    dirs.extend(staged);
    dirs.extend(manifests_dir.map(Path::to_path_buf));
    let others: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let locks = store::lock_dirs(&[&layout.cert_dir], &others, LockWait::Try)?
        .ok_or_else(|| busy(layout))?;
    for d in &dirs {
        store::clean_stale_temps(d)?;
    }
    Ok(locks)
}

/// Takes `layout`'s cert dir lock (a lock on the directory itself: no file is created), refused
/// at once while another command holds it; nothing is cleaned.
pub(crate) fn lock(layout: &Layout) -> Result<store::DirLock> {
    store::try_lock_dir(&layout.cert_dir)?.ok_or_else(|| busy(layout))
}

fn busy(layout: &Layout) -> Error {
    Error::RotationRefused {
        state: plan::state_path(layout),
        reason: format!(
            "another `pki` command is running on {} (it holds the directory's lock); wait for it to end, then rerun this one",
            layout.cert_dir.display()
        ),
    }
}
