//! The local root key's state directory under concurrent operators, crashes and a root-run
//! command, through the real binary: no version is ever shared or overwritten, a killed command
//! leaves a directory the plugin accepts, and files a root-run command writes stay readable by
//! the plugin's user.

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn run(args: &[&str], state: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run kms-plugin")
}

/// `(version, key_id)` from `added root key version N (...): key_id K`.
fn added(output: &Output) -> (u32, String) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "command failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("added root key version "))
        .unwrap_or_else(|| panic!("no 'added' line in {stdout}"));
    let version = line["added root key version ".len()..]
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("version number");
    let key_id = line.rsplit("key_id ").next().expect("key id").to_owned();
    (version, key_id)
}

/// `kms-plugin init --state-dir STATE`, insisting it succeeds.
fn init(state: &Path) {
    testkit::assert_succeeded("kms-plugin init", &run(&["init"], state));
}

/// Every key id `versions` lists.
fn listed(state: &Path) -> BTreeSet<String> {
    let output = run(&["versions"], state);
    assert!(output.status.success(), "versions failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split('\t').nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn concurrent_add_only_never_shares_or_replaces_a_version() {
    let temp = tempfile::tempdir().expect("tempdir");
    let state = temp.path().join("state");
    init(&state);
    let mut printed = BTreeSet::new();
    for round in 0..50 {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(&["rotate", "--add-only"], &state));
            let b = s.spawn(|| run(&["rotate", "--add-only"], &state));
            (
                a.join().expect("first thread"),
                b.join().expect("second thread"),
            )
        });
        let (a, b) = (added(&a), added(&b));
        assert_ne!(a.0, b.0, "round {round}: both printed version {}", a.0);
        assert!(printed.insert(a.1) && printed.insert(b.1), "a key id twice");
    }
    let on_disk = listed(&state);
    for key_id in &printed {
        assert!(on_disk.contains(key_id), "{key_id} was printed but is gone");
    }
    assert_eq!(on_disk.len(), printed.len() + 1, "v1 plus one file per add");
}

#[test]
fn rotate_against_promote_keeps_every_version() {
    let temp = tempfile::tempdir().expect("tempdir");
    let state = temp.path().join("state");
    init(&state);
    let mut printed = BTreeSet::new();
    let (first, key) = added(&run(&["rotate", "--add-only"], &state));
    printed.insert(key);
    for _ in 0..25 {
        let version = first.to_string();
        let (rotated, promoted) = std::thread::scope(|s| {
            let rotated = s.spawn(|| run(&["rotate"], &state));
            let promoted = s.spawn(|| run(&["promote", "--version", &version], &state));
            (
                rotated.join().expect("rotate"),
                promoted.join().expect("promote"),
            )
        });
        printed.insert(added(&rotated).1);
        assert!(promoted.status.success(), "promote failed");
    }
    let on_disk = listed(&state);
    assert!(printed.is_subset(&on_disk), "a printed version disappeared");
}

#[test]
fn kill_during_rotate_leaves_a_directory_serve_accepts() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut plugin = Plugin::start_local(temp.path());
    let state = plugin.state_dir.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut sealed = Vec::new();
    let mut printed = BTreeSet::new();
    for round in 0..12u64 {
        let mut child = Command::new(BIN)
            .args(["rotate", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn rotate");
        // Kill at a different moment each round: before, during or after the writes.
        std::thread::sleep(Duration::from_millis(round * 3));
        let _ = child.kill();
        let output = child.wait_with_output().expect("wait");
        if output.status.success() {
            printed.insert(added(&output).1);
        }
        sealed.push(runtime.block_on(async {
            let mut client = plugin.client().await;
            encrypt(&mut client, format!("round {round}").as_bytes()).await
        }));
    }
    plugin.restart();
    runtime.block_on(async {
        let mut client = plugin.client().await;
        for (round, response) in sealed.iter().enumerate() {
            let plain = decrypt(&mut client, response).await.expect("decrypt");
            assert_eq!(plain, format!("round {round}").as_bytes());
        }
    });
    let on_disk = listed(&state);
    assert!(printed.is_subset(&on_disk), "a printed key id is missing");
    // The next command cleans what the killed ones left behind.
    added(&run(&["rotate", "--add-only"], &state));
    let leftovers = entries_named(&state, |n| n.starts_with('.'));
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn foreign_entries_are_reported_not_read() {
    let temp = tempfile::tempdir().expect("tempdir");
    let state = temp.path().join("state");
    init(&state);
    added(&run(&["rotate", "--add-only"], &state));
    // Looks like version 1 but is not its canonical name: never loaded as a key.
    std::fs::copy(
        state.join("root-key-v1.key"),
        state.join("root-key-v01.key"),
    )
    .expect("copy");
    let output = run(&["versions"], &state);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"root-key-v01.key\""), "{stderr}");
    assert_eq!(listed(&state).len(), 2);
}

