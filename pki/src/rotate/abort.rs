//! `abort`: before `finish` has begun, every file is put back exactly as it was before `start`
//! (bytes and modes), files the rotation created are removed, and the staging area is deleted.
//! The backups stay. An interrupted abort is finished by running it again.

use time::OffsetDateTime;

use super::admission::admit_abort;
use super::apply::{StepSettings, apply};
use super::coordinator::{Move, NodeReport};
use super::options::Options;
use super::outcome::Outcome;
use super::plan::{self, Plan, Target};
use super::state::{self, Status};
use super::steps::Step;
use super::{backup, restart, session};
use crate::error::Result;
use crate::layout::Layout;

/// Undoes the rotation of `target` that has not begun `finish`.
pub fn abort(layout: &Layout, target: Target, opts: &mut Options) -> Result<Outcome> {
    let _lock = session::open(layout, opts.manifests_dir.as_deref())?;
    let state_path = plan::state_path(layout);
    let mut s = admit_abort(&state_path, target, state::load(&state_path)?)?;
    let plan = Plan::new(target, layout.clone(), s.manifests_dir.clone());
    let me = NodeReport::control_plane(&plan, &s);
    let mut notes = Vec::new();
    if s.status == Status::InProgress {
        notes.extend(opts.coordinator().begin(target, Move::Abort, &me)?);
    }
    let mut backup_dir = None;
    if s.status == Status::InProgress {
        // The files as the rotation left them, in case the operator needs them after all.
        let rel = backup::take_for(&plan, "abort")?;
        backup_dir = Some(plan.rotation_dir().join(&rel));
        s.backups.push(rel);
        s.status = Status::Aborting;
        state::save(&state_path, &s)?;
    }
    let mut steps = Vec::new();
    if let Some(origin) = &s.origin_backup {
        let restored = backup::restore(&plan.rotation_dir().join(origin))?;
        steps.extend(
            restored
                .iter()
                .map(|p| format!("restore:{}", plan.label(p))),
        );
        opts.step_done("restore");
    }
    apply(&Step::Unstage, &plan, &mut s, &StepSettings::from(&*opts))?;
    steps.push("unstage".into());
    s.status = Status::Aborted;
    s.running = None;
    s.ended_at = Some(OffsetDateTime::now_utc());
    state::save(&state_path, &s)?;
    // Reported as the abort left the node (its restored ca.crt).
    let after = NodeReport::control_plane(&plan, &s);
    notes.extend(opts.coordinator().complete(target, Move::Abort, &after)?);
    notes.push(format!(
        "every file is back as it was before `pki rotate {target} start`; backups stay in {}",
        plan.rotation_dir().join("backups").display()
    ));
    Ok(Outcome {
        target,
        phase: None,
        already_done: false,
        steps,
        backup: backup_dir,
        notes,
        restart: restart::sequence(target, None),
        next: None,
    })
}
