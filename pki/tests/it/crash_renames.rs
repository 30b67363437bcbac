//! Crash atomicity through the binary: `strace` kills `pki` (SIGKILL) at its N-th `rename` for
//! every N of a run; every key matches its certificate (checked with openssl) as the files lie,
//! and after the next writing command no temporary file, commit journal or unreferenced
//! generation is left.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `args` under strace, killed with SIGKILL on entering its `when`-th rename (counted from
/// 1); asserts that it died of that signal there, having made exactly `when - 1` renames before.
fn run_killed_at(args: &[String], when: usize) {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("strace")
        .args(["-f", "-q", "-o"])
        .arg(trace.path())
        .args(["-e", "trace=rename"])
        .args(["-e", &format!("inject=rename:signal=KILL:when={when}")])
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(trace.path()).unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "not killed by SIGKILL at rename {when}: {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let renames: Vec<&str> = text.lines().filter(|l| l.contains(" rename(")).collect();
    assert_eq!(renames.len(), when, "renames before the kill:\n{text}");
    assert!(
        renames[when - 1].trim_end().ends_with("= ?"),
        "the injected rename ran: {}",
        renames[when - 1]
    );
    assert!(text.contains("+++ killed by SIGKILL +++"), "{text}");
}

fn count_renames(args: &[String]) -> usize {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-c", "-e", "trace=rename", "-o", "/dev/stdout"])
        .arg(BIN)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_end().ends_with(" rename"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rename count in {text}"))
}

/// Public key of a key file and of a certificate, as openssl prints them.
fn pubkey(path: &Path, cert: bool) -> String {
    let p = path.to_str().unwrap();
    let args: Vec<&str> = if cert {
        vec!["x509", "-noout", "-pubkey", "-in", p]
    } else {
        vec!["pkey", "-pubout", "-in", p]
    };
    let out = Command::new("openssl").args(&args).output().unwrap();
    assert!(out.status.success(), "openssl on {p}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `<name>.key` beside a `<name>.crt` matches it, and no temp, journal or stale
/// generation is left.
fn assert_consistent(c: &Cluster, context: &str) {
    assert_consistent_in(&[c.pki(), c.path("etcd"), c.root().to_path_buf()], context);
}

/// [`assert_consistent`] over `dirs`.
fn assert_consistent_in(dirs: &[std::path::PathBuf], context: &str) {
    assert_pairs_match(dirs, context);
    for dir in dirs {
        let mut generations = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp-") && !name.starts_with(".durable-commit-"),
                "{context}: {name} left in {}",
                dir.display()
            );
            generations += usize::from(name.starts_with("..gen-"));
        }
        assert!(
            generations <= 1,
            "{context}: {generations} generations in {dir:?}"
        );
    }
}

/// Every `<name>.key` beside a `<name>.crt` in `dirs` matches it (temps and journals allowed).
fn assert_pairs_match(dirs: &[std::path::PathBuf], context: &str) {
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(base) = name.strip_suffix(".key") {
                let crt = dir.join(format!("{base}.crt"));
                if crt.exists() && base != "sa" {
                    assert_eq!(
                        pubkey(&entry.path(), false),
                        pubkey(&crt, true),
                        "{context}: {base}.key does not match {base}.crt"
                    );
                }
            }
        }
    }
}

/// A writing command that changes nothing here: it only recovers.
fn recover(c: &Cluster) {
    let mut args = vec!["renew".to_owned(), "all".to_owned()];
    args.extend(c.dirs());
    args.extend(["--if-expiring-within".to_owned(), "1h".to_owned()]);
    ok(&run(&args));
}

/// A new cluster holding a copy of `template`'s files.
fn copy_of(template: &Cluster) -> Cluster {
    let c = Cluster::new();
    let status = Command::new("cp")
        .arg("-a")
        .arg(template.root().join("."))
        .arg(c.root())
        .status()
        .unwrap();
    assert!(status.success(), "cp -a");
    c
}

/// `renew all` killed at every rename, each time on a fresh copy of `template`: every key
/// matches its certificate as the files lie, and after the next run nothing stale is left.
fn renew_all_killed_at_every_rename_of(template: &Cluster, what: &str) {
    let args = |c: &Cluster| [vec!["renew".to_owned(), "all".to_owned()], c.dirs()].concat();
    let renames = count_renames(&args(&copy_of(template)));
    assert!(renames >= 11, "{what}: {renames} renames");
    for when in 1..=renames {
        let c = copy_of(template);
        let dirs = [c.pki(), c.path("etcd"), c.root().to_path_buf()];
        run_killed_at(&args(&c), when);
        let context = format!("{what}: renew all killed at rename {when}");
        assert_pairs_match(&dirs, &format!("{context}, as the files lie"));
        recover(&c);
        assert_consistent(&c, &context);
        ok(&run(&args(&c)));
        assert_consistent(&c, &format!("{context}, then a whole run"));
        c.verify_apiserver();
    }
}

