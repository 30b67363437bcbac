//! Which command the state file admits: a phase runs only in order and only for the rotation in
//! progress, an interrupted phase (or abort) must be rerun before anything else, and a completed
//! phase is not run twice. Every refusal says what to run instead. (`status` only reads and is
//! always admitted.)

use std::path::Path;

use super::plan::{Phase, Target};
use super::state::{self, State, Status};
use crate::error::{Error, Result};

/// What to do with a requested phase.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Run the phase from its first step: on a fresh state for `start`, else on this one.
    Begin(State),
    /// The phase was interrupted: continue after its last recorded step, without prechecks.
    Resume(State),
    /// The phase has already completed: do nothing.
    AlreadyDone(State),
}

/// The refusal of a command, pointing at the state file that decided it.
fn refused(state_path: &Path, reason: impl Into<String>) -> Error {
    Error::RotationRefused {
        state: state_path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Decides whether `phase` of the rotation of `target` may run, given the state file's content
/// (`existing`) and the `--manifests-dir` given now.
pub(crate) fn admit_phase(
    state_path: &Path,
    target: Target,
    phase: Phase,
    existing: Option<State>,
    manifests_dir: Option<&Path>,
) -> Result<Admission> {
    let admission = admit_in_order(state_path, target, phase, existing, manifests_dir)?;
    if let Admission::Begin(s) | Admission::Resume(s) = &admission {
        check_manifests_dir(state_path, s, manifests_dir)?;
    }
    Ok(admission)
}

fn admit_in_order(
    state_path: &Path,
    t: Target,
    phase: Phase,
    existing: Option<State>,
    manifests_dir: Option<&Path>,
) -> Result<Admission> {
    let fresh = || State::new(t, manifests_dir.map(Path::to_path_buf));
    let Some(s) = existing else {
        if phase != Phase::Start {
            return Err(refused(
                state_path,
                format!("no rotation in progress: run `pki rotate {t} start` first"),
            ));
        }
        return Ok(Admission::Begin(fresh()));
    };
    if s.status == Status::Aborting {
        return Err(refused(
            state_path,
            format!(
                "abort of the {} rotation was interrupted: rerun `pki rotate {} abort`",
                s.target, s.target
            ),
        ));
    }
    if !s.is_active() {
        if phase == Phase::Start {
            return Ok(Admission::Begin(fresh()));
        }
        if s.target == t && s.status == Status::Finished && phase == Phase::Finish {
            return Ok(Admission::AlreadyDone(s));
        }
        return Err(refused(
            state_path,
            format!("no rotation of {t} in progress: run `pki rotate {t} start` first"),
        ));
    }
    if s.target != t {
        return Err(refused(
            state_path,
            format!(
                "rotation of {} already in progress at phase {}; finish or abort it first (next: `{}`)",
                s.target,
                phase_name(&s),
                next_command(&s).unwrap_or_default()
            ),
        ));
    }
    if let Some(r) = &s.running {
        if r.phase == phase {
            return Ok(Admission::Resume(s));
        }
        return Err(refused(
            state_path,
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
            state_path,
            format!(
                "rotation of {t} already in progress at phase {}; next: `{}`",
                phase_name(&s),
                next_command(&s).unwrap_or_default()
            ),
        ));
    }
    if let Some(prev) = phase.previous()
        && !s.has_completed(prev)
    {
        return Err(refused(
            state_path,
            format!("run `pki rotate {t} {prev}` first"),
        ));
    }
    Ok(Admission::Begin(s))
}

/// The manifests directory is recorded at `start`; later phases may repeat it, not change it.
fn check_manifests_dir(state_path: &Path, s: &State, given: Option<&Path>) -> Result<()> {
    match (given, s.manifests_dir.as_deref()) {
        (Some(given), Some(recorded)) if given != recorded => Err(refused(
            state_path,
            format!(
                "this rotation manages manifests in {} (recorded at start), not {}",
                recorded.display(),
                given.display()
            ),
        )),
        (Some(_), None) if !s.completed.is_empty() => Err(refused(
            state_path,
            "--manifests-dir must be given at `start` (the original flag values are recorded then)",
        )),
        _ => Ok(()),
    }
}

/// Decides whether `abort` of the rotation of `target` may run; returns the state to undo.
/// Once `switch` has begun the new CA (or key) may have signed what is already in use, and once
/// `finish` has begun the old one is being removed: either way only going forward is safe.
pub(crate) fn admit_abort(
    state_path: &Path,
    target: Target,
    existing: Option<State>,
) -> Result<State> {
    let Some(s) = existing else {
        return Err(refused(
            state_path,
            "no rotation in progress: nothing to abort",
        ));
    };
    if !s.is_active() {
        return Err(refused(
            state_path,
            format!("no rotation of {target} in progress: nothing to abort"),
        ));
    }
    if s.target != target {
        return Err(refused(
            state_path,
            format!(
                "the rotation in progress is of {}, not {target} (`pki rotate {} abort`)",
                s.target, s.target
            ),
        ));
    }
    if s.finish_begun() {
        return Err(refused(
            state_path,
            format!(
                "finish has begun: the old {target} is being removed and cannot be restored; run `pki rotate {target} finish`"
            ),
        ));
    }
    if s.switch_begun() {
        return Err(refused(
            state_path,
            format!(
                "switch has run on this node: what the new {target} signed since then (certificates, tokens) would stop being trusted if the old one were restored; complete the rotation instead (rerun an interrupted `pki rotate {target} switch`, then `pki rotate {target} finish` once switch is complete on every node), then rotate again to move to another {target}"
            ),
        ));
    }
    Ok(s)
}

/// The phase the rotation stands at, for messages.
fn phase_name(s: &State) -> String {
    match (&s.running, s.last_completed()) {
        (Some(r), _) => format!("{} (interrupted)", r.phase),
        (None, Some(p)) => p.to_string(),
        (None, None) => "none".into(),
    }
}

/// The command the state admits next (`None` once the rotation has ended). For `sa finish` it
/// says when the old key's tokens have expired.
pub(crate) fn next_command(s: &State) -> Option<String> {
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
    if next == Phase::Switch {
        cmd.push_str(" --confirm-nodes");
    }
    if t == Target::Sa
        && next == Phase::Finish
        && let Some(until) = s.tokens_valid_until()
    {
        cmd.push_str(&format!(" (not before {})", state::format_rfc3339(until)));
    }
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotate::state::Running;
    use std::path::PathBuf;

    /// What admission answers to a command.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Answer {
        /// The phase begins on a fresh state.
        Fresh,
        /// The phase begins on the existing state.
        Continue,
        Resume,
        AlreadyDone,
        /// `abort` may run.
        Allowed,
        /// Refused, the reason containing this text.
        Refused(&'static str),
    }

    /// Whose rotation the existing state file is about.
    #[derive(Debug, Clone, Copy)]
    enum Of {
        ThisTarget,
        AnotherTarget,
    }

    const NONE: &str = "no rotation in progress";
    const NOT_OF: &str = "no rotation of";
    const INTERRUPTED: &str = "was interrupted";
    const BUSY: &str = "already in progress";
    const ORDER: &str = "first";
    const BEGUN: &str = "finish has begun";
    const SWITCHED: &str = "switch has run";
    const OTHER: &str = "the rotation in progress is of";

    type Existing = Option<(Of, Status, &'static [Phase], Option<Phase>)>;

    /// Every state a rotation can be in, with the answers to `start`, `switch`, `finish` and
    /// `abort`, in that order.
    const TABLE: &[(&str, Existing, [Answer; 4])] = {
        use Answer::{Allowed, AlreadyDone as Done, Continue, Fresh, Refused as R, Resume};
        use Of::{AnotherTarget as Other, ThisTarget as This};
        use Phase::{Finish, Start, Switch};
        use Status::{Aborted, Aborting, Finished, InProgress};
        &[
            ("no rotation ever", None, [Fresh, R(NONE), R(NONE), R(NONE)]),
            (
                "start interrupted",
                Some((This, InProgress, &[], Some(Start))),
                [Resume, R(INTERRUPTED), R(INTERRUPTED), Allowed],
            ),
            (
                "after start",
                Some((This, InProgress, &[Start], None)),
                [Done, Continue, R(ORDER), Allowed],
            ),
            (
                "switch interrupted",
                Some((This, InProgress, &[Start], Some(Switch))),
                [R(INTERRUPTED), Resume, R(INTERRUPTED), R(SWITCHED)],
            ),
            (
                "after switch",
                Some((This, InProgress, &[Start, Switch], None)),
                [R(BUSY), Done, Continue, R(SWITCHED)],
            ),
            (
                "finish interrupted",
                Some((This, InProgress, &[Start, Switch], Some(Finish))),
                [R(INTERRUPTED), R(INTERRUPTED), Resume, R(BEGUN)],
            ),
            (
                "finished",
                Some((This, Finished, &[Start, Switch, Finish], None)),
                [Fresh, R(NOT_OF), Done, R(NOT_OF)],
            ),
            (
                "abort interrupted",
                Some((This, Aborting, &[Start], None)),
                [R(INTERRUPTED), R(INTERRUPTED), R(INTERRUPTED), Allowed],
            ),
            (
                "aborted",
                Some((This, Aborted, &[Start], None)),
                [Fresh, R(NOT_OF), R(NOT_OF), R(NOT_OF)],
            ),
            (
                "another target in progress",
                Some((Other, InProgress, &[Start], None)),
                [R(BUSY), R(BUSY), R(BUSY), R(OTHER)],
            ),
            (
                "another target's abort interrupted",
                Some((Other, Aborting, &[Start], None)),
                [R(INTERRUPTED), R(INTERRUPTED), R(INTERRUPTED), R(OTHER)],
            ),
            (
                "another target finished",
                Some((Other, Finished, &[Start, Switch, Finish], None)),
                [Fresh, R(NOT_OF), R(NOT_OF), R(NOT_OF)],
            ),
        ]
    };

    fn state(target: Target, status: Status, completed: &[Phase], running: Option<Phase>) -> State {
        let mut s = State::new(target, None);
        s.status = status;
        s.completed = completed.to_vec();
        s.running = running.map(|phase| Running {
            phase,
            backup: "backups/x".into(),
            steps_done: Vec::new(),
        });
        s
    }

    /// Asks admission about `phase` (`None`: abort) of `target`.
    fn answer(target: Target, phase: Option<Phase>, existing: Option<State>) -> Answer {
        let path = Path::new("/k/pki/.rotation/state.json");
        let before = existing.clone();
        let result = match phase {
            Some(phase) => admit_phase(path, target, phase, existing, None).map(|a| match a {
                Admission::Begin(s) if Some(&s) == before.as_ref() => Answer::Continue,
                Admission::Begin(s) => {
                    assert_eq!((s.target, s.status), (target, Status::InProgress));
                    assert!(s.completed.is_empty() && s.running.is_none());
                    Answer::Fresh
                }
                Admission::Resume(_) => Answer::Resume,
                Admission::AlreadyDone(_) => Answer::AlreadyDone,
            }),
            None => admit_abort(path, target, existing).map(|_| Answer::Allowed),
        };
        match result {
            Ok(a) => a,
            Err(Error::RotationRefused { state, reason }) => {
                assert_eq!(state, path);
                [
                    NONE,
                    NOT_OF,
                    INTERRUPTED,
                    BUSY,
                    ORDER,
                    BEGUN,
                    SWITCHED,
                    OTHER,
                ]
                .into_iter()
                .find(|k| reason.contains(k))
                .map_or(Answer::Refused("<unexpected reason>"), Answer::Refused)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn every_command_in_every_state_of_every_target() {
        let commands = [
            Some(Phase::Start),
            Some(Phase::Switch),
            Some(Phase::Finish),
            None,
        ];
        for t in Target::ALL {
            let other = if t == Target::Sa {
                Target::Ca
            } else {
                Target::Sa
            };
            for (situation, existing, answers) in TABLE {
                let existing = existing.map(|(of, status, completed, running)| {
                    let owner = match of {
                        Of::ThisTarget => t,
                        Of::AnotherTarget => other,
                    };
                    state(owner, status, completed, running)
                });
                for (phase, expected) in commands.iter().zip(answers) {
                    let command = phase.map_or("abort", Phase::as_str);
                    assert_eq!(
                        answer(t, *phase, existing.clone()),
                        *expected,
                        "`pki rotate {t} {command}` when {situation}"
                    );
                }
            }
        }
    }

    #[test]
    fn manifests_dir_is_fixed_at_start() {
        let path = Path::new("/k/pki/.rotation/state.json");
        let given = Some(Path::new("/m"));
        let Ok(Admission::Begin(s)) = admit_phase(path, Target::Ca, Phase::Start, None, given)
        else {
            panic!("start refused");
        };
        assert_eq!(s.manifests_dir, Some(PathBuf::from("/m")));
        let mut started = s.clone();
        started.completed.push(Phase::Start);
        let switch = |s: &State, given: Option<&str>| {
            admit_phase(
                path,
                Target::Ca,
                Phase::Switch,
                Some(s.clone()),
                given.map(Path::new),
            )
        };
        assert!(matches!(
            switch(&started, Some("/m")),
            Ok(Admission::Begin(_))
        ));
        assert!(matches!(switch(&started, None), Ok(Admission::Begin(_))));
        let Err(Error::RotationRefused { reason, .. }) = switch(&started, Some("/other")) else {
            panic!("another manifests dir admitted");
        };
        assert!(reason.contains("recorded at start"), "{reason}");
        started.manifests_dir = None;
        let Err(Error::RotationRefused { reason, .. }) = switch(&started, Some("/m")) else {
            panic!("a manifests dir not given at start admitted");
        };
        assert!(reason.contains("must be given at `start`"), "{reason}");
    }

    #[test]
    fn next_command_follows_the_phases() {
        use Status::{Aborting, Finished, InProgress};
        let t = Target::EtcdCa;
        let next = |s: &State| next_command(s);
        assert_eq!(
            next(&state(t, InProgress, &[], None)).as_deref(),
            Some("pki rotate etcd-ca start")
        );
        assert_eq!(
            next(&state(t, InProgress, &[Phase::Start], None)).as_deref(),
            Some("pki rotate etcd-ca switch --confirm-nodes")
        );
        assert_eq!(
            next(&state(t, InProgress, &[Phase::Start], Some(Phase::Switch))).as_deref(),
            Some("pki rotate etcd-ca switch")
        );
        assert_eq!(
            next(&state(t, Aborting, &[Phase::Start], None)).as_deref(),
            Some("pki rotate etcd-ca abort")
        );
        assert_eq!(next(&state(t, Finished, &[Phase::Start], None)), None);
        let mut sa = state(Target::Sa, InProgress, &[Phase::Start, Phase::Switch], None);
        assert_eq!(next(&sa).as_deref(), Some("pki rotate sa finish"));
        sa.switched_at = Some(time::macros::datetime!(2026-01-02 03:04:05 UTC));
        sa.max_token_lifetime_secs = Some(3600);
        assert_eq!(
            next(&sa).as_deref(),
            Some("pki rotate sa finish (not before 2026-01-02T04:04:05Z)")
        );
    }
}
