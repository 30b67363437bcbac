//! `rotate`: replace the cluster CA, front-proxy CA, etcd CA or service-account key without
//! downtime, in three resumable phases.
//!
//! | phase | trust anchors (`ca.crt`, kubeconfig CA data, `sa.pub` ...) | leaves | signing key |
//! |---|---|---|---|
//! | before | old | old CA | old |
//! | `start` | old + new | old CA | old (`ca-signer.*` = old, single certificate) |
//! | `switch` | new + old | new CA | new (`ca-signer.*` = new) |
//! | `finish` | new | new CA | new (`ca-signer.*` removed) |
//!
//! The first entry of a bundle always belongs to the key beside it (`ca.crt` ↔ `ca.key`,
//! `sa.pub` ↔ `sa.key`), so the other subcommands keep working mid-rotation.
//!
//! Everything lives under `<cert dir>/.rotation` (mode 0700): `state.json` (the progress, with
//! per-step markers), `staged/<target>/` (old and new CA or key) and
//! `backups/<ts>-<target>-<phase>/` (a copy of every file the rotation may change, taken before
//! each phase). `abort` restores the backup taken before `start`.

pub mod backup;
pub mod manifests;
pub mod phases;
pub mod plan;
pub mod restart;
pub mod state;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

pub use plan::{Phase, Plan, Target};
pub use restart::RestartStep;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::spec::{DEFAULT_CA_VALIDITY, DEFAULT_LEAF_VALIDITY};
use crate::store;
use state::{Running, State, Status};

/// Default maximum service-account token lifetime assumed by `rotate sa finish`: 24 hours, the
/// longest interval after which the kubelet refreshes a projected token even when the API server
/// extended its expiry (kube-apiserver's default `--service-account-extend-token-expiration`).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Environment variable that makes the `pki` binary exit abruptly after that many steps (test
/// support for crash/rerun tests; the library itself only calls [`Options::after_step`]).
pub const FAIL_AFTER_STEP_ENV: &str = "PKI_ROTATE_FAIL_AFTER_STEP";

/// A callback run after each step has taken effect, before its marker is recorded.
pub type StepHook = Box<dyn FnMut(&str)>;

/// Options of a rotation command.
#[non_exhaustive]
pub struct Options {
    /// Static pod manifest directory to edit (`ca` only; recorded at `start`).
    pub manifests_dir: Option<PathBuf>,
    /// Lifetime of the new CA (`start`).
    pub ca_validity: Duration,
    /// Lifetime of the re-issued leaves (`switch`).
    pub leaf_validity: Duration,
    /// Maximum service-account token lifetime (`sa` `start`/`switch`; recorded).
    pub max_token_lifetime: Option<Duration>,
    /// Let `sa finish` run before the token lifetime has passed.
    pub force: bool,
    /// Called after each step has taken effect, before its marker is recorded.
    pub after_step: Option<StepHook>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("manifests_dir", &self.manifests_dir)
            .field("ca_validity", &self.ca_validity)
            .field("leaf_validity", &self.leaf_validity)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("force", &self.force)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            manifests_dir: None,
            ca_validity: DEFAULT_CA_VALIDITY,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            max_token_lifetime: None,
            force: false,
            after_step: None,
        }
    }
}

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

fn refused(layout: &Layout, reason: impl Into<String>) -> Error {
    Error::RotationRefused {
        state: plan::state_path(layout),
        reason: reason.into(),
    }
}

fn current_phase_name(s: &State) -> String {
    match (&s.running, s.last_completed()) {
        (Some(r), _) => format!("{} (interrupted)", r.phase),
        (None, Some(p)) => p.to_string(),
        (None, None) => "none".into(),
    }
}

fn next_command(s: &State) -> Option<String> {
    let t = s.target;
    if s.status == Status::Aborting {
        return Some(format!("pki rotate {t} abort"));
    }
    if !s.is_active() {
        return None;
    }
    if let Some(r) = &s.running {
        return Some(format!("pki rotate {t} {}", r.phase));
    }
    let next = match s.last_completed() {
        None => Phase::Start,
        Some(p) => p.next()?,
    };
    let mut cmd = format!("pki rotate {t} {next}");
    if t == Target::Sa
        && next == Phase::Finish
        && let Some(until) = tokens_valid_until(s)
    {
        cmd.push_str(&format!(" (not before {})", state::format_rfc3339(until)));
    }
    Some(cmd)
}

