//! Crash safety of `pki rotate`: the binary is made to exit abruptly after each step (before
//! the step's marker is recorded) and rerun until the phase completes; the end state must pass
//! every boundary check. `abort` must give back byte-identical files, also after crashes.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::rotate_support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use rotate_support::*;

const FAIL_ENV: &str = "PKI_ROTATE_FAIL_AFTER_STEP";
const CRASH_CODE: i32 = 86;

fn rotate_failing(c: &Cluster, t: T, phase: &str, after: usize, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["rotate".into(), t.name().into(), phase.into()];
    args.extend(confirmed(phase, extra).iter().map(|s| s.to_string()));
    args.extend(c.dirs());
    Command::new(BIN)
        .args(&args)
        .env(FAIL_ENV, after.to_string())
        .output()
        .unwrap()
}

/// Runs `phase` crashing after its first step, then repeatedly with one more step each time
/// (each rerun redoes the unrecorded step, then does and crashes after the next), until the
/// phase completes. Returns the number of crashes.
fn run_with_crashes(c: &Cluster, t: T, phase: &str, extra: &[&str]) -> usize {
    let mut crashes = 0;
    let mut after = 1;
    loop {
        let out = rotate_failing(c, t, phase, after, extra);
        match out.status.code() {
            Some(0) => return crashes,
            Some(CRASH_CODE) => crashes += 1,
            other => panic!(
                "{} {phase}: unexpected exit {other:?}\n{}",
                t.name(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        assert!(crashes < 40, "{} {phase} never completes", t.name());
        after = 2;
        if crashes == 1 {
            // While interrupted, another phase is refused with an explanation.
            let other = if phase == "switch" {
                "finish"
            } else {
                "switch"
            };
            let err = fails(&rotate(c, t, other, &[]));
            assert!(
                err.contains(&format!(
                    "phase {phase} of the {} rotation was interrupted",
                    t.name()
                )) || err.contains("first"),
                "{err}"
            );
        }
    }
}

#[test]
fn every_phase_survives_a_crash_after_any_step() {
    let c = Cluster::initialized();
    let manifests = write_manifests(&c);
    let m = manifests.to_string_lossy().into_owned();
    for t in [T::Ca, T::Etcd, T::FrontProxy, T::Sa] {
        let extra: &[&str] = match t {
            T::Ca => &["--manifests-dir", &m],
            T::Sa => &["--max-token-lifetime", "1s"],
            _ => &[],
        };
        let crashes = run_with_crashes(&c, t, "start", extra);
        assert!(crashes >= 3, "{t:?} start crashed {crashes} times");
        check_boundary(&c, t, 2);
        let status = ok(&rotate(&c, t, "status", &[]));
        assert!(status.contains("completed phases: start"), "{status}");
        run_with_crashes(&c, t, "switch", &[]);
        check_boundary(&c, t, 2);
        if t == T::Sa {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        run_with_crashes(&c, t, "finish", &[]);
        check_boundary(&c, t, 1);
        if t == T::Ca {
            assert_eq!(
                std::fs::read_to_string(manifests.join("kube-controller-manager.yaml")).unwrap(),
                KCM_MANIFEST
            );
            assert!(!c.path("ca-signer.crt").exists());
        }
        let leftovers: Vec<_> = walk_temps(&c.pki());
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
    ok(&c.init(&[]));
}

fn walk_temps(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.ends_with("backups") {
                out.extend(walk_temps(&p));
            }
        } else if p.to_string_lossy().contains(".tmp-") {
            out.push(p);
        }
    }
    out
}

#[test]
fn abort_restores_byte_identical_files() {
    let c = Cluster::initialized();
    let manifests = write_manifests(&c);
    let m = manifests.to_string_lossy().into_owned();
    // Unusual but legal modes must come back too.
    std::fs::set_permissions(
        c.path("ca.crt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let before = snapshot(&c);

    // ca: start, then abort.
    ok(&rotate(&c, T::Ca, "start", &["--manifests-dir", &m]));
    assert_ne!(snapshot(&c), before);
    let out = ok(&rotate(&c, T::Ca, "abort", &[]));
    assert!(out.contains("restart kube-controller-manager"), "{out}");
    assert_eq!(snapshot(&c), before, "ca abort after start");
    assert!(!c.path(".rotation/staged/ca").exists());

    // etcd-ca: crash in the middle of start, then abort (itself crashing once).
    assert_eq!(
        rotate_failing(&c, T::Etcd, "start", 2, &[]).status.code(),
        Some(CRASH_CODE)
    );
    assert_eq!(
        rotate_failing(&c, T::Etcd, "abort", 1, &[]).status.code(),
        Some(CRASH_CODE)
    );
    let err = fails(&rotate(&c, T::Etcd, "start", &[]));
    assert_mentions(&err, &["abort of the etcd-ca rotation was interrupted"]);
    ok(&rotate(&c, T::Etcd, "abort", &[]));
    assert_eq!(snapshot(&c), before, "etcd-ca abort after crashes");

    // sa: crash inside start, abort.
    assert_eq!(
        rotate_failing(&c, T::Sa, "start", 2, &[]).status.code(),
        Some(CRASH_CODE)
    );
    ok(&rotate(&c, T::Sa, "abort", &[]));
    assert_eq!(snapshot(&c), before, "sa abort after a crashed start");

    // Abort is refused once switch has run (completed or interrupted), changing nothing, and
    // says to go forward instead.
    ok(&rotate(&c, T::Ca, "start", &[]));
    assert_eq!(
        rotate_failing(&c, T::Ca, "switch", 1, &[]).status.code(),
        Some(CRASH_CODE)
    );
    let mid_switch = snapshot(&c);
    let err = fails(&rotate(&c, T::Ca, "abort", &[]));
    assert!(err.contains("switch has run on this node"), "{err}");
    assert!(err.contains("pki rotate ca finish"), "{err}");
    assert_eq!(snapshot(&c), mid_switch, "a refused abort changes nothing");
    ok(&rotate(&c, T::Ca, "switch", &[]));
    let switched = snapshot(&c);
    let err = fails(&rotate(&c, T::Ca, "abort", &[]));
    assert!(err.contains("then rotate again"), "{err}");
    assert_eq!(snapshot(&c), switched, "a refused abort changes nothing");
    ok(&rotate(&c, T::Ca, "finish", &[]));

    // Abort is refused once finish has begun.
    ok(&rotate(&c, T::FrontProxy, "start", &[]));
    ok(&rotate(&c, T::FrontProxy, "switch", &[]));
    assert_eq!(
        rotate_failing(&c, T::FrontProxy, "finish", 1, &[])
            .status
            .code(),
        Some(CRASH_CODE)
    );
    let err = fails(&rotate(&c, T::FrontProxy, "abort", &[]));
    assert!(err.contains("finish has begun"), "{err}");
    ok(&rotate(&c, T::FrontProxy, "finish", &[]));
    check_boundary(&c, T::FrontProxy, 1);
}

/// A small deterministic-per-run pseudo-random sequence (xorshift seeded from the clock).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("kill-loop seed {seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_then_rerun() {
    let c = Cluster::initialized();
    let manifests = write_manifests(&c);
    let m = manifests.to_string_lossy().into_owned();
    let mut rng = Rng::new();
    for phase in ["start", "switch", "finish"] {
        for _ in 0..5 {
            let mut args: Vec<String> = vec!["rotate".into(), "ca".into(), phase.into()];
            if phase == "start" {
                args.extend(["--manifests-dir".to_string(), m.clone()]);
            }
            args.extend(c.dirs());
            let mut child = Command::new(BIN)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever moment the kills hit, a rerun completes the phase (or finds it complete).
        let extra: &[&str] = if phase == "start" {
            &["--manifests-dir", &m]
        } else {
            &[]
        };
        ok(&rotate(&c, T::Ca, phase, extra));
        let count = if phase == "finish" { 1 } else { 2 };
        check_boundary(&c, T::Ca, count);
    }
    assert_eq!(
        std::fs::read_to_string(manifests.join("kube-controller-manager.yaml")).unwrap(),
        KCM_MANIFEST
    );
    assert!(walk_temps(&c.pki()).is_empty());
    ok(&c.init(&[]));
}

#[test]
fn a_second_concurrent_rotate_is_refused_at_once() {
    let c = Cluster::initialized();
    let before = snapshot(&c);
    // The lock another `pki rotate` holds while it runs (flock on the cert dir).
    let held = durable::lock_dir(&c.path(""), durable::LockWait::Try).unwrap();
    let began = std::time::Instant::now();
    for phase in ["start", "abort"] {
        let err = fails(&rotate(&c, T::Etcd, phase, &[]));
        assert!(err.contains("another `pki` command is running"), "{err}");
    }
    assert!(
        began.elapsed() < std::time::Duration::from_secs(5),
        "refused at once, not queued"
    );
    assert_eq!(snapshot(&c), before, "a refused run changes nothing");
    // `status` only reads: it still answers.
    ok(&rotate(&c, T::Etcd, "status", &[]));
    drop(held);
    ok(&rotate(&c, T::Etcd, "start", &[]));
}