/// The plugin runs as `nobody`; root rotates in its state directory; the running plugin picks up
/// the new primary and a restart still reads every file.
#[test]
fn root_run_rotate_in_a_plugin_owned_directory_is_picked_up() {
    if !running_as_root() {
        eprintln!("skipped: needs root to run the plugin as another user (CI runs as root)");
        return;
    }
    const NOBODY: u32 = 65534;
    let temp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = temp.path().join("plugin");
    std::fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    let socket = home.join("kms.sock");
    let state = home.join("state");
    let config = home.join("config.yaml");
    std::fs::write(&config, local_config(&socket, &state, "")).expect("config");
    let log = home.join("plugin.log");
    // The operator creates the keyring as the plugin's user.
    let init = testkit::output_of(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["init", "--state-dir"])
            .arg(&state),
    );
    testkit::assert_succeeded("kms-plugin init as nobody", &init);
    let mut plugin = Plugin {
        child: None,
        socket,
        state_dir: state.clone(),
        config: config.clone(),
        log: log.clone(),
        env: Vec::new(),
    };
    let spawn_as_nobody = |plugin: &mut Plugin| {
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("setpriv");
        plugin.child = Some(child);
        plugin.wait_healthy();
    };
    spawn_as_nobody(&mut plugin);
    assert_eq!(std::fs::metadata(&state).expect("state").uid(), NOBODY);

    let (version, key_id) = added(&run(&["rotate"], &state));
    for name in [format!("root-key-v{version}.key"), "primary".to_owned()] {
        let meta = std::fs::metadata(state.join(&name)).expect("file");
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{name}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = plugin.client().await;
        wait_status(
            &mut client,
            "new primary",
            Duration::from_secs(10),
            |h, k| h == "ok" && k == key_id,
        )
        .await;
    });
    let exit = plugin.stop();
    assert!(exit.success(), "{}", plugin.logs());
    spawn_as_nobody(&mut plugin);
    assert!(
        !plugin.logs().contains("Permission denied"),
        "{}",
        plugin.logs()
    );
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `serve` and `rotate` on a missing or an empty state directory refuse, name `kms-plugin init`
/// and create nothing; `init` creates the first key once and refuses a second time; then `serve`
/// starts on it.
#[test]
fn only_init_creates_a_keyring() {
    let temp = tempfile::tempdir().expect("tempdir");
    let missing = temp.path().join("missing");
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for state in [&missing, &empty] {
        let config = temp.path().join("config.yaml");
        std::fs::write(
            &config,
            local_config(&temp.path().join("kms.sock"), state, ""),
        )
        .expect("config");
        let stderr = serve_must_fail(&config, &[], Duration::from_secs(10));
        assert!(stderr.contains("kms-plugin init"), "{stderr}");
        for args in [&["rotate"][..], &["rotate", "--add-only"]] {
            let out = run(args, state);
            assert!(!out.status.success(), "{args:?} on {}", state.display());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("kms-plugin init"), "{stderr}");
        }
        if state == &missing {
            assert!(!missing.exists(), "a missing directory was created");
        } else {
            assert!(
                entries_named(&empty, |_| true).is_empty(),
                "wrote into {}",
                empty.display()
            );
        }
    }
    let first = run(&["init"], &empty);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}");
    assert!(stdout.contains("key_id local:v1:"), "{stdout}");
    let key = std::fs::read(empty.join("root-key-v1.key")).expect("key file");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&key));
    assert!(
        stdout.contains(&format!("sha256 of the file: {digest}")),
        "{stdout}"
    );
    let again = run(&["init"], &empty);
    assert!(!again.status.success(), "a second init must refuse");
    assert_eq!(
        std::fs::read(empty.join("root-key-v1.key")).expect("key"),
        key
    );
    assert_eq!(listed(&empty).len(), 1);
}

/// The state directory removed under a running plugin: within a poll interval healthz names
/// the change and Encrypt stops, Decrypt of what was sealed goes on from memory, nothing is
/// written in its place; restored, the plugin serves again.
#[test]
fn a_keyring_removed_underneath_stops_encrypt_and_keeps_decrypt() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let state = plugin.state_dir.clone();
    let aside = temp.path().join("state-aside");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = plugin.client().await;
        let sealed = encrypt(&mut client, b"before the change").await;
        std::fs::rename(&state, &aside).expect("move the state directory away");
        wait_status(
            &mut client,
            "keyring gone",
            Duration::from_secs(3),
            |h, _| h.contains("root key state changed underneath the plugin"),
        )
        .await;
        let refused = client
            .encrypt(kms_proto::kms_v2::EncryptRequest {
                plaintext: b"after".to_vec(),
                uid: uid(),
            })
            .await
            .expect_err("Encrypt must stop");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            decrypt(&mut client, &sealed)
                .await
                .expect("Decrypt from memory"),
            b"before the change"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!state.exists(), "the plugin wrote a replacement keyring");
        std::fs::rename(&aside, &state).expect("restore");
        wait_status(&mut client, "restored", Duration::from_secs(5), |h, _| {
            h == "ok"
        })
        .await;
        let resealed = encrypt(&mut client, b"after the restore").await;
        assert_eq!(
            decrypt(&mut client, &resealed).await.expect("decrypt"),
            b"after the restore"
        );
    });
    assert!(
        plugin.logs().contains("changed underneath the plugin"),
        "{}",
        plugin.logs()
    );
}

/// A key file replaced under a running plugin (same version, other key) is a change too.
#[test]
fn a_key_file_replaced_underneath_stops_encrypt() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let other = temp.path().join("other");
    init(&other);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = plugin.client().await;
        let sealed = encrypt(&mut client, b"sealed").await;
        std::fs::copy(
            other.join("root-key-v1.key"),
            plugin.state_dir.join("root-key-v1.key"),
        )
        .expect("replace the key file");
        wait_status(
            &mut client,
            "key replaced",
            Duration::from_secs(3),
            |h, _| h.contains("root key state changed underneath the plugin"),
        )
        .await;
        assert_eq!(
            decrypt(&mut client, &sealed)
                .await
                .expect("Decrypt from memory"),
            b"sealed"
        );
    });
}
