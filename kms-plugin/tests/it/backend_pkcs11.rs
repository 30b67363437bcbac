//! PKCS#11-specific tests against a real SoftHSM2 token: the library API, and what the binary
//! does about a token that leaves and returns beyond the conformance suite's fault cases. The
//! contract, tamper, restart, rotation, concurrency, economy and fault scenarios run for this
//! backend in `conformance_pkcs11.rs`. Each test starts from a fresh token in its own temp
//! directory.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, so library calls run in a child process of
//! this test binary (`library_api` re-runs itself with the variables set) and the plugin runs as
//! its own process. Needs SoftHSM2: `bash .ci/provision-softhsm.sh`.
#![cfg(feature = "pkcs11")]

use crate::common;

use common::softhsm::{Hsm, MODULE, PIN, REMOTE_TARGET, TOKEN_LABEL};
use common::*;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Set in the child process that runs library calls.
const CHILD_ENV: &str = "KMS_PKCS11_TEST_CHILD";
const CONFIG_ENV: &str = "KMS_PKCS11_TEST_CONFIG";

/// Writes `<dir>/<name>.yaml` for `hsm` (probe `probe`, token refresh `refresh`, remote calls
/// logged at debug in JSON).
fn write_config(hsm: &Hsm, name: &str, probe: &str, refresh: &str) -> (PathBuf, String) {
    let yaml = plugin_config(
        &Plugin::socket_of(&hsm.dir, name),
        probe,
        &format!("log_format: json\nlog_level: {REMOTE_TARGET}=debug,info\n"),
        &hsm.backend_yaml(refresh),
    );
    let path = hsm.dir.join(format!("{name}.yaml"));
    fs::write(&path, &yaml).expect("config");
    (path, yaml)
}

// ---------------------------------------------------------------------------------------------
// Library API (runs in a child process that has SOFTHSM2_CONF set).

