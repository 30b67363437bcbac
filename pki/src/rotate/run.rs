//! Running one phase, as the procedure reads: lock the cert dir, admit the phase, check what
//! must hold before it, back up every file it may touch, carry out each step not yet recorded
//! (recording its marker once it has taken effect), then record the phase as complete and say
//! what the operator does next.

use time::OffsetDateTime;

use super::admission::{Admission, admit_phase, next_command};
use super::apply::{StepSettings, apply};
use super::coordinator::{Move, NodeReport};
use super::options::{DEFAULT_MAX_TOKEN_LIFETIME, Options};
use super::outcome::Outcome;
use super::plan::{self, Phase, Plan, Target};
use super::precheck::precheck;
use super::state::{self, Running, State};
use super::steps::{Step, steps};
use super::{backup, join, restart, session, shared};
use crate::error::{Error, Result};
use crate::layout::Layout;

/// Runs `phase` of the rotation of `target`: refuses it when out of order, resumes it when
/// interrupted, does nothing when already complete.
pub fn run(layout: &Layout, target: Target, phase: Phase, opts: &mut Options) -> Result<Outcome> {
    let _lock = session::open(layout, opts.manifests_dir.as_deref())?;
    let state_path = plan::state_path(layout);
    let existing = state::load(&state_path)?;
    let manifests_dir = opts.manifests_dir.as_deref();
    if phase == Phase::Start
        && let Some(s) = existing
            .as_ref()
            .filter(|s| s.target == target && s.is_active())
        && s.has_completed(Phase::Start)
        && s.running.is_none()
        && (s.last_completed() == Some(Phase::Start)
            || opts.export.is_some()
            || opts.join.is_some())
    {
        return started_already(layout, target, s, opts);
    }
    let (mut s, resume) = match admit_phase(&state_path, target, phase, existing, manifests_dir)? {
        Admission::AlreadyDone(s) => {
            // Published again: a rerun is how a record the API missed is completed.
            let plan = Plan::new(target, layout.clone(), s.manifests_dir.clone());
            let published = opts.coordinator().complete(
                target,
                phase.into(),
                &NodeReport::control_plane(&plan, &s),
            )?;
            let mut outcome = Outcome::already_done(target, phase, next_command(&s));
            outcome.notes.extend(published);
            return Ok(outcome);
        }
        Admission::Begin(s) => (s, false),
        Admission::Resume(s) => (s, true),
    };
    let plan = Plan::new(target, layout.clone(), s.manifests_dir.clone());
    let settings = StepSettings::from(&*opts);
    record_token_lifetime(&mut s, phase, opts);
    if phase != Phase::Start && (opts.join.is_some() || opts.export.is_some()) {
        return Err(Error::Config(
            "--join and --export belong to `start` only".into(),
        ));
    }
    // Everything about a shared-material file is checked before anything changes.
    let joined = if resume && !s.joined {
        None
    } else {
        join::load(&plan, opts)?
    };
    if resume && s.joined && joined.is_none() {
        return Err(Error::RotationRefused {
            state: state_path.clone(),
            reason: format!(
                "this node's interrupted start joined a shared rotation: rerun `pki rotate {target} start --join FILE --certificate-key HEX`"
            ),
        });
    }
    let mut notes = Vec::new();
    if !resume {
        precheck(&plan, &s, phase, opts.force)?;
        s.joined = joined.is_some();
        if phase == Phase::Start {
            s.rotation_id = Some(match &joined {
                Some(m) => m.rotation_id.clone(),
                None => shared::new_rotation_id()?,
            });
        }
        let me = match phase {
            Phase::Start => NodeReport::bare(&plan, &s),
            _ => NodeReport::control_plane(&plan, &s),
        };
        notes.extend(opts.coordinator().begin(target, phase.into(), &me)?);
        begin(&plan, &mut s, phase, &settings)?;
    }
    if let Some(m) = &joined {
        if resume && s.rotation_id.as_deref() != Some(m.rotation_id.as_str()) {
            return Err(Error::RotationRefused {
                state: state_path.clone(),
                reason: "the interrupted start joined another rotation (its id differs)".into(),
            });
        }
        join::stage(&plan, m)?;
    }
    let backup = s
        .running
        .as_ref()
        .map(|r| plan.rotation_dir().join(&r.backup));
    let done_now = run_steps(&plan, &mut s, phase, &settings, opts, &mut notes)?;
    if phase == Phase::Start {
        notes.extend(join::export(&plan, &s, opts)?);
    }
    s.record_phase_complete(phase, OffsetDateTime::now_utc());
    state::save(&state_path, &s)?;
    notes.extend(opts.coordinator().complete(
        target,
        phase.into(),
        &NodeReport::control_plane(&plan, &s),
    )?);
    notes.extend(closing_notes(&plan, &s, phase));
    Ok(Outcome {
        target,
        phase: Some(phase),
        already_done: false,
        steps: done_now,
        backup,
        notes,
        restart: restart::sequence(target, Some(phase)),
        next: next_command(&s),
    })
}

