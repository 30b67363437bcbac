//! Crash atomicity through the binary: `strace` kills `pki` (SIGKILL) at its N-th `rename` for
//! every N of a run; after the next writing command every key still matches its certificate
//! (checked with openssl) and no temporary file or commit journal is left.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `args` under strace, killed at its `when`-th rename (0: not killed); returns whether
/// it was killed and the number of renames seen.
fn run_killed_at(args: &[String], when: usize) -> bool {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=rename"]);
    if when > 0 {
        cmd.args(["-e", &format!("inject=rename:signal=KILL:when={when}")]);
    }
    let out = cmd.arg(BIN).args(args).output().unwrap();
    !out.status.success()
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

/// Every `<name>.key` beside a `<name>.crt` matches it, and no temp or journal is left.
fn assert_consistent(c: &Cluster, context: &str) {
    for dir in [c.pki(), c.path("etcd"), c.root().to_path_buf()] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp-") && !name.starts_with(".durable-commit-"),
                "{context}: {name} left in {}",
                dir.display()
            );
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

#[test]
fn renew_all_killed_at_every_rename() {
    let c = Cluster::initialized();
    let mut args = vec!["renew".to_owned(), "all".to_owned()];
    args.extend(c.dirs());
    let renames = count_renames(&args);
    assert!(renames >= 14, "{renames} renames");
    for when in 1..=renames {
        assert!(run_killed_at(&args, when), "not killed at rename {when}");
        recover(&c);
        assert_consistent(&c, &format!("renew all killed at rename {when}"));
    }
}

#[test]
fn init_killed_at_every_rename() {
    let probe = Cluster::new();
    let renames = count_renames(&probe.default_init_args(&[]));
    assert!(renames >= 20, "{renames} renames");
    for when in 1..=renames {
        let c = Cluster::new();
        let args = c.default_init_args(&[]);
        assert!(run_killed_at(&args, when), "not killed at rename {when}");
        ok(&run(&args));
        assert_consistent(&c, &format!("init killed at rename {when}"));
    }
}