#[test]
fn library_api() {
    if std::env::var(CHILD_ENV).is_err() {
        let temp = tempfile::tempdir().expect("tempdir");
        let hsm = Hsm::new(temp.path());
        let (config, _) = write_config(&hsm, "lib", "1h", "1h");
        let mut env = hsm.env();
        env.push((CHILD_ENV.into(), "library".into()));
        env.push((CONFIG_ENV.into(), config.display().to_string()));
        let output = run_test_in_child("backend_pkcs11::library_api", &env);
        assert!(output.contains("library checks passed"), "{output}");
        assert!(
            output.contains("PKCS#11 session lost; reopening it and retrying once"),
            "the logout did not exercise the re-login path:\n{output}"
        );
        println!("child output:\n{output}");
        return;
    }
    // Warnings reach the parent, which checks that the session-loss path really ran.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let config_path = PathBuf::from(std::env::var(CONFIG_ENV).expect("config path"));
    let config = kms_config::PluginConfig::load(&config_path).expect("config");
    let Some(kms_config::BackendConfig::Pkcs11(pkcs11)) = config.backend else {
        panic!("not a pkcs11 backend")
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(library_checks(&pkcs11));
}

async fn library_checks(config: &kms_config::Pkcs11Backend) {
    use kms_plugin::root_key::pkcs11::{InitOutcome, Pkcs11RootKey, init_root_key};
    use kms_plugin::root_key::{KeyId, RootKey, RootKeyError};
    use kms_plugin::secret::AesKey;

    let Err(missing) = Pkcs11RootKey::open(config).await else {
        panic!("opened a token without a root key")
    };
    assert!(missing.to_string().contains("hsm init"), "{missing}");

    let created = init_root_key(config).await.expect("init");
    let InitOutcome::Created(first) = created.clone() else {
        panic!("expected a new key: {created:?}")
    };
    assert!(
        first.as_str().starts_with("pkcs11:root:0000000000000001"),
        "{first}"
    );
    assert_eq!(
        init_root_key(config).await.expect("init again"),
        InitOutcome::Existing(first.clone())
    );

    // A wrong PIN is refused (and reported as such); the right one still works afterwards.
    let wrong_pin = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(wrong_pin.path(), "999999\n").expect("write");
    let mut wrong = config.clone();
    wrong.pin = kms_config::SecretSource::File(wrong_pin.path().to_owned());
    let Err(error) = Pkcs11RootKey::open(&wrong).await else {
        panic!("a wrong PIN opened the token")
    };
    assert!(matches!(error, RootKeyError::Denied(_)), "{error:?}");
    assert!(error.to_string().contains("rejected the PIN"), "{error}");
    assert!(
        !error.to_string().contains("999999") && !error.to_string().contains(PIN),
        "{error}"
    );
    let root = std::sync::Arc::new(Pkcs11RootKey::open(config).await.expect("open"));
    assert_eq!(root.primary_key_id(), first);
    let kek = AesKey::generate().expect("rng");
    let wrapped = root.wrap_kek(&kek).await.expect("wrap");
    assert_eq!(wrapped.key_id, first);
    assert_eq!(wrapped.ciphertext.len(), 60, "IV + key + tag");
    assert!(
        !wrapped.ciphertext.windows(32).any(|w| w == kek.expose()),
        "wrapped form hides the key"
    );
    let again = root.wrap_kek(&kek).await.expect("wrap again");
    assert_ne!(again.ciphertext, wrapped.ciphertext, "fresh IV per wrap");
    assert!(
        root.unwrap_kek(&first, &wrapped.ciphertext)
            .await
            .expect("unwrap")
            .ct_eq(&kek)
    );

    // Concurrent calls share the session pool (max_sessions = 4) on blocking threads.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (root, first, sealed) = (root.clone(), first.clone(), wrapped.ciphertext.clone());
        tasks.push(tokio::spawn(async move {
            root.unwrap_kek(&first, &sealed).await
        }));
    }
    for task in tasks {
        let key = task.await.expect("task").expect("concurrent unwrap");
        assert!(key.ct_eq(&kek));
    }

    // The token drops the login (C_Logout logs out every session of the process): the next call
    // reopens a session, logs in again and retries once, unseen by the caller.
    logout_everywhere();
    let key = root
        .unwrap_kek(&first, &wrapped.ciphertext)
        .await
        .expect("after logout");
    assert!(key.ct_eq(&kek));
    logout_everywhere();
    let rewrapped = root.wrap_kek(&kek).await.expect("wrap after logout");
    assert_eq!(rewrapped.key_id, first);

    for position in [0, 12, 59] {
        let mut tampered = wrapped.ciphertext.clone();
        tampered[position] ^= 1;
        let error = root
            .unwrap_kek(&first, &tampered)
            .await
            .expect_err("tampered");
        assert!(
            matches!(error, RootKeyError::Integrity(_)),
            "byte {position}: {error:?}"
        );
    }
    let short = root
        .unwrap_kek(&first, &wrapped.ciphertext[..59])
        .await
        .expect_err("short");
    assert!(matches!(short, RootKeyError::Integrity(_)), "{short:?}");
    // The AAD binds the key id: the same bytes under another (unknown) version fail.
    let other = KeyId::new("pkcs11:root:00000000000000090000000000000000").expect("id");
    let unknown = root
        .unwrap_kek(&other, &wrapped.ciphertext)
        .await
        .expect_err("unknown");
    assert!(
        matches!(unknown, RootKeyError::UnknownKey(_)),
        "{unknown:?}"
    );
    let foreign = KeyId::new("local:v1:abc").expect("id");
    assert!(matches!(
        root.unwrap_kek(&foreign, &wrapped.ciphertext).await,
        Err(RootKeyError::UnknownKey(_))
    ));

    // Rotation in another instance (as `kms-plugin rotate` would do) reaches this one by refresh.
    let other_process = Pkcs11RootKey::open(config).await.expect("second instance");
    let second = other_process.rotate().await.expect("rotate");
    assert_ne!(second, first);
    assert!(
        second.as_str().starts_with("pkcs11:root:0000000000000002"),
        "{second}"
    );
    assert_eq!(root.primary_key_id(), first, "not yet refreshed");
    root.refresh().await.expect("refresh");
    assert_eq!(root.primary_key_id(), second);
    let rewrapped = root.wrap_kek(&kek).await.expect("wrap under v2");
    assert_eq!(rewrapped.key_id, second);
    assert!(
        root.unwrap_kek(&first, &wrapped.ciphertext)
            .await
            .expect("old version")
            .ct_eq(&kek)
    );
    assert!(
        root.unwrap_kek(&second, &rewrapped.ciphertext)
            .await
            .expect("new version")
            .ct_eq(&kek)
    );
    // Bytes wrapped under v2 do not open as v1 (the AAD names the version).
    let swapped = root
        .unwrap_kek(&first, &rewrapped.ciphertext)
        .await
        .expect_err("wrong version");
    assert!(matches!(swapped, RootKeyError::Integrity(_)), "{swapped:?}");

    // A key the token generated, in the plugin's id format with a higher version, but that no
    // `rotate` recorded: usable to unwrap (the token never let it out), never primary.
    let unrecorded = format!("{:016x}{:016x}", 50, 0);
    generate_unrecorded_key(&hex::decode(&unrecorded).expect("hex"));
    root.refresh().await.expect("refresh");
    assert_eq!(
        root.primary_key_id(),
        second,
        "an unrecorded key became primary"
    );
    let reopened = Pkcs11RootKey::open(config).await.expect("reopen");
    assert_eq!(reopened.primary_key_id(), second, "after reopening");
    let third = other_process.rotate().await.expect("rotate past it");
    assert!(
        third.as_str().starts_with("pkcs11:root:0000000000000033"),
        "{third}"
    );
    root.refresh().await.expect("refresh");
    assert_eq!(root.primary_key_id(), third, "a rotation is recorded");
    println!("library checks passed");
}

