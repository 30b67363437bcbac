//! Test harness: runs the real `kms-plugin` binary on a real Unix socket.
//!
//! Shared by every test module: the plugin process ([`Plugin`]), KMS v2 calls
//! ([`status`], [`encrypt`], [`decrypt`], [`many`]), waiting ([`eventually`], [`wait_status`],
//! [`bounded`]) and scraping `/metrics` ([`metric`]). The backends' worlds live in
//! [`softhsm`] (a SoftHSM2 token) and [`moto`] (moto's KMS server and a TCP relay); [`proxy`]
//! makes a TCP backend hang.

pub(crate) mod jwt;
#[cfg(feature = "aws")]
pub(crate) mod moto;
pub(crate) mod proxy;
pub(crate) mod raw_h2;
#[cfg(feature = "pkcs11")]
pub(crate) mod softhsm;
pub(crate) mod softhsm_token;

use kms_config::SocketAddress;
use kms_proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::kms_v2::{
    DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_kms-plugin");

pub(crate) type Client = KeyManagementServiceClient<Channel>;

/// A running plugin with its own temp directory, socket, state and log file.
pub(crate) struct Plugin {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment of the plugin process (e.g. `SOFTHSM2_CONF`, dummy AWS credentials).
    pub env: Vec<(String, String)>,
}

/// A plugin config: `socket`, the probe interval, a 2 s backend deadline and a short shutdown
/// grace; `extra` adds top-level lines and `backend` is the `backend:` section.
pub(crate) fn plugin_config(socket: &Path, probe: &str, extra: &str, backend: &str) -> String {
    format!(
        "socket: {}\nhealth_probe_interval: {probe}\nbackend_timeout: 2s\nshutdown_grace: 1s\n{extra}{backend}",
        socket.display()
    )
}

/// `kms-plugin init --config CONFIG`: the first root key of a local backend, as an operator
/// creates it before the first `serve` (which never creates one).
pub(crate) fn init_keyring(config: &Path) {
    let out = testkit::output_of(
        Command::new(env!("CARGO_BIN_EXE_kms-plugin"))
            .arg("init")
            .arg("--config")
            .arg(config),
    );
    testkit::assert_succeeded("kms-plugin init", &out);
}

/// A configuration for the local backend with fast polling and probing.
pub(crate) fn local_config(socket: &Path, state_dir: &Path, extra: &str) -> String {
    format!(
        "socket: {}\nhealth_probe_interval: 1s\nshutdown_grace: 5s\nlog_level: info\n{extra}backend:\n  kind: local\n  local:\n    state_dir: {}\n    poll_interval: 200ms\n",
        socket.display(),
        state_dir.display()
    )
}

impl Plugin {
    /// Starts a plugin on the local backend in a fresh temp directory.
    pub(crate) fn start_local(temp: &Path) -> Self {
        Self::start_with(temp, "")
    }

    /// Starts a plugin whose config has `extra` top-level lines.
    pub(crate) fn start_with(temp: &Path, extra: &str) -> Self {
        let socket = temp.join("kms.sock");
        let state_dir = temp.join("state");
        let config = temp.join("config.yaml");
        std::fs::write(&config, local_config(&socket, &state_dir, extra)).expect("write config");
        let mut plugin = Self {
            child: None,
            socket,
            state_dir,
            config,
            log: temp.join("plugin.log"),
            env: Vec::new(),
        };
        init_keyring(&plugin.config);
        plugin.spawn();
        plugin
    }

    /// Writes `yaml` to `<dir>/<name>.yaml` (its socket must be [`Plugin::socket_of`]), starts
    /// the plugin with `env` and waits until it is healthy. It logs to `<dir>/<name>.log`.
    pub(crate) fn launch(dir: &Path, name: &str, yaml: &str, env: Vec<(String, String)>) -> Self {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).expect("write config");
        let mut plugin = Self {
            child: None,
            socket: Self::socket_of(dir, name),
            state_dir: dir.join("state"),
            config,
            log: dir.join(format!("{name}.log")),
            env,
        };
        if yaml.contains("kind: local") {
            init_keyring(&plugin.config);
        }
        plugin.spawn();
        plugin
    }

    /// The socket of the plugin [`Plugin::launch`] names `name` in `dir`.
    pub(crate) fn socket_of(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.sock"))
    }

    /// Spawns the binary (again) with the same config and waits until it is healthy.
    pub(crate) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = serve_command(&self.config, &self.env)
            .stderr(log)
            .spawn()
            .expect("spawn kms-plugin");
        self.child = Some(child);
        self.wait_healthy();
    }

    pub(crate) fn address(&self) -> SocketAddress {
        SocketAddress::Path(self.socket.clone())
    }

    /// Waits until Status reports healthy (or panics after 20 s with the log).
    pub(crate) fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("kms-plugin exited early with {status}:\n{}", self.logs());
            }
            let healthy = probe_healthy(&self.address());
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugin never became healthy:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) async fn client(&self) -> KeyManagementServiceClient<Channel> {
        kms_plugin::client::connect(&self.address(), Duration::from_secs(10))
            .await
            .expect("connect")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name with the `kill` utility.
    pub(crate) fn signal(&self, name: &str) {
        signal_pid(self.pid(), name);
    }

    /// Restarts the process (SIGTERM, then the same config again) and waits until it is healthy.
    pub(crate) fn restart(&mut self) {
        let exit = self.stop();
        assert!(
            exit.success(),
            "plugin exited with {exit} on SIGTERM:\n{}",
            self.logs()
        );
        self.spawn();
    }

    /// SIGTERM, then waits for the exit (at most 15 s).
    pub(crate) fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(15))
    }

    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("plugin did not exit within {limit:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The plugin's log so far. Informational lines reach stderr within the plugin's 100 ms
    /// flush interval, so this waits a little longer than that first.
    pub(crate) fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(250));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an admin subcommand against this plugin's state directory.
    pub(crate) fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .output()
            .expect("run kms-plugin")
    }
}