fn tokens_valid_until(s: &State) -> Option<OffsetDateTime> {
    let switched = s.switched_at.as_deref()?;
    let t = OffsetDateTime::parse(switched, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = s
        .max_token_lifetime_secs
        .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME.as_secs());
    Some(t + Duration::from_secs(secs))
}

/// What to do with a requested phase given the state.
enum Admission {
    Fresh(State),
    Resume(State),
    AlreadyDone(State),
}

fn admit(
    layout: &Layout,
    target: Target,
    phase: Phase,
    existing: Option<State>,
    opts: &Options,
) -> Result<Admission> {
    let t = target;
    let Some(s) = existing else {
        if phase != Phase::Start {
            return Err(refused(
                layout,
                format!("no rotation in progress: run `pki rotate {t} start` first"),
            ));
        }
        return Ok(Admission::Fresh(State::new(t, opts.manifests_dir.clone())));
    };
    if s.status == Status::Aborting {
        return Err(refused(
            layout,
            format!(
                "abort of the {} rotation was interrupted: rerun `pki rotate {} abort`",
                s.target, s.target
            ),
        ));
    }
    if !s.is_active() {
        if phase == Phase::Start {
            return Ok(Admission::Fresh(State::new(t, opts.manifests_dir.clone())));
        }
        if s.target == t && s.status == Status::Finished && phase == Phase::Finish {
            return Ok(Admission::AlreadyDone(s));
        }
        return Err(refused(
            layout,
            format!("no rotation of {t} in progress: run `pki rotate {t} start` first"),
        ));
    }
    if s.target != t {
        return Err(refused(
            layout,
            format!(
                "rotation of {} already in progress at phase {}; finish or abort it first (next: `{}`)",
                s.target,
                current_phase_name(&s),
                next_command(&s).unwrap_or_default()
            ),
        ));
    }
    if let Some(r) = &s.running {
        if r.phase == phase {
            return Ok(Admission::Resume(s));
        }
        return Err(refused(
            layout,
            format!(
                "phase {} of the {t} rotation was interrupted: rerun `pki rotate {t} {}` first",
                r.phase, r.phase
            ),
        ));
    }
    if s.last_completed() == Some(phase) {
        return Ok(Admission::AlreadyDone(s));
    }
    if s.has_completed(phase) {
        return Err(refused(
            layout,
            format!(
                "rotation of {t} already in progress at phase {}; next: `{}`",
                current_phase_name(&s),
                next_command(&s).unwrap_or_default()
            ),
        ));
    }
    if let Some(prev) = phase.previous()
        && !s.has_completed(prev)
    {
        return Err(refused(
            layout,
            format!("run `pki rotate {t} {prev}` first"),
        ));
    }
    Ok(Admission::Fresh(s))
}

fn plan_for(layout: &Layout, s: &State, opts: &Options) -> Result<Plan> {
    if let (Some(given), Some(recorded)) = (&opts.manifests_dir, &s.manifests_dir)
        && given != recorded
    {
        return Err(refused(
            layout,
            format!(
                "this rotation manages manifests in {} (recorded at start), not {}",
                recorded.display(),
                given.display()
            ),
        ));
    }
    if s.manifests_dir.is_none() && opts.manifests_dir.is_some() && !s.completed.is_empty() {
        return Err(refused(
            layout,
            "--manifests-dir must be given at `start` (the original flag values are recorded then)",
        ));
    }
    Ok(Plan::new(s.target, layout.clone(), s.manifests_dir.clone()))
}

fn lock_and_clean(layout: &Layout, manifests: Option<&Path>) -> Result<store::DirLock> {
    let lock = store::lock_dir(&layout.cert_dir)?;
    for d in [
        layout.cert_dir.clone(),
        layout.cert_dir.join("etcd"),
        layout.kubeconfig_dir.clone(),
        plan::rotation_dir(layout),
    ]
    .into_iter()
    .chain(Target::ALL.map(|t| Plan::new(t, layout.clone(), None).staged_dir()))
    {
        store::clean_stale_temps(&d);
    }
    if let Some(m) = manifests {
        store::clean_stale_temps(m);
    }
    Ok(lock)
}

