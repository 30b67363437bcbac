//! Socket handling and process lifecycle of the real binary: stale and live sockets, permissions,
//! abstract sockets, SIGTERM with calls in flight, configuration errors.

use crate::common;

use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn stale_socket_is_replaced_and_default_mode_is_0600() {
    let temp = tempfile::tempdir().expect("tempdir");
    let socket = temp.path().join("kms.sock");
    // A socket file whose process is gone, as after a crash.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(
        std::fs::symlink_metadata(&socket)
            .expect("stale file")
            .file_type()
            .is_socket()
    );
    let plugin = Plugin::start_local(temp.path());
    let mode = std::fs::metadata(&plugin.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(plugin.logs().contains("removed a stale socket"));
}

#[test]
fn live_socket_is_left_alone() {
    let temp = tempfile::tempdir().expect("tempdir");
    let first = Plugin::start_local(temp.path());
    let stderr = serve_must_fail(&first.config, &[], Duration::from_secs(10));
    assert!(stderr.contains("another process is serving"), "{stderr}");
    assert!(
        probe_healthy(&first.address()),
        "the first plugin keeps serving"
    );
}

#[test]
fn something_else_at_the_socket_path_is_not_deleted() {
    let temp = tempfile::tempdir().expect("tempdir");
    let path = temp.path().join("kms.sock");
    std::fs::write(&path, b"precious").expect("write");
    let state = temp.path().join("state");
    testkit::expect_success(Command::new(BIN).arg("init").arg("--state-dir").arg(&state));
    let output = testkit::expect_failure(
        Command::new(BIN)
            .args(["serve", "--socket"])
            .arg(&path)
            .arg("--state-dir")
            .arg(&state),
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
}

#[test]
fn configured_socket_mode_and_owner_apply() {
    use std::os::unix::fs::MetadataExt;
    let temp = tempfile::tempdir().expect("tempdir");
    // The tests run as root (as CI does), which may hand the socket to any uid/gid.
    let plugin = Plugin::start_with(
        temp.path(),
        "socket_mode: '0660'\nsocket_uid: 4321\nsocket_gid: 4322\n",
    );
    let meta = std::fs::metadata(&plugin.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
}

#[test]
fn abstract_socket() {
    let temp = tempfile::tempdir().expect("tempdir");
    let name = format!("kms-plugin-test-{}", hex::encode(random_bytes(6)));
    // An abstract socket has no file mode: it needs an allowlist (root, who runs the tests).
    let config = temp.path().join("kms.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: '@{name}'\nallow_abstract_socket: true\nallowed_peers: {{ uids: [0] }}\nbackend: {{ kind: local, local: {{ state_dir: {} }} }}\n",
            temp.path().join("state").display()
        ),
    )
    .expect("write config");
    init_keyring(&config);
    let mut child = serve_command(&config, &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let address = kms_config::SocketAddress::Abstract(name.clone());
    let mut healthy = false;
    for _ in 0..200 {
        if probe_healthy(&address) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = testkit::output_of(&mut status_command(format!("@{name}")));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let exit = child.wait().expect("wait");
    assert!(healthy, "abstract socket never answered");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_in_flight_then_removes_the_socket() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;
    let seed = random_bytes(32);
    let sealed = Arc::new(encrypt(&mut client, &seed).await);
    let seed = Arc::new(seed);
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut client = plugin.client().await;
        let (sealed, seed, ok) = (sealed.clone(), seed.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = 0u64;
            loop {
                match decrypt(&mut client, &sealed).await {
                    Ok(plaintext) => {
                        assert_eq!(
                            plaintext, *seed,
                            "a call answered during shutdown must be right"
                        );
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failures += 1;
                        if failures > 3 {
                            return;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "load is flowing");
    plugin.signal("TERM");
    let exit = tokio::task::spawn_blocking(move || {
        let status = plugin.wait_exit(Duration::from_secs(10));
        (status, plugin)
    })
    .await
    .expect("join");
    let (status, plugin) = exit;
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(15), worker)
            .await
            .expect("workers stop once the plugin is gone")
            .expect("no wrong answer");
    }
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}\n{}",
        plugin.logs()
    );
    assert!(!plugin.socket.exists(), "socket removed on shutdown");
    let logs = plugin.logs();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("removed socket"),
        "{logs}"
    );
}

#[test]
fn broken_config_names_file_line_and_reason() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("kms.yaml");
    std::fs::write(&config, "socket: /tmp/x.sock\nbackend:\n  kind: local\n  local: { state_dir: /tmp/s }\nhealth_probe_interval: often\n").expect("write");
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:5:", config.display())),
        "{stderr}"
    );
    let missing = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/kms.yaml"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/kms.yaml"));
}

#[test]
fn status_is_the_readiness_probe_and_status_live_the_liveness_probe() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let healthy = testkit::expect_success(&mut status_command(&plugin.socket));
    assert!(String::from_utf8_lossy(&healthy.stdout).contains("healthz: ok"));
    testkit::expect_success(status_command(&plugin.socket).arg("--live"));
    for args in [&["--timeout", "1s"][..], &["--timeout", "1s", "--live"]] {
        testkit::expect_failure(status_command(temp.path().join("nobody.sock")).args(args));
    }
    // Unhealthy (its keyring moved away): not ready, still alive.
    std::fs::rename(&plugin.state_dir, temp.path().join("aside")).expect("move");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while testkit::output_of(&mut status_command(&plugin.socket))
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "still ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = testkit::expect_success(status_command(&plugin.socket).arg("--live"));
    assert!(
        String::from_utf8_lossy(&live.stdout).contains("root key state changed"),
        "{}",
        String::from_utf8_lossy(&live.stdout)
    );
}

#[test]
fn help_shows_examples_for_every_subcommand() {
    for sub in [
        "serve",
        "rotate",
        "promote",
        "remove-version",
        "versions",
        "status",
        "init",
    ] {
        let output = testkit::expect_success(Command::new(BIN).args([sub, "--help"]));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Example:"),
            "{sub} --help lacks an example"
        );
    }
}
