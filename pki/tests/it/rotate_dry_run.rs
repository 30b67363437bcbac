//! `pki rotate <target> <phase> --dry-run` through the binary: before and after every real
//! phase of a `ca` and an `sa` rotation, the dry run lists exactly the files the real phase then
//! creates, changes or removes, and leaves every byte, mode and directory entry under the
//! cluster root (cert dir, kubeconfigs, manifests, `.rotation`, temp dirs) as it was. Refusals
//! read and exit exactly as the real phase's.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::common;
use crate::rotate_support;

use common::*;
use rotate_support::*;

/// Every entry under `root` (directories, links and files, dot names included) with its mode
/// and, for a file, its bytes; a link is recorded by its target (not followed), except a name
/// linking into a generation, which is read as the file it shows; generation internals
/// (`..data`, `..gen-*`) are left out.
fn everything(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Option<Vec<u8>>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if durable::generation::is_internal(&e.file_name()) {
                continue;
            }
            let p = e.path();
            let managed = durable::generation::is_managed_link(&p);
            let meta = if managed {
                std::fs::metadata(&p).unwrap()
            } else {
                std::fs::symlink_metadata(&p).unwrap()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                let text = format!("-> {}", target.display());
                out.insert(rel, (mode, Some(text.into_bytes())));
            } else if meta.is_dir() {
                out.insert(rel, (mode, None));
                walk(root, &p, out);
            } else {
                out.insert(rel, (mode, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `path` relative to the cluster root, with a backup's time stamp blanked (a real run takes
/// its backup at another millisecond than the dry run).
fn normalized(c: &Cluster, path: &str) -> String {
    let rel = Path::new(path)
        .strip_prefix(c.root())
        .unwrap_or_else(|_| panic!("{path} is outside the cluster root"))
        .display()
        .to_string();
    match rel.split_once(".rotation/backups/") {
        Some((head, tail)) => {
            let rest = tail.split_once('-').map_or(tail, |(_, r)| r);
            format!("{head}.rotation/backups/*-{rest}")
        }
        None => rel,
    }
}

/// The `[dry-run] would <verb> <path>` lines of a dry run, as (verb, normalized path).
fn predicted(c: &Cluster, stdout: &str) -> BTreeSet<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[dry-run] would "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(verb, _)| ["create", "change", "remove"].contains(verb))
        .map(|(verb, path)| (verb.to_owned(), normalized(c, path)))
        .collect()
}

/// What happened to the files between two snapshots, in the dry run's terms.
fn happened(
    c: &Cluster,
    before: &BTreeMap<String, (u32, Option<Vec<u8>>)>,
    after: &BTreeMap<String, (u32, Option<Vec<u8>>)>,
) -> BTreeSet<(String, String)> {
    let file = |m: &BTreeMap<String, (u32, Option<Vec<u8>>)>, k: &str| {
        m.get(k).filter(|(_, bytes)| bytes.is_some()).cloned()
    };
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let verb = match (file(before, k), file(after, k)) {
                (None, Some(_)) => "create",
                (Some(_), None) => "remove",
                (Some(a), Some(b)) if a != b => "change",
                _ => return None,
            };
            let full = c.root().join(k).display().to_string();
            Some((verb.to_owned(), normalized(c, &full)))
        })
        .collect()
}

/// Runs `rotate t phase extra --dry-run`, insists nothing under the cluster root changed, and
/// returns its output.
fn dry_run(c: &Cluster, t: T, phase: &str, extra: &[&str]) -> Output {
    let before = everything(c.root());
    let mut args = extra.to_vec();
    args.push("--dry-run");
    let out = rotate(c, t, phase, &args);
    let after = everything(c.root());
    assert!(
        before == after,
        "`rotate {} {phase} --dry-run` wrote: {:?}",
        t.name(),
        happened(c, &before, &after)
    );
    out
}

/// A dry run of `phase` then the real one: the dry run succeeds and lists exactly what the real
/// phase changes; returns the dry run's stdout.
fn predicts(c: &Cluster, t: T, phase: &str, extra: &[&str]) -> String {
    let said = ok(&dry_run(c, t, phase, extra));
    let before = everything(c.root());
    ok(&rotate(c, t, phase, extra));
    let after = everything(c.root());
    assert_eq!(
        predicted(c, &said),
        happened(c, &before, &after),
        "dry run of {} {phase} vs the real phase\n{said}",
        t.name()
    );
    said
}

fn line(c: &Cluster, verb: &str, rel: &str) -> String {
    format!("[dry-run] would {verb} {}", c.root().join(rel).display())
}

/// A refusal of the dry run is the real phase's refusal: same message, same exit status.
fn refused_alike(c: &Cluster, t: T, phase: &str, extra: &[&str]) -> String {
    let dry = dry_run(c, t, phase, extra);
    let real = rotate(c, t, phase, extra);
    let err = fails(&real);
    assert_eq!(String::from_utf8_lossy(&dry.stderr), err);
    assert_eq!(dry.status.code(), real.status.code());
    assert!(dry.stdout.is_empty());
    err
}

#[test]
fn ca_dry_runs_predict_every_phase_and_write_nothing() {
    let (c, manifests) = initialized_with_manifests();
    let m = manifests.to_string_lossy().into_owned();
    let kcm = "manifests/kube-controller-manager.yaml";

    let err = refused_alike(&c, T::Ca, "switch", &[]);
    assert!(err.contains("run `pki rotate ca start` first"), "{err}");

    let out = predicts(&c, T::Ca, "start", &["--manifests-dir", &m]);
    for expected in [
        line(&c, "create", "pki/ca-signer.crt"),
        line(&c, "create", "pki/ca-signer.key"),
        line(&c, "create", "pki/.rotation/staged/ca/new.crt"),
        line(&c, "create", "pki/.rotation/state.json"),
        line(&c, "change", "pki/ca.crt"),
        line(&c, "change", "admin.conf"),
        line(&c, "change", kcm),
        "[dry-run] ca start: would carry out".into(),
        "[dry-run] step manifests:signer".into(),
    ] {
        assert!(out.lines().any(|l| l == expected), "{expected}\n{out}");
    }
    assert!(!out.contains(".pki-dry-run"), "{out}");
    assert_eq!(
        std::fs::read_to_string(manifests.join("kube-controller-manager.yaml"))
            .unwrap()
            .matches("ca-signer")
            .count(),
        2,
        "the real start edits the manifest"
    );

    // abort is previewed too: the manifest and the CA would be put back.
    let out = ok(&dry_run(&c, T::Ca, "abort", &[]));
    assert!(out.lines().any(|l| l == line(&c, "change", kcm)), "{out}");
    assert!(
        out.lines()
            .any(|l| l == line(&c, "remove", "pki/ca-signer.key"))
    );

    let out = predicts(&c, T::Ca, "switch", &[]);
    assert!(
        out.contains(&line(&c, "change", "pki/apiserver.crt")),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l == line(&c, "change", kcm)),
        "switch leaves the manifests: {out}"
    );

    // -o json stays parseable and names the real files.
    let json: serde_json::Value =
        serde_json::from_slice(&dry_run(&c, T::Ca, "finish", &["-o", "json"]).stdout).unwrap();
    assert_eq!(json["dryRun"], true);
    assert_eq!(json["phase"], "finish");
    let changes = json["changes"].as_array().unwrap();
    let kcm_path = c.root().join(kcm).display().to_string();
    assert!(
        changes.contains(&serde_json::json!({"action": "change", "path": kcm_path})),
        "{changes:?}"
    );

    let out = predicts(&c, T::Ca, "finish", &[]);
    assert!(
        out.lines()
            .any(|l| l == line(&c, "remove", "pki/ca-signer.crt"))
    );
    assert_eq!(
        std::fs::read_to_string(manifests.join("kube-controller-manager.yaml")).unwrap(),
        KCM_MANIFEST
    );
    let out = ok(&dry_run(&c, T::Ca, "finish", &[]));
    assert!(out.contains("already complete"), "{out}");
    assert!(out.contains("[dry-run] no file would change"), "{out}");
}

