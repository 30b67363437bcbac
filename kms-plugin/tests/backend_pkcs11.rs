//! The PKCS#11 backend against a real SoftHSM2 token, through the library API and through the
//! real `kms-plugin` binary. Each test starts from a fresh token in its own temp directory.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, so library calls run in a child process of
//! this test binary (`library_api` re-runs itself with the variables set) and the plugin runs as
//! its own process. Needs SoftHSM2: `bash .ci/provision-softhsm.sh`.
#![cfg(feature = "pkcs11")]

use kms_config::SocketAddress;
use kms_plugin::envelope::format::WRAPPED_KEK_ANNOTATION;
use kms_proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "kms";
const KEY_LABEL: &str = "root";
const PIN: &str = "246810";
const SO_PIN: &str = "13579111";
/// Set in the child process that runs library calls: `library` or `init`.
const CHILD_ENV: &str = "KMS_PKCS11_TEST_CHILD";
const CONFIG_ENV: &str = "KMS_PKCS11_TEST_CONFIG";
const REMOTE_TARGET: &str = "kms_plugin::root_key::remote";

type Client = KeyManagementServiceClient<Channel>;

fn require_softhsm() {
    let tool = Command::new("softhsm2-util").arg("--version").output();
    assert!(
        tool.is_ok_and(|out| out.status.success()) && Path::new(MODULE).exists(),
        "SoftHSM2 is not installed (softhsm2-util and {MODULE} are needed): run `bash .ci/provision-softhsm.sh` \
         (apt-get install -y softhsm2) before these tests"
    );
}

/// A fresh SoftHSM2 token in a temp directory, with its own config file and PIN file.
struct Hsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    tokens: PathBuf,
}

