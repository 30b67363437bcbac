//! The AWS KMS backend against moto's KMS server, through the real `kms-plugin` binary.
//!
//! Each test starts its own `moto_server` on a free 127.0.0.1 port and counts KMS requests from
//! moto's own request log. Needs moto: `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use kms_config::SocketAddress;
use kms_plugin::envelope::format::WRAPPED_KEK_ANNOTATION;
use kms_proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::kms_v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const ALIAS: &str = "alias/kms-plugin-test";
const REGION: &str = "us-east-1";
const REMOTE_TARGET: &str = "kms_plugin::root_key::remote";

type Client = KeyManagementServiceClient<Channel>;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{name} {pid} failed");
}

/// A `moto_server` on 127.0.0.1, logging each HTTP request to a file; killed on drop.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Self {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "moto_server is not installed: run `bash .ci/provision-moto.sh` (pip install 'moto[server]') before these tests"
        );
        let port = free_port();
        let log = dir.join(format!("moto-{port}.log"));
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("moto.out")).expect("moto stdout"))
            .stderr(fs::File::create(&log).expect("moto log"))
            .spawn()
            .expect("spawn moto_server");
        let moto = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// KMS requests moto has answered so far (every KMS call is one `POST /`).
    fn requests(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"POST / HTTP/1.1\""))
            .count()
    }

    async fn sdk(&self) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_key(kms: &aws_sdk_kms::Client) -> String {
    let out = kms
        .create_key()
        .description("kms-plugin test")
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata()
        .and_then(|m| m.arn())
        .expect("key ARN")
        .to_owned()
}

/// A test's world: temp dir, moto, a key behind [`ALIAS`].
struct World {
    dir: tempfile::TempDir,
    moto: Moto,
    kms: aws_sdk_kms::Client,
    first_key: String,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::start(dir.path());
        let kms = moto.sdk().await;
        let first_key = create_key(&kms).await;
        kms.create_alias()
            .alias_name(ALIAS)
            .target_key_id(&first_key)
            .send()
            .await
            .expect("CreateAlias");
        Self {
            dir,
            moto,
            kms,
            first_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, name: &str, probe: &str, refresh: &str, endpoint: &str) -> PathBuf {
        let path = self.path(&format!("{name}.yaml"));
        let yaml = format!(
            "socket: {socket}\nhealth_probe_interval: {probe}\nbackend_timeout: 2s\nshutdown_grace: 1s\n\
             backend:\n  kind: aws\n  aws:\n    key_id: {ALIAS}\n    region: {REGION}\n    endpoint: {endpoint}\n    \
             key_refresh_interval: {refresh}\n    max_attempts: 2\n    attempt_timeout: 500ms\n    \
             operation_timeout: 1500ms\n    startup_timeout: 3s\n    encryption_context:\n      \
             kubernetes.io/cluster: test-cluster\n",
            socket = self.path(&format!("{name}.sock")).display(),
        );
        fs::write(&path, yaml).expect("config");
        path
    }

    fn plugin(&self, config: &Path, log_name: &str) -> Plugin {
        Plugin::start(self.dir.path(), config, log_name)
    }
}