/// The names of the entries of `dir` that `picked` accepts (say, temporary files left behind).
pub(crate) fn entries_named(dir: &Path, picked: impl Fn(&str) -> bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| picked(name))
        .collect()
}

/// Sends signal `name` to `pid` with the `kill` utility.
pub(crate) fn signal_pid(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{name} {pid} failed");
}

/// `kms-plugin serve --config <config>` with `env`, stdin and stdout closed.
pub(crate) fn serve_command(config: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // No profile or session of this machine reaches a backend under test.
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// `kms-plugin status --socket <socket>`: the liveness probe, not yet run.
pub(crate) fn status_command(socket: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(BIN);
    command.args(["status", "--socket"]).arg(socket);
    command
}

/// Writes `yaml` to `path` and runs `kms-plugin serve` on it, which must refuse to start within
/// 10 s; returns its stderr.
pub(crate) fn refused_config(path: &Path, yaml: &str) -> String {
    std::fs::write(path, yaml).expect("write config");
    serve_must_fail(path, &[], Duration::from_secs(10))
}

/// Runs `kms-plugin serve` with a config that must not start; returns its stderr once it has
/// exited unsuccessfully within `limit`.
pub(crate) fn serve_must_fail(config: &Path, env: &[(String, String)], limit: Duration) -> String {
    let started = Instant::now();
    let mut child = serve_command(config, env)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kms-plugin");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kms-plugin with {} still runs after {limit:?}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        !status.success(),
        "startup must fail, exited with {status}:\n{stderr}"
    );
    stderr
}