#[test]
fn sa_dry_runs_predict_every_phase_and_refuse_as_the_real_phase() {
    let c = Cluster::new();
    ok(&c.init(&[]));
    let err = refused_alike(&c, T::Sa, "switch", &[]);
    assert!(err.contains("run `pki rotate sa start` first"), "{err}");

    let out = predicts(&c, T::Sa, "start", &[]);
    assert!(
        out.lines().any(|l| l == line(&c, "change", "pki/sa.pub")),
        "{out}"
    );
    assert!(out.contains(&line(&c, "create", "pki/.rotation/staged/sa/new.key")));
    assert!(
        !out.lines().any(|l| l == line(&c, "change", "pki/sa.key")),
        "sa.key keeps signing at start: {out}"
    );

    let out = predicts(&c, T::Sa, "switch", &[]);
    assert!(
        out.lines().any(|l| l == line(&c, "change", "pki/sa.key")),
        "{out}"
    );

    let err = refused_alike(&c, T::Sa, "finish", &[]);
    assert!(err.contains("tokens it signed may be valid until"), "{err}");
    let out = predicts(&c, T::Sa, "finish", &["--force"]);
    assert!(out.contains(&line(&c, "remove", "pki/.rotation/staged/sa/old.key")));
}

#[test]
fn export_is_previewed_not_written() {
    let c = Cluster::new();
    ok(&c.init(&[]));
    let file = c.root().join("shared/ca.rotation");
    let f = file.to_string_lossy().into_owned();
    let out = ok(&dry_run(&c, T::Ca, "start", &["--export", &f]));
    assert!(
        out.lines()
            .any(|l| l == format!("[dry-run] would create {f}")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == format!("[dry-run] would create {f}.public")),
        "{out}"
    );
    assert!(out.contains("would generate the certificate key"), "{out}");
    // No key is shown: one that is never used would only mislead. (The workers' pin,
    // `sha256:<hex>` of a public key, is no secret.)
    let pins: Vec<&str> = out
        .match_indices("sha256:")
        .map(|(i, _)| &out[i..i + 71])
        .collect();
    assert!(!pins.is_empty(), "the pin is previewed:\n{out}");
    let without_pins = pins.iter().fold(out.clone(), |o, p| o.replace(p, ""));
    assert!(
        !without_pins
            .split(|ch: char| !ch.is_ascii_hexdigit())
            .any(|w| w.len() == 64),
        "{out}"
    );
    assert!(!file.exists() && !file.parent().unwrap().exists());
}