/// A running `kms-plugin serve` with dummy AWS credentials, logging to a file; killed on drop.
struct Plugin {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

fn plugin_command(dir: &Path, config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kms-plugin"));
    plugin_env(dir, &mut command)
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--log-format",
            "json",
            "--log-level",
            &format!("{REMOTE_TARGET}=debug,warn"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Dummy credentials, and empty shared AWS files so no profile of this machine is used.
fn plugin_env<'a>(dir: &Path, command: &'a mut Command) -> &'a mut Command {
    for name in ["aws-config", "aws-credentials"] {
        fs::write(dir.join(name), "").expect("empty AWS file");
    }
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
}

impl Plugin {
    fn start(dir: &Path, config: &Path, log_name: &str) -> Self {
        let log = dir.join(log_name);
        let child = plugin_command(dir, config)
            .stderr(fs::File::create(&log).expect("log file"))
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
            socket: dir.join(format!("{name}.sock")),
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

    fn stop(mut self) {
        signal(self.child.id(), "TERM");
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
// Library API. The SDK reads credentials from the environment, so these calls run in a child
// process of this test binary that has the dummy credentials set.

/// Set in the child process: moto's endpoint.
const CHILD_ENV: &str = "KMS_AWS_TEST_CHILD_ENDPOINT";
const CONFIG_ENV: &str = "KMS_AWS_TEST_CONFIG";

#[test]
fn library_api() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Ok(endpoint) = std::env::var(CHILD_ENV) else {
        let world = runtime.block_on(World::new());
        let config = world.config("lib", "1h", "1h", &world.moto.endpoint());
        let exe = std::env::current_exe().expect("test binary");
        let out = plugin_env(world.dir.path(), &mut Command::new(exe))
            .args(["--exact", "library_api", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, world.moto.endpoint())
            .env(CONFIG_ENV, &config)
            .output()
            .expect("child test process");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "library checks failed:\n{text}");
        assert!(
            text.contains("library checks passed"),
            "child ran no checks:\n{text}"
        );
        println!("child output:\n{text}");
        return;
    };
    let path = PathBuf::from(std::env::var(CONFIG_ENV).expect("config path"));
    let config = kms_config::PluginConfig::load(&path).expect("config");
    let aws = config
        .backend
        .expect("backend section")
        .aws
        .expect("aws section");
    runtime.block_on(library_checks(aws, &endpoint));
}

async fn library_checks(config: kms_config::AwsBackend, endpoint: &str) {
    use kms_plugin::root_key::aws::AwsRootKey;
    use kms_plugin::root_key::{KeyId, RootKey, RootKeyError};
    use kms_plugin::secret::AesKey;

    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    );
    let root = AwsRootKey::connect(&config).await.expect("connect");
    let first = root.primary_key_id();
    assert!(
        first.as_str().starts_with("arn:aws:kms:us-east-1:"),
        "{first}"
    );

    let kek = AesKey::generate().expect("rng");
    let wrapped = root.wrap(&kek).await.expect("wrap");
    assert_eq!(
        wrapped.key_id, first,
        "the wrapped key names the key ARN, not the alias"
    );
    assert!(
        root.unwrap(&first, &wrapped.ciphertext)
            .await
            .expect("unwrap")
            .ct_eq(&kek)
    );

    let mut tampered = wrapped.ciphertext.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let error = root.unwrap(&first, &tampered).await.expect_err("tampered");
    assert!(matches!(error, RootKeyError::Integrity(_)), "{error:?}");
    let alias = KeyId::new(ALIAS).expect("id");
    let error = root
        .unwrap(&alias, &wrapped.ciphertext)
        .await
        .expect_err("not an ARN");
    assert!(matches!(error, RootKeyError::UnknownKey(_)), "{error:?}");

    // Another encryption context (another cluster) cannot unwrap.
    let mut other = config.clone();
    other
        .encryption_context
        .insert("kubernetes.io/cluster".into(), "other".into());
    let other = AwsRootKey::connect(&other).await.expect("connect other");
    let error = other
        .unwrap(&first, &wrapped.ciphertext)
        .await
        .expect_err("context");
    assert!(matches!(error, RootKeyError::Integrity(_)), "{error:?}");

    // Re-pointing the alias is picked up by refresh(); old data keeps unwrapping.
    let created = kms.create_key().send().await.expect("CreateKey");
    let second = created
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("arn")
        .to_owned();
    kms.update_alias()
        .alias_name(ALIAS)
        .target_key_id(&second)
        .send()
        .await
        .expect("alias");
    let before_refresh = root.wrap(&kek).await.expect("wrap before refresh");
    assert_eq!(
        before_refresh.key_id, first,
        "until refresh, wraps match what Status reports"
    );
    assert_eq!(root.primary_key_id(), first);
    root.refresh().await.expect("refresh");
    assert_eq!(root.primary_key_id().as_str(), second);
    let rewrapped = root.wrap(&kek).await.expect("wrap under the new key");
    assert_eq!(rewrapped.key_id.as_str(), second);
    assert!(
        root.unwrap(&first, &wrapped.ciphertext)
            .await
            .expect("old key")
            .ct_eq(&kek)
    );

    // A disabled key is refused at once at startup, not retried for startup_timeout.
    // (moto's DisableKey wants the bare key id, not the ARN.)
    let bare = first.as_str().rsplit('/').next().expect("key id");
    kms.disable_key()
        .key_id(bare)
        .send()
        .await
        .expect("DisableKey");
    // (moto still decrypts under a disabled key, so Decrypt's DisabledException → Denied
    // mapping is covered by the unit tests of the error mapping only.)
    let mut disabled = config.clone();
    disabled.key_id = first.to_string();
    let started = Instant::now();
    let error = AwsRootKey::connect(&disabled)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        error.as_deref().is_some_and(|e| e.contains("Disabled")),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let mut missing = config.clone();
    missing.key_id = "alias/no-such-alias".into();
    let Err(error) = AwsRootKey::connect(&missing).await else {
        panic!("connected to a missing alias")
    };
    assert!(matches!(error, RootKeyError::UnknownKey(_)), "{error:?}");
    println!("library checks passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_round_trip_tamper_restart_alias_rotation() {
    let world = World::new().await;
    let config = world.config("serve", "1s", "1h", &world.moto.endpoint());

    let mut plugin = world.plugin(&config, "serve-1.log");
    let mut client = plugin.client().await;
    let first = wait_status(
        &mut client,
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    assert_eq!(
        first, world.first_key,
        "Status reports the ARN the alias resolves to"
    );

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
    let wrapped = bad_kek
        .annotations
        .get_mut(WRAPPED_KEK_ANNOTATION)
        .expect("kek annotation");
    let middle = wrapped.len() / 2;
    wrapped[middle] ^= 1;
    let before = world.moto.requests();
    let error = decrypt(&mut client, &bad_kek)
        .await
        .expect_err("tampered wrapped KEK");
    assert_eq!(
        error.code(),
        tonic::Code::InvalidArgument,
        "KMS InvalidCiphertext is an integrity failure: {error:?}"
    );
    assert_eq!(
        world.moto.requests(),
        before + 1,
        "one Decrypt reached KMS, not retried"
    );
    plugin.stop();

    // Restart: what was sealed before decrypts after.
    let mut plugin = world.plugin(&config, "serve-2.log");
    let mut client = plugin.client().await;
    assert_eq!(
        decrypt(&mut client, &sealed).await.expect("after restart"),
        b"seed before restart"
    );

    // Re-pointing the alias is a rotation; SIGHUP re-resolves it at once.
    let second_key = create_key(&world.kms).await;
    world
        .kms
        .update_alias()
        .alias_name(ALIAS)
        .target_key_id(&second_key)
        .send()
        .await
        .expect("UpdateAlias");
    signal(plugin.child.id(), "HUP");
    let rotated = wait_status(&mut client, "rotation", Duration::from_secs(5), |h, k| {
        h == "ok" && k != first
    })
    .await;
    assert_eq!(rotated, second_key);
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

    // A plugin with another encryption context cannot unwrap this cluster's keys.
    let other = world.path("other.yaml");
    let text = fs::read_to_string(&config)
        .expect("config")
        .replace("test-cluster", "other-cluster")
        .replace("serve.sock", "other.sock");
    fs::write(&other, text).expect("other config");
    let mut plugin = world.plugin(&other, "other.log");
    let mut client = plugin.client().await;
    let error = decrypt(&mut client, &sealed)
        .await
        .expect_err("wrong encryption context");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    plugin.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_remote_call_economy() {
    const N: usize = 10_000;
    let world = World::new().await;
    let config = world.config("economy", "1h", "1h", &world.moto.endpoint());

    let mut plugin = world.plugin(&config, "economy-1.log");
    let client = plugin.client().await;
    wait_status(
        &mut client.clone(),
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let before = world.moto.requests();
    let sealed = many(&client, N, 8, |mut c, i| async move {
        encrypt(&mut c, format!("seed {i}").as_bytes()).await
    })
    .await;
    let encrypt_calls = world.moto.requests() - before;
    assert!(
        encrypt_calls <= 1,
        "{N} Encrypts cost {encrypt_calls} KMS requests"
    );
    println!("{N} Encrypts: {encrypt_calls} KMS request(s) (moto's log)");
    plugin.stop();

    let mut plugin = world.plugin(&config, "economy-2.log");
    let client = plugin.client().await;
    wait_status(
        &mut client.clone(),
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let before = world.moto.requests();
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
    let decrypt_calls = world.moto.requests() - before;
    assert_eq!(
        decrypt_calls, 1,
        "{N} Decrypts after a restart cost {decrypt_calls} KMS requests"
    );
    println!("{N} Decrypts after restart: {decrypt_calls} KMS request(s) (moto's log)");
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

/// A TCP relay in front of moto: stopping it refuses connections the way a stopped KMS
/// endpoint does, and restarting it on the same port brings KMS back with its keys intact
/// (a restarted moto would have forgotten them).
struct Relay {
    port: u16,
    target: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(port: u16, target: u16) -> Self {
        let mut relay = Self {
            port,
            target,
            tasks: Vec::new(),
            conns: Default::default(),
        };
        relay.resume().await;
        relay
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "relay cannot rebind {}: {error}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (target, conns) = (self.target, self.conns.clone());
        self.tasks.push(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().expect("conns").push(conn);
            }
        }));
    }

    /// Closes the listener and every relayed connection.
    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for conn in self.conns.lock().expect("conns").drain(..) {
            conn.abort();
        }
    }
}

/// During an outage: cached Decrypts and Encrypts keep working, an uncached Decrypt fails as
/// unavailable, every call within its deadline, and Status turns unhealthy within a probe.
async fn check_outage(
    client: &mut Client,
    cached: &EncryptResponse,
    uncached: &EncryptResponse,
    kind: &str,
) {
    let opened = bounded("cached Decrypt", decrypt(client, cached)).await;
    assert_eq!(
        opened.expect("cached KEK keeps decrypting"),
        b"sealed before the outage"
    );
    let during = bounded("Encrypt", encrypt(client, b"sealed during the outage")).await;
    assert_eq!(
        during.key_id, cached.key_id,
        "the current local KEK keeps encrypting"
    );
    let opened = bounded("Decrypt", decrypt(client, &during)).await;
    assert_eq!(opened.expect("decrypt"), b"sealed during the outage");
    let error = bounded("uncached Decrypt", decrypt(client, uncached))
        .await
        .expect_err("KMS is down");
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    let started = Instant::now();
    wait_status(client, "unhealthy", Duration::from_secs(5), |h, _| {
        h != "ok"
    })
    .await;
    println!(
        "{kind}: unhealthy {:?} after the outage began",
        started.elapsed()
    );
}

async fn check_recovery(client: &mut Client, uncached: &EncryptResponse) {
    wait_status(client, "recovery", Duration::from_secs(10), |h, _| {
        h == "ok"
    })
    .await;
    let opened = decrypt(client, uncached).await;
    assert_eq!(
        opened.expect("after recovery"),
        b"sealed by an earlier process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_kms_outage_and_recovery() {
    let world = World::new().await;
    let mut relay = Relay::start(free_port(), world.moto.port).await;
    let config = world.config("outage", "1s", "1h", &relay.endpoint());

    // Seeds whose local KEKs the serving process has not cached: one per outage, each sealed
    // by its own earlier process (so under its own KEK).
    let mut uncached = Vec::new();
    for name in ["outage-0.log", "outage-1.log"] {
        let mut plugin = world.plugin(&config, name);
        let mut client = plugin.client().await;
        uncached.push(encrypt(&mut client, b"sealed by an earlier process").await);
        plugin.stop();
    }
    assert_ne!(
        uncached[0].annotations[WRAPPED_KEK_ANNOTATION],
        uncached[1].annotations[WRAPPED_KEK_ANNOTATION]
    );

    let mut plugin = world.plugin(&config, "outage-2.log");
    let mut client = plugin.client().await;
    wait_status(
        &mut client,
        "first probe",
        Duration::from_secs(10),
        |h, _| h == "ok",
    )
    .await;
    let cached = encrypt(&mut client, b"sealed before the outage").await;

    // KMS hangs (the process is frozen: requests are accepted and never answered).
    signal(world.moto.child.id(), "STOP");
    check_outage(&mut client, &cached, &uncached[0], "hung KMS").await;
    signal(world.moto.child.id(), "CONT");
    check_recovery(&mut client, &uncached[0]).await;

    // KMS is gone (connections refused), then comes back on the same port.
    relay.stop();
    check_outage(&mut client, &cached, &uncached[1], "stopped KMS").await;
    relay.resume().await;
    check_recovery(&mut client, &uncached[1]).await;
    plugin.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_gives_up_clearly_when_kms_is_unreachable() {
    let world = World::new().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = world.config("down", "1s", "1h", &closed);
    let started = Instant::now();
    let out = plugin_command(world.dir.path(), &config)
        .stderr(Stdio::piped())
        .output()
        .expect("run kms-plugin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "startup must fail: {stderr}");
    assert!(stderr.contains("unreachable after"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?} (startup_timeout 3s)",
        started.elapsed()
    );
    assert!(
        stderr.contains("retrying"),
        "retried before giving up: {stderr}"
    );
}