/// Runs `phase` of the rotation of `target`: refuses it when out of order, resumes it when
/// interrupted, does nothing when already complete.
pub fn run(layout: &Layout, target: Target, phase: Phase, opts: &mut Options) -> Result<Outcome> {
    let _lock = lock_and_clean(layout, opts.manifests_dir.as_deref())?;
    let state_path = plan::state_path(layout);
    let existing = state::load(&state_path)?;
    let admission = admit(layout, target, phase, existing, opts)?;
    let (mut s, resume) = match admission {
        Admission::AlreadyDone(s) => {
            return Ok(Outcome {
                target,
                phase: Some(phase),
                already_done: true,
                steps: Vec::new(),
                backup: None,
                notes: vec![format!(
                    "phase {phase} of the {target} rotation is already complete"
                )],
                restart: restart::sequence(target, Some(phase)),
                next: next_command(&s),
            });
        }
        Admission::Fresh(s) => (s, false),
        Admission::Resume(s) => (s, true),
    };
    let plan = plan_for(layout, &s, opts)?;
    let mut notes = Vec::new();
    if !resume {
        precheck(&plan, &s, phase, opts)?;
    }
    if target == Target::Sa && matches!(phase, Phase::Start | Phase::Switch) {
        if let Some(l) = opts.max_token_lifetime {
            s.max_token_lifetime_secs = Some(l.as_secs());
        } else if s.max_token_lifetime_secs.is_none() {
            s.max_token_lifetime_secs = Some(DEFAULT_MAX_TOKEN_LIFETIME.as_secs());
        }
    }
    if s.running.is_none() {
        if phase == Phase::Start {
            // A fresh start never reuses material staged by anything earlier.
            phases::run_step(
                &phases::Step::Unstage,
                &plan,
                &mut s,
                &state_path,
                &settings(opts),
                &mut notes,
            )?;
        }
        let label = |p: &Path| plan.label(p);
        let rel = backup::take(
            &plan.rotation_dir(),
            &format!("{target}-{phase}"),
            &plan.touched_files(),
            &label,
        )?;
        if phase == Phase::Start {
            s.origin_backup = Some(rel.clone());
        }
        s.backups.push(rel.clone());
        s.running = Some(Running {
            phase,
            backup: rel,
            steps_done: Vec::new(),
        });
        state::save(&state_path, &s)?;
    }
    let backup_dir = s
        .running
        .as_ref()
        .map(|r| plan.rotation_dir().join(&r.backup));
    let settings = settings(opts);
    let mut done_now = Vec::new();
    for step in phases::steps(&plan, phase) {
        let name = step.name(&plan);
        if s.running
            .as_ref()
            .is_some_and(|r| r.steps_done.contains(&name))
        {
            continue;
        }
        phases::run_step(&step, &plan, &mut s, &state_path, &settings, &mut notes)?;
        if let Some(hook) = opts.after_step.as_mut() {
            hook(&name);
        }
        if let Some(r) = s.running.as_mut() {
            r.steps_done.push(name.clone());
        }
        state::save(&state_path, &s)?;
        done_now.push(name);
    }
    s.running = None;
    s.completed.push(phase);
    match phase {
        Phase::Start => {}
        Phase::Switch => s.switched_at = Some(state::now_rfc3339()),
        Phase::Finish => {
            s.status = Status::Finished;
            s.ended_at = Some(state::now_rfc3339());
        }
    }
    state::save(&state_path, &s)?;
    if target == Target::Ca && phase == Phase::Start && plan.kcm_manifest().is_none() {
        notes.push(
            "--manifests-dir was not given: before kube-controller-manager restarts, point its --cluster-signing-cert-file/--cluster-signing-key-file at ca-signer.crt/ca-signer.key (ca.crt now holds two certificates, which that flag refuses), and back to ca.crt/ca.key after finish"
                .to_owned(),
        );
    }
    if target == Target::Sa && phase == Phase::Switch {
        notes.push(format!(
            "tokens signed by the old key stay valid until they expire: `finish` is refused before {} (max token lifetime {}s)",
            tokens_valid_until(&s)
                .map(state::format_rfc3339)
                .unwrap_or_default(),
            s.max_token_lifetime_secs.unwrap_or_default()
        ));
    }
    Ok(Outcome {
        target,
        phase: Some(phase),
        already_done: false,
        steps: done_now,
        backup: backup_dir,
        notes,
        restart: restart::sequence(target, Some(phase)),
        next: next_command(&s),
    })
}