/// A session logged in as the token's user, in this process.
fn user_session() -> cryptoki::session::Session {
    use cryptoki::session::UserType;
    let ctx = cryptoki::context::Pkcs11::new(MODULE).expect("module");
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            ctx.get_token_info(*slot)
                .is_ok_and(|t| t.label().trim_end() == TOKEN_LABEL)
        })
        .expect("token");
    let session = ctx.open_rw_session(slot).expect("session");
    let pin = secrecy::SecretBox::new(Box::new(PIN.as_bytes().to_vec()));
    match session.login_with_raw(UserType::User, &pin) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session
}

/// Generates an AES-256 key labelled like the root key with `id` inside the token, as another
/// program with the PIN could, without recording it as primary.
fn generate_unrecorded_key(id: &[u8]) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"root".to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    user_session()
        .generate_key(&Mechanism::AesKeyGen, &template)
        .expect("generate");
}

/// Logs this process out of the token, as a token that drops its logins would.
fn logout_everywhere() {
    user_session().logout().expect("logout");
}

// ---------------------------------------------------------------------------------------------
// The real binary (the generic scenarios are in conformance_pkcs11.rs).

/// Token-loss specifics: when the token returns the plugin re-initialises the module to find
/// it, and a rotation by another process reaches the plugin on its refresh interval (2s) with
/// no SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_return_reinitialises_the_module_and_refresh_finds_rotations() {
    let temp = tempfile::tempdir().expect("tempdir");
    let hsm = Hsm::new(temp.path());
    let (config, yaml) = write_config(&hsm, "fault", "1s", "2s");
    hsm.init_root_key(&config);
    let mut plugin = Plugin::launch(&hsm.dir, "fault", &yaml, hsm.env());
    let mut client = plugin.client().await;
    let first = status(&mut client).await.key_id;

    hsm.remove_token();
    wait_status(&mut client, "unhealthy", Duration::from_secs(5), |h, _| {
        h != "ok"
    })
    .await;
    hsm.return_token();
    let started = Instant::now();
    wait_status(&mut client, "recovery", Duration::from_secs(10), |h, _| {
        h == "ok"
    })
    .await;
    println!("healthy {:?} after the token returned", started.elapsed());
    assert!(
        plugin.logs().contains("re-initialising the module"),
        "{}",
        plugin.logs()
    );

    rotate_to_version_2(&hsm, &config, &mut client, &first).await;
    assert!(plugin.stop().success());
}