/// The first renewal after `init` (or after kubeadm), whose files are regular files that join
/// the generations, and a later one, whose files already link through `..data`.
#[test]
fn renew_all_killed_at_every_rename() {
    let fresh = Cluster::initialized();
    renew_all_killed_at_every_rename_of(&fresh, "first renewal");
    let renewed = copy_of(&fresh);
    ok(&renewed.cmd(&["renew", "all"]));
    renew_all_killed_at_every_rename_of(&renewed, "later renewal");
}

/// `renew all --reuse-key` renews each certificate by one rename: at every kill point every key
/// matches its certificate as the files lie, before any pki command runs again; the keys are
/// the ones from before.
#[test]
fn renew_all_reusing_keys_is_consistent_at_every_kill_point_as_the_files_lie() {
    let c = Cluster::initialized();
    let dirs = [c.pki(), c.path("etcd"), c.root().to_path_buf()];
    let keys_before = c.read_all(&["apiserver.key", "etcd/server.key", "front-proxy-client.key"]);
    let mut args = vec![
        "renew".to_owned(),
        "all".to_owned(),
        "--reuse-key".to_owned(),
    ];
    args.extend(c.dirs());
    let renames = count_renames(&args);
    assert!(renames >= 11, "{renames} renames");
    for when in 1..=renames {
        run_killed_at(&args, when);
        assert_pairs_match(
            &dirs,
            &format!("renew all --reuse-key killed at rename {when}"),
        );
    }
    ok(&run(&args));
    assert_consistent(&c, "after a whole run");
    assert_eq!(
        c.read_all(&["apiserver.key", "etcd/server.key", "front-proxy-client.key"]),
        keys_before
    );
    c.verify_apiserver();
}

#[test]
fn init_killed_at_every_rename() {
    let probe = Cluster::new();
    let renames = count_renames(&probe.default_init_args(&[]));
    assert!(renames >= 20, "{renames} renames");
    for when in 1..=renames {
        let c = Cluster::new();
        let args = c.default_init_args(&[]);
        run_killed_at(&args, when);
        ok(&run(&args));
        assert_consistent(&c, &format!("init killed at rename {when}"));
    }
}

/// What a `renew apiserver` of an earlier build, which committed pairs through a journal, left
/// when killed after its first rename: the journal in place, the key new, the new certificate
/// staged. (This build commits pairs by generations and only completes such journals.)
fn half_renewed_apiserver(c: &Cluster) {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let renewed = copy_of(c);
    ok(&renewed.cmd(&["renew", "apiserver"]));
    let mut journal = b"durable-commit v2\n".to_vec();
    let mut staged = Vec::new();
    for (i, (name, mode)) in [("apiserver.key", 0o600), ("apiserver.crt", 0o644)]
        .into_iter()
        .enumerate()
    {
        let bytes = std::fs::read(renewed.path(name)).unwrap();
        let temp = format!(".{name}.tmp-{i:016x}");
        std::fs::write(c.path(&temp), &bytes).unwrap();
        std::fs::set_permissions(c.path(&temp), std::fs::Permissions::from_mode(mode)).unwrap();
        let digest = hex::encode(Sha256::digest(&bytes));
        journal.extend(format!("{temp}\0{name}\0{digest}\n").as_bytes());
        staged.push((temp, name));
    }
    std::fs::write(c.path(".durable-commit-0000000000000001"), journal).unwrap();
    let (temp, name) = &staged[0];
    std::fs::rename(c.path(temp), c.path(name)).unwrap();
    assert_eq!(journals(&c.pki()).len(), 1);
}

fn journals(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".durable-commit-"))
        .collect()
}

/// A roll-forward that cannot finish (the certificate's place is taken by a non-empty
/// directory) stops every writer and reader with a message naming the journal, keeps the
/// staged files, and completes the pair once the cause is gone.
#[test]
fn a_commit_that_cannot_be_completed_stops_every_command_and_loses_nothing() {
    let c = Cluster::initialized();
    half_renewed_apiserver(&c);
    let crt = c.path("apiserver.crt");
    std::fs::remove_file(&crt).unwrap();
    std::fs::create_dir(&crt).unwrap();
    std::fs::write(crt.join("in-the-way"), b"x").unwrap();
    let journal = journals(&c.pki()).remove(0);
    for sub in [
        &["renew", "all"][..],
        &["check-expiration"],
        &["recover"],
        &["renew", "all"],
    ] {
        let err = fails(&c.cmd(sub));
        assert_mentions(&err, &[&journal, "apiserver.crt", "unfinished"]);
        assert_eq!(
            journals(&c.pki()),
            std::slice::from_ref(&journal),
            "{sub:?}"
        );
        let staged = std::fs::read_dir(c.pki())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".apiserver.crt.tmp-")
            })
            .count();
        assert_eq!(staged, 1, "{sub:?}: the staged certificate is kept");
    }
    std::fs::remove_dir_all(&crt).unwrap();
    ok(&c.cmd(&["recover"]));
    assert_consistent(&c, "after the cause was removed");
    c.verify_apiserver();
}