/// Runs the test `name` (its full path, `module::test`) of this very test binary again in a child
/// process with `env` (for library calls whose dependencies read their environment once per
/// process); returns the child's output once that one test has passed in it.
pub(crate) fn run_test_in_child(name: &str, env: &[(String, String)]) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("child test process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child `{name}` failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child `{name}` ran no test:\n{text}"
    );
    text
}

/// One Status call on a private runtime in its own thread (callers may be inside a runtime).
pub(crate) fn probe_healthy(address: &SocketAddress) -> bool {
    let address = address.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            match kms_plugin::client::connect(&address, Duration::from_secs(1)).await {
                Ok(mut client) => client
                    .status(StatusRequest {})
                    .await
                    .map(|r| r.into_inner().healthz == "ok")
                    .unwrap_or(false),
                Err(_) => false,
            }
        })
    })
    .join()
    .unwrap_or(false)
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) async fn status(client: &mut KeyManagementServiceClient<Channel>) -> StatusResponse {
    client
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

pub(crate) async fn encrypt(
    client: &mut KeyManagementServiceClient<Channel>,
    plaintext: &[u8],
) -> EncryptResponse {
    client
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: uid(),
        })
        .await
        .expect("encrypt")
        .into_inner()
}

pub(crate) fn decrypt_request(sealed: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: uid(),
        key_id: sealed.key_id.clone(),
        annotations: sealed.annotations.clone(),
    }
}

pub(crate) async fn decrypt(
    client: &mut KeyManagementServiceClient<Channel>,
    sealed: &EncryptResponse,
) -> Result<Vec<u8>, tonic::Status> {
    client
        .decrypt(decrypt_request(sealed))
        .await
        .map(|r| r.into_inner().plaintext)
}

pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("rng");
    bytes
}

pub(crate) fn uid() -> String {
    let b = random_bytes(16);
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls Status every 100 ms until `ok(healthz, key_id)` holds; panics after `timeout` with
/// what it last saw. Returns that key_id.
pub(crate) async fn wait_status(
    client: &mut Client,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&str, &str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let StatusResponse {
            healthz, key_id, ..
        } = status(client).await;
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

/// Runs `count` calls of `call` over `workers` concurrent clients, returning the results in order.
pub(crate) async fn many<T: Send + 'static, F, Fut>(
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

/// Awaits `call` and checks it ended within `limit` (a call's deadline plus slack).
pub(crate) async fn bounded<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let value = call.await;
    assert!(
        started.elapsed() < limit,
        "{what} took {:?} (limit {limit:?})",
        started.elapsed()
    );
    value
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 GET to 127.0.0.1:`port`; returns the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let (code, _, body) = http_get_with(port, path, "");
    (code, body)
}

/// [`http_get`] with `headers` (each line ending in CRLF) added; returns the status code, the
/// response head and the body.
pub(crate) fn http_get_with(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or_default();
    (code, head, body)
}

/// The value of the sample `series` (name and labels exactly as exposed) on the plugin's
/// `/metrics` at 127.0.0.1:`port`; 0 when the series is not exposed yet.
pub(crate) fn metric(port: u16, series: &str) -> f64 {
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    body.lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.trim().parse().expect("metric value"))
        })
        .unwrap_or(0.0)
}

/// `promtool check metrics` on `text`; fails (never skips) when promtool is missing.
pub(crate) fn assert_promtool_accepts(text: &str, dir: &std::path::Path) {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).expect("write");
    promtool(&["check", "metrics"], dir, Some(&file));
}

/// Runs `promtool ARGS` in `dir` (stdin from `stdin`), insisting it succeeds; fails (never
/// skips) when promtool is missing.
pub(crate) fn promtool(args: &[&str], dir: &std::path::Path, stdin: Option<&std::path::Path>) {
    let mut command = std::process::Command::new("promtool");
    command.args(args).current_dir(dir);
    if let Some(file) = stdin {
        command.stdin(std::fs::File::open(file).expect("open"));
    }
    let out = command
        .output()
        .expect("promtool (Debian package prometheus; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
