//! Who may connect: the `allowed_peers` allowlist checked with `SO_PEERCRED` (a client run as
//! another uid through `setpriv`), abstract sockets refused without one, one plugin per socket
//! path through its lock file, socket modes written as quoted octal strings.

use crate::common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The uid and gid of `nobody`, the "other user" of these tests (which run as root).
const NOBODY: &str = "65534";

/// `kms-plugin status` on `socket`, run as `nobody` with no supplementary groups.
fn status_as_nobody(socket: &std::path::Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", BIN])
        .args(["status", "--timeout", "2s", "--socket"])
        .arg(socket)
        .output()
        .expect("setpriv")
}

/// A plugin whose socket `nobody` may open by its file mode (group 65534, mode 0660), so only
/// `allowed_peers` decides.
fn plugin_reachable_by_nobody(temp: &std::path::Path, allowed_peers: &str) -> Plugin {
    std::fs::set_permissions(temp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Plugin::start_with(
        temp,
        &format!("socket_mode: '0660'\nsocket_gid: {NOBODY}\nallowed_peers: {allowed_peers}\n"),
    )
}

#[test]
fn a_peer_outside_allowed_peers_is_refused_and_logged() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = plugin_reachable_by_nobody(temp.path(), "{ uids: [0] }");
    let refused = status_as_nobody(&plugin.socket);
    assert!(
        !refused.status.success(),
        "nobody must be refused: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let logs = plugin.logs();
    assert!(
        logs.contains("refused a connection from a peer not in allowed_peers")
            && logs.contains("uid=65534")
            && logs.contains("gid=65534")
            && logs.contains("pid="),
        "{logs}"
    );
    // root is in the list
    testkit::expect_success(&mut status_command(&plugin.socket));
}

#[test]
fn a_peer_in_allowed_peers_by_gid_is_served() {
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin =
        plugin_reachable_by_nobody(temp.path(), &format!("{{ uids: [0], gids: [{NOBODY}] }}"));
    let served = status_as_nobody(&plugin.socket);
    assert!(
        served.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&served.stdout),
        String::from_utf8_lossy(&served.stderr),
        plugin.logs()
    );
    assert!(String::from_utf8_lossy(&served.stdout).contains("healthz: ok"));
}

#[test]
fn abstract_sockets_are_refused_unless_the_operator_accepts_that_the_server_is_unauthenticated() {
    let temp = tempfile::tempdir().expect("tempdir");
    let name = format!("kms-plugin-test-{}", hex::encode(random_bytes(6)));
    let output = Command::new(BIN)
        .args(["serve", "--socket", &format!("@{name}"), "--state-dir"])
        .arg(temp.path().join("state"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing authenticates the server")
            && stderr.contains("allow_abstract_socket: true"),
        "{stderr}"
    );
    let config = temp.path().join("signer.yaml");
    let stderr = refused_config(
        &config,
        &format!(
            "jwt_signer:\n  socket: '@{name}'\n  allowed_peers: {{ uids: [0] }}\n  max_token_expiration: 1h\n  key: {{ kind: local, local: {{ key_file: /nonexistent.pem }} }}\n"
        ),
    );
    assert!(
        stderr.contains("jwt_signer.socket")
            && stderr.contains("jwt_signer.allow_abstract_socket: true"),
        "{stderr}"
    );
    // With the opt-in, an allowlist is still required.
    let stderr = refused_config(
        &config,
        &format!(
            "jwt_signer:\n  socket: '@{name}'\n  allow_abstract_socket: true\n  max_token_expiration: 1h\n  key: {{ kind: local, local: {{ key_file: /nonexistent.pem }} }}\n"
        ),
    );
    assert!(
        stderr.contains("jwt_signer.socket") && stderr.contains("jwt_signer.allowed_peers"),
        "{stderr}"
    );
}

/// With the opt-in, a process that bound the abstract name first keeps it: the plugin refuses
/// to start and says another process serves there (it cannot tell a squatter from a plugin).
#[test]
fn an_abstract_socket_bound_first_by_another_process_stops_the_plugin() {
    let temp = tempfile::tempdir().expect("tempdir");
    let name = format!("kms-plugin-test-{}", hex::encode(random_bytes(6)));
    let mut squatter = Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0' + sys.argv[1])\ns.listen()\nprint('bound', flush=True)\ntime.sleep(60)",
            &name,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "bound");
    let config = temp.path().join("kms.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: '@{name}'\nallow_abstract_socket: true\nallowed_peers: {{ uids: [0] }}\nbackend: {{ kind: local, local: {{ state_dir: {} }} }}\n",
            temp.path().join("state").display()
        ),
    )
    .expect("config");
    init_keyring(&config);
    let stderr = serve_must_fail(&config, &[], Duration::from_secs(10));
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(
        stderr.contains(&format!("@{name}"))
            && stderr.contains("another process is serving on this socket"),
        "{stderr}"
    );
}

