//! Carrying out one step of the table in [`super::steps`]. Every step computes its end state from
//! the staged old/new material and writes only when a file differs, so rerunning a step (after a
//! crash before its marker was recorded) reaches the same end state.

mod kubeconfig;
mod leaf;
mod manifest;
mod stage;
mod trust;

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::options::Options;
use super::plan::Plan;
use super::state::State;
use super::steps::Step;
use crate::error::{Error, Result};
use crate::store;

/// Settings the steps need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepSettings {
    /// Lifetime of the new CA.
    pub(crate) ca_validity: Duration,
    /// Lifetime of re-issued leaves.
    pub(crate) leaf_validity: Duration,
}

impl From<&Options> for StepSettings {
    fn from(opts: &Options) -> Self {
        StepSettings {
            ca_validity: opts.ca_validity,
            leaf_validity: opts.leaf_validity,
        }
    }
}

/// Carries out `step`; returns a remark for the operator, if any. Only the manifest step
/// changes `state` (it records the original flag values and saves the state file itself
/// before editing anything); the caller records the step's marker.
pub(crate) fn apply(
    step: &Step,
    plan: &Plan,
    state: &mut State,
    settings: &StepSettings,
) -> Result<Option<String>> {
    let no_note = |()| None;
    match step {
        Step::StageOld => stage::stage_old(plan).map(no_note),
        Step::StageNew => stage::stage_new(plan, settings).map(no_note),
        Step::Signer(generation) => trust::signer(plan, *generation).map(no_note),
        Step::ManifestsToSigner => manifest::to_signer(plan, state).map(no_note),
        Step::ManifestsRestore => manifest::restore(plan, state).map(no_note),
        Step::Anchor(bundle) => trust::anchor(plan, *bundle).map(no_note),
        Step::Kubeconfig {
            file,
            trust,
            client,
        } => kubeconfig::rewrite(plan, file, *trust, *client, settings),
        Step::Leaf(leaf) => leaf::reissue(plan, leaf, settings),
        Step::RemoveSigner => trust::remove_signer(plan).map(no_note),
        Step::Unstage => stage::unstage(plan).map(no_note),
    }
}

/// Writes `data` unless the file already holds exactly it.
fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(());
    }
    store::write_atomic(path, data, mode)
}

/// Whether every file already holds exactly its data.
fn all_unchanged(files: &[(&Path, &[u8])]) -> bool {
    files
        .iter()
        .all(|(path, data)| fs::read(path).ok().as_deref() == Some(*data))
}

/// Removes a file if it exists and syncs its directory.
fn remove_if_present(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => {
            if let Some(d) = p.parent() {
                store::sync_dir(d)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}