impl Hsm {
    fn new() -> Self {
        require_softhsm();
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm conf");
        fs::write(dir.path().join("pin"), format!("{PIN}\n")).expect("pin file");
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util");
        assert!(
            out.status.success(),
            "init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, conf, tokens }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a plugin config serving on `<dir>/<name>.sock`.
    fn config(&self, name: &str, probe: &str, refresh: &str) -> PathBuf {
        let path = self.path(&format!("{name}.yaml"));
        let yaml = format!(
            "socket: {socket}\nhealth_probe_interval: {probe}\nbackend_timeout: 2s\nshutdown_grace: 1s\n\
             backend:\n  kind: pkcs11\n  pkcs11:\n    module: {MODULE}\n    token_label: {TOKEN_LABEL}\n    \
             pin_file: {pin}\n    key_label: {KEY_LABEL}\n    max_sessions: 4\n    refresh_interval: {refresh}\n",
            socket = self.path(&format!("{name}.sock")).display(),
            pin = self.path("pin").display(),
        );
        fs::write(&path, yaml).expect("config");
        path
    }

    /// Runs the `library_api` test of this binary in a child process, in `mode`.
    fn child(&self, mode: &str, config: &Path) -> String {
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new(exe)
            .args(["--exact", "library_api", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, mode)
            .env(CONFIG_ENV, config)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("child test process");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child `{mode}` failed:\n{text}");
        assert!(
            text.contains("1 passed"),
            "child `{mode}` ran no test:\n{text}"
        );
        text
    }

    /// Creates the first root key version (what `kms-plugin hsm init` does).
    fn init_root_key(&self, config: &Path) {
        self.child("init", config);
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_kms-plugin"))
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("kms-plugin");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kms-plugin {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

/// A running `kms-plugin serve`, logging to a file; killed on drop.
struct Plugin {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

impl Plugin {
    fn start(hsm: &Hsm, config: &Path, log_name: &str) -> Self {
        let log = hsm.path(log_name);
        let stderr = fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kms-plugin"))
            .args(["serve", "--config"])
            .arg(config)
            .args([
                "--log-format",
                "json",
                "--log-level",
                &format!("{REMOTE_TARGET}=debug,warn"),
            ])
            .env("SOFTHSM2_CONF", &hsm.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn kms-plugin");
        let name = config
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        Self {
            child,
            log,
            socket: hsm.path(&format!("{name}.sock")),
        }
    }

    async fn client(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("kms-plugin exited with {status}:\n{}", self.logs());
            }
            if self.socket.exists()
                && let Ok(client) = kms_plugin::client::connect(
                    &SocketAddress::Path(self.socket.clone()),
                    Duration::from_secs(5),
                )
                .await
            {
                return client;
            }
            assert!(
                Instant::now() < deadline,
                "kms-plugin did not listen in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Remote calls of `op` logged so far.
    fn remote_calls(&self, op: &str) -> usize {
        let needle = format!("\"op\":\"{op}\"");
        self.logs()
            .lines()
            .filter(|l| l.contains(REMOTE_TARGET) && l.contains(&needle))
            .count()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "kms-plugin did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status(client: &mut Client) -> (String, String) {
    let status = client
        .status(StatusRequest {})
        .await
        .expect("Status")
        .into_inner();
    (status.healthz, status.key_id)
}

async fn wait_status(
    client: &mut Client,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&str, &str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (healthz, key_id) = status(client).await;
        if ok(&healthz, &key_id) {
            return key_id;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still healthz={healthz:?} key_id={key_id:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn encrypt(client: &mut Client, plaintext: &[u8]) -> EncryptResponse {
    client
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "test".into(),
        })
        .await
        .expect("Encrypt")
        .into_inner()
}

async fn decrypt(client: &mut Client, sealed: &EncryptResponse) -> Result<Vec<u8>, tonic::Status> {
    client
        .decrypt(DecryptRequest {
            ciphertext: sealed.ciphertext.clone(),
            uid: "test".into(),
            key_id: sealed.key_id.clone(),
            annotations: sealed.annotations.clone(),
        })
        .await
        .map(|r| r.into_inner().plaintext)
}

/// Runs `count` calls of `call` over `workers` concurrent clients, returning the results in order.
async fn many<T: Send + 'static, F, Fut>(
    client: &Client,
    count: usize,
    workers: usize,
    call: F,
) -> Vec<T>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, call) = (client.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (worker..count).step_by(workers) {
                out.push((i, call(client.clone(), i).await));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("worker"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}

// ---------------------------------------------------------------------------------------------
// Library API (runs in a child process that has SOFTHSM2_CONF set).

#[test]
fn library_api() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        let hsm = Hsm::new();
        let config = hsm.config("lib", "1h", "1h");
        let output = hsm.child("library", &config);
        assert!(output.contains("library checks passed"), "{output}");
        assert!(
            output.contains("PKCS#11 session lost; reopening it and retrying once"),
            "the logout did not exercise the re-login path:\n{output}"
        );
        println!("child output:\n{output}");
        return;
    };
    // Warnings reach the parent, which checks that the session-loss path really ran.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let config_path = PathBuf::from(std::env::var(CONFIG_ENV).expect("config path"));
    let config = kms_config::PluginConfig::load(&config_path).expect("config");
    let pkcs11 = config
        .backend
        .expect("backend section")
        .pkcs11
        .expect("pkcs11 section");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        match mode.as_str() {
            "init" => {
                let outcome = kms_plugin::root_key::pkcs11::init_root_key(&pkcs11)
                    .await
                    .expect("init");
                println!("init: {}", outcome.key_id());
            }
            "library" => library_checks(&pkcs11).await,
            other => panic!("unknown child mode {other}"),
        }
    });
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
    wrong.pin_file = Some(wrong_pin.path().to_owned());
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
    let wrapped = root.wrap(&kek).await.expect("wrap");
    assert_eq!(wrapped.key_id, first);
    assert_eq!(wrapped.ciphertext.len(), 60, "IV + key + tag");
    assert!(
        !wrapped.ciphertext.windows(32).any(|w| w == kek.expose()),
        "wrapped form hides the key"
    );
    let again = root.wrap(&kek).await.expect("wrap again");
    assert_ne!(again.ciphertext, wrapped.ciphertext, "fresh IV per wrap");
    assert!(
        root.unwrap(&first, &wrapped.ciphertext)
            .await
            .expect("unwrap")
            .ct_eq(&kek)
    );

    // Concurrent calls share the session pool (max_sessions = 4) on blocking threads.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (root, first, sealed) = (root.clone(), first.clone(), wrapped.ciphertext.clone());
        tasks.push(tokio::spawn(
            async move { root.unwrap(&first, &sealed).await },
        ));
    }
    for task in tasks {
        let key = task.await.expect("task").expect("concurrent unwrap");
        assert!(key.ct_eq(&kek));
    }

    // The token drops the login (C_Logout logs out every session of the process): the next call
    // reopens a session, logs in again and retries once, unseen by the caller.
    logout_everywhere();
    let key = root
        .unwrap(&first, &wrapped.ciphertext)
        .await
        .expect("after logout");
    assert!(key.ct_eq(&kek));
    logout_everywhere();
    let rewrapped = root.wrap(&kek).await.expect("wrap after logout");
    assert_eq!(rewrapped.key_id, first);

    for position in [0, 12, 59] {
        let mut tampered = wrapped.ciphertext.clone();
        tampered[position] ^= 1;
        let error = root.unwrap(&first, &tampered).await.expect_err("tampered");
        assert!(
            matches!(error, RootKeyError::Integrity(_)),
            "byte {position}: {error:?}"
        );
    }
    let short = root
        .unwrap(&first, &wrapped.ciphertext[..59])
        .await
        .expect_err("short");
    assert!(matches!(short, RootKeyError::Integrity(_)), "{short:?}");
    // The AAD binds the key id: the same bytes under another (unknown) version fail.
    let other = KeyId::new("pkcs11:root:00000000000000090000000000000000").expect("id");
    let unknown = root
        .unwrap(&other, &wrapped.ciphertext)
        .await
        .expect_err("unknown");
    assert!(
        matches!(unknown, RootKeyError::UnknownKey(_)),
        "{unknown:?}"
    );
    let foreign = KeyId::new("local:v1:abc").expect("id");
    assert!(matches!(
        root.unwrap(&foreign, &wrapped.ciphertext).await,
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
    let rewrapped = root.wrap(&kek).await.expect("wrap under v2");
    assert_eq!(rewrapped.key_id, second);
    assert!(
        root.unwrap(&first, &wrapped.ciphertext)
            .await
            .expect("old version")
            .ct_eq(&kek)
    );
    assert!(
        root.unwrap(&second, &rewrapped.ciphertext)
            .await
            .expect("new version")
            .ct_eq(&kek)
    );
    // Bytes wrapped under v2 do not open as v1 (the AAD names the version).
    let swapped = root
        .unwrap(&first, &rewrapped.ciphertext)
        .await
        .expect_err("wrong version");
    assert!(matches!(swapped, RootKeyError::Integrity(_)), "{swapped:?}");
    println!("library checks passed");
}

/// Logs this process out of the token, as a token that drops its logins would.
fn logout_everywhere() {
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
    let session = ctx.open_ro_session(slot).expect("session");
    let pin = secrecy::SecretBox::new(Box::new(PIN.as_bytes().to_vec()));
    match session.login_with_raw(UserType::User, &pin) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session.logout().expect("logout");
}

// ---------------------------------------------------------------------------------------------
// The real binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_round_trip_tamper_restart_rotate() {
    let hsm = Hsm::new();
    let config = hsm.config("serve", "1s", "1h");
    hsm.init_root_key(&config);

    let mut plugin = Plugin::start(&hsm, &config, "serve-1.log");
    let mut client = plugin.client().await;
    let first = wait_status(
        &mut client,
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    assert!(first.starts_with("pkcs11:root:0000000000000001"), "{first}");

    let sealed = encrypt(&mut client, b"seed before restart").await;
    assert_eq!(sealed.key_id, first);
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("decrypt"),
        b"seed before restart"
    );

    let mut tampered = sealed.clone();
    tampered.ciphertext[20] ^= 1;
    let error = decrypt(&mut client, &tampered)
        .await
        .expect_err("tampered ciphertext");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let mut bad_kek = sealed.clone();
    bad_kek
        .annotations
        .get_mut(WRAPPED_KEK_ANNOTATION)
        .expect("kek annotation")[30] ^= 1;
    let before = plugin.remote_calls("unwrap");
    let error = decrypt(&mut client, &bad_kek)
        .await
        .expect_err("tampered wrapped KEK");
    assert_eq!(
        error.code(),
        tonic::Code::InvalidArgument,
        "integrity failure is not 'unavailable'"
    );
    assert_eq!(
        plugin.remote_calls("unwrap"),
        before + 1,
        "the tampered KEK reached the token"
    );
    plugin.stop();

    // Restart: what was sealed before decrypts after.
    let mut plugin = Plugin::start(&hsm, &config, "serve-2.log");
    let mut client = plugin.client().await;
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("after restart"),
        b"seed before restart"
    );

    // Rotation by another process while serving, picked up on SIGHUP.
    let printed = hsm.cli(&["rotate", "--config", config.to_str().expect("utf-8")]);
    assert!(
        printed.contains("pkcs11:root:0000000000000002"),
        "{printed}"
    );
    plugin.signal("HUP");
    let rotated = wait_status(&mut client, "rotation", Duration::from_secs(5), |h, k| {
        h == "ok" && k != first
    })
    .await;
    assert!(
        rotated.starts_with("pkcs11:root:0000000000000002"),
        "{rotated}"
    );
    let fresh = encrypt(&mut client, b"seed after rotation").await;
    assert_eq!(
        fresh.key_id, rotated,
        "Encrypt answers with the key id Status reports"
    );
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("old data"),
        b"seed before restart"
    );
    assert_eq!(
        decrypt(&mut client, &fresh).await.expect("new data"),
        b"seed after rotation"
    );
    plugin.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_remote_call_economy() {
    const N: usize = 10_000;
    let hsm = Hsm::new();
    let config = hsm.config("economy", "1h", "1h");
    hsm.init_root_key(&config);

    let mut plugin = Plugin::start(&hsm, &config, "economy-1.log");
    let client = plugin.client().await;
    wait_status(
        &mut client.clone(),
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let wraps = plugin.remote_calls("wrap");
    let sealed = many(&client, N, 8, |mut c, i| async move {
        encrypt(&mut c, format!("seed {i}").as_bytes()).await
    })
    .await;
    let encrypt_wraps = plugin.remote_calls("wrap") - wraps;
    assert!(
        encrypt_wraps <= 1,
        "{N} Encrypts cost {encrypt_wraps} token wraps"
    );
    let wrapped: std::collections::HashSet<_> = sealed
        .iter()
        .map(|s| s.annotations[WRAPPED_KEK_ANNOTATION].clone())
        .collect();
    assert_eq!(wrapped.len(), 1, "all seeds sealed under one local KEK");
    println!("{N} Encrypts: {encrypt_wraps} token wrap(s)");
    plugin.stop();

    let mut plugin = Plugin::start(&hsm, &config, "economy-2.log");
    let client = plugin.client().await;
    wait_status(
        &mut client.clone(),
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let unwraps = plugin.remote_calls("unwrap");
    let sealed = std::sync::Arc::new(sealed);
    let shared = sealed.clone();
    let opened = many(&client, N, 16, move |mut c, i| {
        let shared = shared.clone();
        async move { decrypt(&mut c, &shared[i]).await.expect("decrypt") }
    })
    .await;
    for (i, plaintext) in opened.iter().enumerate() {
        assert_eq!(plaintext, format!("seed {i}").as_bytes());
    }
    let decrypt_unwraps = plugin.remote_calls("unwrap") - unwraps;
    assert_eq!(
        decrypt_unwraps, 1,
        "{N} Decrypts after a restart cost {decrypt_unwraps} token unwraps"
    );
    println!("{N} Decrypts after restart: {decrypt_unwraps} token unwrap(s)");
    plugin.stop();
}

/// Times a call and checks it ended within the plugin's deadline (backend_timeout 2s + slack).
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let value = call.await;
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{what} took {:?}",
        started.elapsed()
    );
    value
}

/// Moves every entry of `from` into `to` (a token directory leaving or returning).
fn move_all(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("target dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        fs::rename(entry.path(), to.join(entry.file_name())).expect("rename");
    }
}

/// The token disappears while serving (its directory is moved out of SoftHSM's tokendir, as
/// when an HSM is unplugged or unreachable) and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_token_loss_and_recovery() {
    let hsm = Hsm::new();
    let config = hsm.config("fault", "1s", "2s");
    hsm.init_root_key(&config);

    // A seed whose local KEK the next plugin process has not cached.
    let mut plugin = Plugin::start(&hsm, &config, "fault-1.log");
    let mut client = plugin.client().await;
    let uncached = encrypt(&mut client, b"sealed by an earlier process").await;
    plugin.stop();

    let mut plugin = Plugin::start(&hsm, &config, "fault-2.log");
    let mut client = plugin.client().await;
    wait_status(
        &mut client,
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let cached = encrypt(&mut client, b"sealed before the loss").await;

    let away = hsm.path("tokens-away");
    move_all(&hsm.tokens, &away);
    let opened = bounded("cached Decrypt", decrypt(&mut client, &cached)).await;
    assert_eq!(
        opened.expect("cached KEK keeps decrypting"),
        b"sealed before the loss"
    );
    let during = bounded("Encrypt", encrypt(&mut client, b"sealed during the loss")).await;
    assert_eq!(
        during.key_id, cached.key_id,
        "the current local KEK keeps encrypting"
    );
    let opened = bounded("Decrypt", decrypt(&mut client, &during)).await;
    assert_eq!(opened.expect("decrypt"), b"sealed during the loss");
    let error = bounded("uncached Decrypt", decrypt(&mut client, &uncached))
        .await
        .expect_err("the token is gone");
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    let started = Instant::now();
    wait_status(&mut client, "unhealthy", Duration::from_secs(5), |h, _| {
        h != "ok"
    })
    .await;
    println!("unhealthy {:?} after the token left", started.elapsed());

    // The token returns: the plugin re-initialises the module, logs in again, and recovers.
    move_all(&away, &hsm.tokens);
    wait_status(&mut client, "recovery", Duration::from_secs(10), |h, _| {
        h == "ok"
    })
    .await;
    let opened = decrypt(&mut client, &uncached).await;
    assert_eq!(
        opened.expect("after recovery"),
        b"sealed by an earlier process"
    );
    assert!(
        plugin.logs().contains("re-initialising the module"),
        "{}",
        plugin.logs()
    );

    // A rotation by another process reaches the plugin on its refresh interval (2s), no SIGHUP.
    let before = status(&mut client).await.1;
    hsm.cli(&["rotate", "--config", config.to_str().expect("utf-8")]);
    let rotated = wait_status(&mut client, "refresh", Duration::from_secs(6), |h, k| {
        h == "ok" && k != before
    })
    .await;
    assert!(
        rotated.starts_with("pkcs11:root:0000000000000002"),
        "{rotated}"
    );
    plugin.stop();
}