#[test]
fn a_second_plugin_is_refused_by_the_lock_file() {
    let temp = tempfile::tempdir().expect("tempdir");
    let first = Plugin::start_local(temp.path());
    // Even with the socket file gone (so a connect probe finds nothing), the lock holds.
    std::fs::remove_file(&first.socket).expect("remove socket");
    let stderr = serve_must_fail(&first.config, &[], Duration::from_secs(10));
    assert!(stderr.contains("holds the lock file"), "{stderr}");
    let lock = temp.path().join("kms.sock.lock");
    let mode = std::fs::metadata(&lock)
        .expect("lock file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No private binding directory is left behind.
    let leftovers = entries_named(temp.path(), |n| n.ends_with(".tmp"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_unquoted_socket_mode_is_refused_with_advice_to_quote() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("kms.yaml");
    let stderr = refused_config(
        &config,
        &local_config(
            &temp.path().join("kms.sock"),
            &temp.path().join("state"),
            "socket_mode: 0o640\n",
        ),
    );
    assert!(
        stderr.contains("quote it") && stderr.contains(&format!("{}:5:", config.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_socket_has_its_own_allowlist() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = dir.join("sa.key");
    common::jwt::make_ec_key(&key, "prime256v1");
    let socket = dir.join("jwt.sock");
    let config = dir.join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "jwt_signer:\n  socket: {}\n  socket_mode: '0660'\n  socket_gid: {NOBODY}\n  allowed_peers: {{ uids: [0] }}\n  max_token_expiration: 1h\n  key: {{ kind: local, local: {{ key_file: {} }} }}\n",
            socket.display(),
            key.display()
        ),
    )
    .expect("config");
    let mut command = Command::new(BIN);
    command.args(["serve", "--config"]).arg(&config);
    let mut signer = common::jwt::Signer::spawn(command, dir.join("signer.log"), socket.clone());
    // Root is allowed: a real Sign call works.
    let mut client = signer.client().await;
    common::jwt::sign(&mut client).await.expect("root signs");
    // nobody reaches the file but not the service.
    let refused = status_as_nobody(&socket);
    assert!(!refused.status.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = signer.logs();
    assert!(
        logs.contains("refused a connection from a peer not in allowed_peers")
            && logs.contains("ExternalJWTSigner")
            && logs.contains("uid=65534"),
        "{logs}"
    );
}

/// A refused peer reconnecting in a loop is counted every time
/// (`kms_plugin_refused_connections_total`) but logged at most once a second, with how many
/// refusals went unlogged: it cannot flood the log.
#[test]
fn a_refused_peer_reconnecting_in_a_loop_is_counted_but_logged_once_a_second() {
    let temp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    let plugin = Plugin::start_with(
        temp.path(),
        &format!(
            "socket_mode: '0660'\nsocket_gid: {NOBODY}\nallowed_peers: {{ uids: [0] }}\nmetrics_address: 127.0.0.1:{port}\n"
        ),
    );
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a system python3 that uid 65534 can run");
    let started = std::time::Instant::now();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", python, "-c"])
        .arg(
            "import socket, sys\nfor _ in range(300):\n    s = socket.socket(socket.AF_UNIX)\n    s.connect(sys.argv[1])\n    s.recv(1)\n    s.close()\nprint('done')",
        )
        .arg(&plugin.socket)
        .output()
        .expect("setpriv python3");
    let took = started.elapsed();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let series = "kms_plugin_refused_connections_total{socket=\"KMS v2\"}";
    assert_eq!(metric(port, series), 300.0, "every refusal is counted");
    let logs = plugin.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("refused a connection from a peer not in allowed_peers"))
        .count();
    let allowed = usize::try_from(took.as_secs()).expect("seconds") + 2;
    assert!(
        (1..=allowed).contains(&lines),
        "{lines} log lines for 300 refusals in {took:?}:\n{logs}"
    );
}

/// A socket serves at most 128 connections at once: with 128 open (the test's own client and 127
/// idle ones), the next is closed before any HTTP/2 byte, counted and logged; the open client
/// keeps being served, and once some close a new connection is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_serves_at_most_128_connections_at_once() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let temp = tempfile::tempdir().expect("tempdir");
    let plugin = Plugin::start_local(temp.path());
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.healthz, "ok");
    let mut idle: Vec<UnixStream> = (0..127)
        .map(|_| UnixStream::connect(&plugin.socket).expect("connect"))
        .collect();
    // Let the plugin take them all in before the one over the cap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = UnixStream::connect(&plugin.socket).expect("connect");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        over.read(&mut byte).expect("closed, not timed out"),
        0,
        "the connection over the cap is closed unanswered"
    );
    assert_eq!(
        status(&mut client).await.healthz,
        "ok",
        "the open client is served"
    );
    let logs = plugin.logs();
    assert!(
        logs.contains("refused a connection: the socket already serves its maximum"),
        "{logs}"
    );
    idle.truncate(100);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = plugin.client().await;
    assert_eq!(
        status(&mut again).await.healthz,
        "ok",
        "served once slots are free"
    );
}
