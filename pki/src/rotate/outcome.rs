//! What a phase (or `abort`) reports back: the steps it carried out, the backup it took, remarks,
//! the restart sequence and the next command.

use std::path::PathBuf;

use serde::Serialize;

use super::plan::{Phase, Target};
use super::restart::{self, RestartStep};

/// What a phase (or `abort`) did and what the operator must do next.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Outcome {
    /// The target.
    pub target: Target,
    /// The phase run; `None` for `abort`.
    pub phase: Option<Phase>,
    /// True when the phase had already completed and nothing was done.
    pub already_done: bool,
    /// Steps carried out by this run.
    pub steps: Vec<String>,
    /// Backup taken before the phase (absolute path).
    pub backup: Option<PathBuf>,
    /// Remarks for the operator.
    pub notes: Vec<String>,
    /// Restart sequence to follow before the next phase.
    pub restart: Vec<RestartStep>,
    /// The next command.
    pub next: Option<String>,
}

impl Outcome {
    /// The report of a phase that had already completed: nothing was done.
    pub(crate) fn already_done(target: Target, phase: Phase, next: Option<String>) -> Self {
        Outcome {
            target,
            phase: Some(phase),
            already_done: true,
            steps: Vec::new(),
            backup: None,
            notes: vec![format!(
                "phase {phase} of the {target} rotation is already complete"
            )],
            restart: restart::sequence(target, Some(phase)),
            next,
        }
    }
}