/// `kms-plugin rotate` beside a serving plugin, which then reports version 2 of the root key
/// (the one after `first`) within a few refresh intervals.
async fn rotate_to_version_2(
    hsm: &Hsm,
    config: &std::path::Path,
    client: &mut Client,
    first: &str,
) {
    hsm.cli(&["rotate", "--config", config.to_str().expect("utf-8")]);
    let rotated = wait_status(client, "rotation", Duration::from_secs(6), |h, k| {
        h == "ok" && k != first
    })
    .await;
    assert!(
        rotated.starts_with("pkcs11:root:0000000000000002"),
        "{rotated}"
    );
}

/// `serve` refuses a PIN file its group or others can read, naming the file, and never prints
/// the PIN.
#[test]
fn a_pin_file_others_can_read_is_refused_at_start() {
    let temp = tempfile::tempdir().expect("tempdir");
    let hsm = Hsm::new(temp.path());
    let pin_file = hsm.dir.join("pin");
    fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let (config, _) = write_config(&hsm, "pin-mode", "1s", "1s");
    let stderr = serve_must_fail(&config, &hsm.env(), Duration::from_secs(20));
    assert!(
        stderr.contains(&pin_file.display().to_string()) && stderr.contains("group or others"),
        "{stderr}"
    );
    assert!(!stderr.contains(PIN), "{stderr}");
}

/// The exec command of `probe` in the static pod manifest, with the image's binary and socket
/// replaced by this test's.
fn manifest_probe(probe: &str, socket: &std::path::Path) -> Vec<String> {
    let manifest = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/static-pod/kms-plugin.yaml"
    ))
    .expect("manifest");
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != format!("{probe}:"))
        .skip_while(|l| l.trim() != "command:")
        .skip(1);
    let mut command = Vec::new();
    while let Some(item) = lines.next().and_then(|l| l.trim().strip_prefix("- ")) {
        command.push(match item {
            "/usr/local/bin/kms-plugin" => BIN.to_owned(),
            "/var/run/kms-plugin/kms.sock" => socket.display().to_string(),
            other => other.to_owned(),
        });
    }
    assert!(command.len() > 2, "no {probe} command in the manifest");
    command
}

/// With the token gone, the manifest's liveness probe still passes (a restart would empty the
/// KEK cache and could not load the key) while its readiness probe fails; both pass again when
/// the token returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_passes_through_a_token_outage_while_readiness_fails() {
    let temp = tempfile::tempdir().expect("tempdir");
    let hsm = Hsm::new(temp.path());
    let (config, yaml) = write_config(&hsm, "probes", "1s", "2s");
    hsm.init_root_key(&config);
    let plugin = Plugin::launch(&hsm.dir, "probes", &yaml, hsm.env());
    // A normal start logs no ERROR (the token's mechanisms are not listed, so the cryptoki crate
    // has nothing to complain about).
    assert!(
        !plugin.logs().contains("\"level\":\"ERROR\""),
        "{}",
        plugin.logs()
    );
    let live = manifest_probe("livenessProbe", &plugin.socket);
    let ready = manifest_probe("readinessProbe", &plugin.socket);
    let probe = |command: &[String]| {
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .output()
            .expect("probe")
            .status
            .success()
    };
    assert!(probe(&live) && probe(&ready), "both pass while healthy");
    let mut client = plugin.client().await;
    hsm.remove_token();
    wait_status(&mut client, "unhealthy", Duration::from_secs(5), |h, _| {
        h != "ok"
    })
    .await;
    assert!(probe(&live), "liveness must pass while the token is gone");
    assert!(
        !probe(&ready),
        "readiness must fail while the token is gone"
    );
    hsm.return_token();
    wait_status(&mut client, "recovery", Duration::from_secs(10), |h, _| {
        h == "ok"
    })
    .await;
    assert!(probe(&live) && probe(&ready), "both pass again");
}