/// `start` on a node whose `start` of this rotation target is complete (the rotation may be
/// further on): `--export` writes the shared files again (a fresh expiry); `--join` is done only
/// when the file is of this very rotation, and refused otherwise (a node left over from a
/// rotation another node aborted must abort here first); without either, nothing to do.
fn started_already(
    layout: &Layout,
    target: Target,
    s: &State,
    opts: &mut Options,
) -> Result<Outcome> {
    let plan = Plan::new(target, layout.clone(), s.manifests_dir.clone());
    let mut outcome = Outcome::already_done(target, Phase::Start, next_command(s));
    if let Some(path) = opts.join.as_deref() {
        let key = opts
            .certificate_key
            .as_ref()
            .ok_or_else(|| Error::Config("--join needs --certificate-key".into()))?;
        let m = shared::read(path, key, target, false)?;
        if s.rotation_id.as_deref() != Some(m.rotation_id.as_str()) {
            return Err(Error::RotationRefused {
                state: plan::state_path(&plan.layout),
                reason: format!(
                    "this node already started another {target} rotation ({}) than the one in {} \
                     ({}), e.g. one the first node aborted: run `pki rotate {target} abort` here, \
                     then `start --join` again",
                    s.rotation_id.as_deref().unwrap_or("no id"),
                    path.display(),
                    m.rotation_id
                ),
            });
        }
        outcome.notes.push(format!(
            "{} is of this rotation: nothing to do",
            path.display()
        ));
    }
    outcome.notes.extend(join::export(&plan, s, opts)?);
    if s.last_completed() == Some(Phase::Start) {
        let published = opts.coordinator().complete(
            target,
            Move::Start,
            &NodeReport::control_plane(&plan, s),
        )?;
        outcome.notes.extend(published);
    }
    Ok(outcome)
}

/// `sa` records the maximum token lifetime at `start` and `switch`: the value given now, else
/// the one recorded earlier, else the default.
fn record_token_lifetime(s: &mut State, phase: Phase, opts: &Options) {
    if s.target != Target::Sa || !matches!(phase, Phase::Start | Phase::Switch) {
        return;
    }
    if let Some(l) = opts.max_token_lifetime {
        s.max_token_lifetime_secs = Some(l.as_secs());
    } else if s.max_token_lifetime_secs.is_none() {
        s.max_token_lifetime_secs = Some(DEFAULT_MAX_TOKEN_LIFETIME.as_secs());
    }
}

/// Before the first step of a phase: a fresh `start` drops anything staged earlier; every file
/// the rotation may touch is backed up (the `start` backup is what `abort` restores); the phase
/// is recorded as running.
fn begin(plan: &Plan, s: &mut State, phase: Phase, settings: &StepSettings) -> Result<()> {
    if phase == Phase::Start {
        apply(&Step::Unstage, plan, s, settings)?;
    }
    let backup = backup::take_for(plan, phase.as_str())?;
    if phase == Phase::Start {
        s.origin_backup = Some(backup.clone());
    }
    s.backups.push(backup.clone());
    s.running = Some(Running {
        phase,
        backup,
        steps_done: Vec::new(),
    });
    state::save(&plan::state_path(&plan.layout), s)
}

/// Carries out every step of `phase` not yet recorded, saving the state after each; returns the
/// markers of the steps done by this run and adds their remarks to `notes`.
fn run_steps(
    plan: &Plan,
    s: &mut State,
    phase: Phase,
    settings: &StepSettings,
    opts: &mut Options,
    notes: &mut Vec<String>,
) -> Result<Vec<String>> {
    let state_path = plan::state_path(&plan.layout);
    let mut done_now = Vec::new();
    for step in steps(plan, phase) {
        let name = step.name(plan);
        if s.step_recorded(&name) {
            continue;
        }
        notes.extend(apply(&step, plan, s, settings)?);
        opts.step_done(&name);
        s.record_step(name.clone());
        state::save(&state_path, s)?;
        done_now.push(name);
    }
    Ok(done_now)
}

/// Remarks that follow from the completed phase.
fn closing_notes(plan: &Plan, s: &State, phase: Phase) -> Vec<String> {
    let mut notes = Vec::new();
    if phase == Phase::Start {
        notes.push(format!(
            "do not run `kubeadm upgrade` during a rotation (it rewrites the static pod manifests and certificates); finish or abort the {} rotation first",
            plan.target
        ));
    }
    if plan.target == Target::Ca && phase == Phase::Start && plan.kcm_manifest().is_none() {
        notes.push(
            "--manifests-dir was not given: before kube-controller-manager restarts, point its --cluster-signing-cert-file/--cluster-signing-key-file at ca-signer.crt/ca-signer.key (ca.crt now holds two certificates, which that flag refuses), and back to ca.crt/ca.key after finish"
                .to_owned(),
        );
    }
    if plan.target == Target::Sa && phase == Phase::Switch {
        notes.push(format!(
            "tokens signed by the old key stay valid until they expire: `finish` is refused before {} (max token lifetime {}s)",
            s.tokens_valid_until()
                .map(state::format_rfc3339)
                .unwrap_or_default(),
            s.max_token_lifetime_secs.unwrap_or_default()
        ));
    }
    notes
}