#[test]
fn a_running_command_refuses_the_dry_run_as_it_refuses_the_phase() {
    let c = Cluster::new();
    ok(&c.init(&[]));
    // flock(1) takes the same lock `pki` takes: flock(2) on the cert dir itself.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(c.pki())
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let wait = std::time::Instant::now();
    while std::process::Command::new("flock")
        .args(["-n", "-x"])
        .arg(c.pki())
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(wait.elapsed().as_secs() < 10, "the lock was never taken");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = fails(&rotate(&c, T::Ca, "start", &[]));
    let dry = rotate(&c, T::Ca, "start", &["--dry-run"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(err.contains("another `pki` command is running"), "{err}");
    assert_eq!(String::from_utf8_lossy(&dry.stderr), err);
}

#[test]
fn a_recorded_path_outside_the_copy_refuses_the_dry_run() {
    let c = Cluster::new();
    ok(&c.init(&[]));
    ok(&rotate(&c, T::Ca, "start", &[]));
    // The `start` backup names the kubeconfigs of the root; an abort told of another kubeconfig
    // dir would restore files the copy does not hold: refused, nothing written.
    let other = c.root().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let before = everything(c.root());
    let args: Vec<String> = [
        "rotate",
        "ca",
        "abort",
        "--confirm-nodes",
        "--dry-run",
        "--cert-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        c.pki().display().to_string(),
        "--kubeconfig-dir".into(),
        other.display().to_string(),
    ])
    .collect();
    let err = fails(&run(&args));
    assert!(
        err.contains("outside the directories a dry run copies"),
        "{err}"
    );
    assert!(
        err.contains(&c.conf("admin.conf").display().to_string()),
        "{err}"
    );
    assert!(before == everything(c.root()), "the refused dry run wrote");
}