/// The whole tree moved (restored from a backup elsewhere, mounted at another path) while a
/// commit was pending: a reader at the new place completes it.
#[test]
fn a_relocated_tree_completes_its_pending_commit() {
    let c = Cluster::initialized();
    half_renewed_apiserver(&c);
    let moved = tempfile::tempdir().unwrap();
    let new_root = moved.path().join("restored");
    std::fs::rename(c.root(), &new_root).unwrap();
    std::fs::create_dir(c.root()).unwrap(); // for the TempDir's own cleanup
    let moved_cluster = Cluster { dir: moved };
    let dirs = [
        "--cert-dir".to_owned(),
        new_root.join("pki").to_string_lossy().into_owned(),
        "--kubeconfig-dir".to_owned(),
        new_root.to_string_lossy().into_owned(),
    ];
    ok(&run(&[&["check-expiration".to_owned()][..], &dirs].concat()));
    assert_consistent_in(
        &[
            new_root.join("pki"),
            new_root.join("pki/etcd"),
            new_root.clone(),
        ],
        "relocated",
    );
    drop(moved_cluster);
}

/// The kubelet's files, killed at every rename of `pki kubelet`: the serving pair matches as the
/// files lie, the next run leaves no temp; the client credentials the kubelet reads are one file.
#[test]
fn kubelet_killed_at_every_rename() {
    let c = Cluster::initialized();
    let out = c.root().join("kubelet-pki");
    let mut args: Vec<String> = [
        "kubelet",
        "--node-name",
        "w1",
        "--server",
        "https://cp:6443",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(c.dirs());
    args.extend(["--out-dir".to_owned(), out.to_string_lossy().into_owned()]);
    ok(&run(&args));
    let renames = count_renames(&args);
    assert!(renames >= 3, "{renames} renames");
    for when in 1..=renames {
        run_killed_at(&args, when);
        assert_pairs_match(
            std::slice::from_ref(&out),
            &format!("kubelet killed at rename {when}, as the files lie"),
        );
        ok(&c.cmd(&["recover", "--kubelet-dir", out.to_str().unwrap()]));
        assert_consistent_in(
            &[out.clone(), c.root().to_path_buf()],
            &format!("kubelet killed at rename {when}"),
        );
        let current = out.join("kubelet-client-current.pem");
        let text = std::fs::read_to_string(&current).unwrap();
        assert!(
            text.contains("CERTIFICATE") && text.contains("PRIVATE KEY"),
            "{when}"
        );
    }
}

/// `renew all` and `pki kubelet` writing the same kubeconfig directory at the same time: both
/// succeed and neither loses a file.
#[test]
fn renew_concurrent_with_kubelet_loses_neither() {
    let c = Cluster::initialized();
    let out = c.root().join("kubelet-pki");
    for round in 0..8 {
        let node = format!("w{round}");
        let mut kubelet: Vec<String> = [
            "kubelet",
            "--node-name",
            &node,
            "--server",
            "https://cp:6443",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        kubelet.extend(c.dirs());
        kubelet.extend(["--out-dir".to_owned(), out.to_string_lossy().into_owned()]);
        let mut renew = vec!["renew".to_owned(), "all".to_owned()];
        renew.extend(c.dirs());
        let a = std::thread::spawn(move || run(&kubelet));
        let b = std::thread::spawn(move || run(&renew));
        ok(&a.join().unwrap());
        ok(&b.join().unwrap());
        assert_consistent(&c, &format!("round {round}"));
        let conf = std::fs::read_to_string(c.conf("kubelet.conf")).unwrap();
        assert!(conf.contains("kubelet-client-current.pem"), "round {round}");
        let pem = std::fs::read(out.join("kubelet-client-current.pem")).unwrap();
        assert_eq!(
            view_pem(&pem).cn,
            format!("system:node:{node}"),
            "round {round}"
        );
    }
}

/// The kubelet drop-in's `ExecStartPre` (with the host paths mapped onto a scratch tree)
/// completes a half-committed pair before anything reads it.
#[test]
fn the_kubelet_drop_in_recovers_before_the_kubelet_starts() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/kubelet.service.d/10-pki-recover.conf"
    );
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .unwrap_or_else(|| panic!("{file}: no ExecStartPre"));
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/pki"), "{file}");
    let c = Cluster::initialized();
    let kubelet_dir = c.root().join("kubelet-pki");
    std::fs::create_dir(&kubelet_dir).unwrap();
    let args: Vec<String> = words
        .map(|w| match w {
            "/etc/kubernetes/pki" => c.pki().to_string_lossy().into_owned(),
            "/etc/kubernetes" => c.root().to_string_lossy().into_owned(),
            "/var/lib/kubelet/pki" => kubelet_dir.to_string_lossy().into_owned(),
            other => {
                assert!(!other.starts_with('/'), "{file}: unmapped path {other}");
                other.to_owned()
            }
        })
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("recover"), "{file}");
    half_renewed_apiserver(&c);
    let out = ok(&run(&args));
    assert!(out.contains("completed the commit of"), "{out}");
    assert_consistent(&c, "after the drop-in's command");
    assert_eq!(ok(&run(&args)).trim(), "nothing to recover");
}