/// A root key version id in the plugin's own format: `version`, then eight bytes.
fn plugin_format_id(version: u64) -> String {
    format!("{version:016x}0000000000000000")
}

/// Key objects that appear in the token under the root key's label never become primary: one
/// imported from a known value with `softhsm2-util --import --aes` (C_CreateObject) and an id in
/// the plugin's own format with a higher version, and one with a one-byte id. The running
/// plugin keeps its primary through refreshes and a restart, names what it ignores, and
/// `kms-plugin rotate` still makes version 2 (the imported "version 99" counts for nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_objects_that_appear_in_the_token_never_become_primary() {
    let temp = tempfile::tempdir().expect("tempdir");
    let hsm = Hsm::new(temp.path());
    let (config, yaml) = write_config(&hsm, "import", "1s", "1s");
    hsm.init_root_key(&config);
    let mut plugin = Plugin::launch(&hsm.dir, "import", &yaml, hsm.env());
    let mut client = plugin.client().await;
    let first = status(&mut client).await.key_id;
    assert!(first.starts_with("pkcs11:root:0000000000000001"), "{first}");

    let known = hsm.dir.join("known-key.bin");
    fs::write(&known, [7u8; 32]).expect("key file");
    for id in [plugin_format_id(99), "01".to_owned()] {
        testkit::expect_success(
            std::process::Command::new("softhsm2-util")
                .args(["--import", known.to_str().expect("utf-8"), "--aes"])
                .args(["--token", TOKEN_LABEL, "--label", "root", "--id", &id])
                .args(["--pin", PIN])
                .env("SOFTHSM2_CONF", &hsm.conf),
        );
    }
    // Three refresh intervals, then a SIGHUP for good measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    plugin.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&mut client).await.key_id, first);
    assert_eq!(encrypt(&mut client, b"seed").await.key_id, first);
    let logs = plugin.logs();
    for id in [plugin_format_id(99), "01".to_owned()] {
        assert!(
            logs.contains("ignoring a key object labelled like the root key") && logs.contains(&id),
            "the imported object {id} is not named:\n{logs}"
        );
    }
    assert!(plugin.stop().success());

    let mut plugin = Plugin::launch(&hsm.dir, "import", &yaml, hsm.env());
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.key_id, first, "after a restart");
    rotate_to_version_2(&hsm, &config, &mut client, &first).await;
    assert!(plugin.stop().success());
}

/// A token call that never returns does not keep the process alive: with SoftHSM2's token files
/// locked by another process, a SIGHUP refresh hangs inside the module, and SIGTERM still ends
/// the plugin within `shutdown_grace` (1 s) and the second it waits at exit (before: it stayed
/// up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_while_a_token_call_hangs() {
    let temp = tempfile::tempdir().expect("tempdir");
    let hsm = Hsm::new(temp.path());
    let (config, yaml) = write_config(&hsm, "hang", "1h", "1h");
    hsm.init_root_key(&config);
    let mut plugin = Plugin::launch(&hsm.dir, "hang", &yaml, hsm.env());
    let mut client = plugin.client().await;
    assert_eq!(status(&mut client).await.healthz, "ok");
    let locked = hsm.dir.join("locked");
    let mut locker = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, glob, sys, time\n\
             files = [open(f, 'r+b') for f in glob.glob(sys.argv[1] + '/*/*')]\n\
             [fcntl.lockf(f, fcntl.LOCK_EX) for f in files]\n\
             open(sys.argv[2], 'w').close()\n\
             time.sleep(60)\n",
        ])
        .arg(&hsm.tokens)
        .arg(&locked)
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !locked.exists() {
        assert!(
            Instant::now() < deadline,
            "the token files were never locked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    plugin.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    plugin.signal("TERM");
    let exit = plugin.wait_exit(Duration::from_secs(10));
    let took = stopping.elapsed();
    let _ = locker.kill();
    let _ = locker.wait();
    println!("SIGTERM to exit with a hung token call: {took:?}");
    assert!(exit.success(), "{exit}");
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
}
