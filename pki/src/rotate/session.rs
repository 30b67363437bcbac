//! What every rotation command that changes files does first: take the cert dir's exclusive
//! lock (refused at once, not queued, while another command holds it), then remove the temp files a crashed run left behind in every directory a rotation
//! writes to.

use std::path::Path;

use super::plan::{self, Plan, Target};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::store;

/// Locks `layout`'s cert dir for this command (released when the lock is dropped) and cleans
/// stale temp files, including in the manifests directory when one is given. Refuses at once
/// when another command (another `pki rotate`, or `renew`) holds the lock: a rotation queued
/// behind another would run on files it did not see.
pub(crate) fn open(layout: &Layout, manifests_dir: Option<&Path>) -> Result<store::DirLock> {
    let lock = lock(layout)?;
    let staged = Target::ALL.map(|t| Plan::new(t, layout.clone(), None).staged_dir());
    let dirs = [
        layout.cert_dir.clone(),
        layout.cert_dir.join("etcd"),
        layout.kubeconfig_dir.clone(),
        plan::rotation_dir(layout),
    ];
    for d in dirs.iter().chain(&staged) {
        store::clean_stale_temps(d);
    }
    if let Some(m) = manifests_dir {
        store::clean_stale_temps(m);
    }
    Ok(lock)
}

/// Takes `layout`'s cert dir lock (a lock on the directory itself: no file is created), refused
/// at once while another command holds it; nothing is cleaned.
pub(crate) fn lock(layout: &Layout) -> Result<store::DirLock> {
    store::try_lock_dir(&layout.cert_dir)?.ok_or_else(|| Error::RotationRefused {
        state: plan::state_path(layout),
        reason: format!(
            "another `pki` command is running on {} (it holds the directory's lock); wait for it to end, then rerun this one",
            layout.cert_dir.display()
        ),
    })
}
