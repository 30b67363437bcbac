//! `pki rotate <target> <phase> --dry-run`: the phase (or `abort`, or a worker's phase) runs on
//! a [`Scratch`] copy of the cert dir, the kubeconfig dir and every static pod manifests
//! directory the rotation names (given now or recorded at `start`); the paths the state file and
//! the origin backup record are moved into the copy first (`relocate`), and `--export`'s file is
//! written inside the copy. Every path the phase may write therefore lies inside the copy, and
//! one that cannot refuses the dry run. The report names the real files.
//!
//! The real cert dir's rotation lock is held from the copy to the comparison, so both see one
//! state and a rotation running meanwhile refuses the dry run exactly as it refuses a real
//! phase. It is a lock on the directory itself: no lock file is created or left behind.

use serde::Serialize;

use super::options::Options;
use super::outcome::Outcome;
use super::relocate::{self, inside};
use super::{plan, session, state};
use crate::dry_run::{Change, Scratch};
use crate::error::Result;
use crate::layout::Layout;

/// What a phase would do: its report, with the real paths, and every file it would create,
/// change or remove.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DryRun {
    /// Always true: tells this report from the one of a phase that ran.
    pub dry_run: bool,
    /// The report the phase would give (its steps are the ones it would carry out).
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Every file the phase would create, change or remove.
    pub changes: Vec<Change>,
}

/// Runs `phase` (one of [`super::run`], [`super::abort`], [`super::worker`]'s, called with the
/// layout and options to use) on a scratch copy of `layout` and reports what it would do;
/// nothing outside the copy is written. Its errors read as those of the real command.
pub fn dry_run<F>(layout: &Layout, opts: &mut Options, phase: F) -> Result<DryRun>
where
    F: FnOnce(&Layout, &mut Options) -> Result<Outcome>,
{
    // Without a cert dir there is nothing to lock, and locking would create it.
    let _lock = if layout.cert_dir.is_dir() {
        Some(session::lock(layout)?)
    } else {
        None
    };
    let mut scratch = Scratch::new(layout)?;
    in_scratch(&mut scratch, opts, phase).map_err(|e| scratch.original_error(e))
}

fn in_scratch<F>(scratch: &mut Scratch, opts: &mut Options, phase: F) -> Result<DryRun>
where
    F: FnOnce(&Layout, &mut Options) -> Result<Outcome>,
{
    // A hook that ends the process (the crash tests') would leave the copy behind.
    opts.after_step = None;
    let state_path = plan::state_path(&scratch.layout);
    let recorded = state::load(&state_path)
        .ok()
        .flatten()
        .and_then(|s| s.manifests_dir);
    for dir in opts.manifests_dir.iter().chain(&recorded) {
        scratch.copy_dir(dir)?;
    }
    if let Some(d) = opts.manifests_dir.take() {
        opts.manifests_dir = Some(inside(scratch, &d, &d)?);
    }
    if let Some(f) = opts.export.take() {
        let public = opts
            .export_public
            .take()
            .unwrap_or_else(|| super::shared::public_path(&f));
        opts.export_public = Some(scratch.redirect_file(&public)?);
        opts.export = Some(scratch.redirect_file(&f)?);
    }
    let relocated = relocate::into_scratch(scratch)?;
    let layout = scratch.layout.clone();
    let outcome = phase(&layout, opts)?;
    relocate::back(scratch, &relocated)?;
    Ok(DryRun {
        dry_run: true,
        outcome: in_real_terms(scratch, outcome),
        changes: scratch.changes()?,
    })
}

/// The report with every scratch path replaced by the real one.
fn in_real_terms(scratch: &Scratch, mut o: Outcome) -> Outcome {
    o.backup = o.backup.map(|b| scratch.original_path(&b));
    for text in o.steps.iter_mut().chain(&mut o.notes).chain(&mut o.next) {
        *text = scratch.to_original(text);
    }
    o
}