fn settings(opts: &Options) -> phases::StepSettings {
    phases::StepSettings {
        ca_validity: opts.ca_validity,
        leaf_validity: opts.leaf_validity,
    }
}

fn precheck(plan: &Plan, s: &State, phase: Phase, opts: &Options) -> Result<()> {
    match phase {
        Phase::Start => phases::precheck_start(plan),
        Phase::Switch => Ok(()),
        Phase::Finish if plan.target == Target::Sa => {
            let Some(until) = tokens_valid_until(s) else {
                return Ok(());
            };
            if OffsetDateTime::now_utc() < until && !opts.force {
                return Err(Error::TokensStillValid {
                    state: plan::state_path(&plan.layout),
                    until: state::format_rfc3339(until),
                    lifetime_secs: s
                        .max_token_lifetime_secs
                        .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME.as_secs()),
                });
            }
            Ok(())
        }
        Phase::Finish => phases::precheck_finish_ca(plan),
    }
}

/// Undoes a rotation of `target` that has not begun `finish`: every file is put back exactly
/// as it was before `start` (bytes and modes), files the rotation created are removed, and the
/// staging area is deleted. The backups stay.
pub fn abort(layout: &Layout, target: Target, opts: &mut Options) -> Result<Outcome> {
    let _lock = lock_and_clean(layout, opts.manifests_dir.as_deref())?;
    let state_path = plan::state_path(layout);
    let Some(mut s) = state::load(&state_path)? else {
        return Err(refused(layout, "no rotation in progress: nothing to abort"));
    };
    if !s.is_active() || s.target != target {
        return Err(refused(
            layout,
            if s.is_active() {
                format!(
                    "the rotation in progress is of {}, not {target} (`pki rotate {} abort`)",
                    s.target, s.target
                )
            } else {
                format!("no rotation of {target} in progress: nothing to abort")
            },
        ));
    }
    if s.finish_begun() {
        return Err(refused(
            layout,
            format!(
                "finish has begun: the old {target} is being removed and cannot be restored; run `pki rotate {target} finish`"
            ),
        ));
    }
    let plan = Plan::new(target, layout.clone(), s.manifests_dir.clone());
    let mut steps = Vec::new();
    let mut backup_dir = None;
    if s.status == Status::InProgress {
        let label = |p: &Path| plan.label(p);
        let rel = backup::take(
            &plan.rotation_dir(),
            &format!("{target}-abort"),
            &plan.touched_files(),
            &label,
        )?;
        backup_dir = Some(plan.rotation_dir().join(&rel));
        s.backups.push(rel);
        s.status = Status::Aborting;
        state::save(&state_path, &s)?;
    }
    if let Some(origin) = &s.origin_backup {
        let restored = backup::restore(&plan.rotation_dir().join(origin))?;
        steps.extend(
            restored
                .iter()
                .map(|p| format!("restore:{}", plan.label(p))),
        );
        if let Some(hook) = opts.after_step.as_mut() {
            hook("restore");
        }
    }
    phases::run_step(
        &phases::Step::Unstage,
        &plan,
        &mut s,
        &state_path,
        &settings(opts),
        &mut Vec::new(),
    )?;
    steps.push("unstage".into());
    s.status = Status::Aborted;
    s.running = None;
    s.ended_at = Some(state::now_rfc3339());
    state::save(&state_path, &s)?;
    Ok(Outcome {
        target,
        phase: None,
        already_done: false,
        steps,
        backup: backup_dir,
        notes: vec![format!(
            "every file is back as it was before `pki rotate {target} start`; backups stay in {}",
            plan.rotation_dir().join("backups").display()
        )],
        restart: restart::sequence(target, None),
        next: None,
    })
}
