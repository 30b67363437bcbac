//! moto's KMS server for the AWS backend: one `moto_server` per test on a free port, counting
//! KMS requests from its own request log, with a key behind [`ALIAS`] and a TCP [`Relay`] in
//! front of it to take KMS away and bring it back.

use super::{Plugin, free_port, plugin_config, signal_pid};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const ALIAS: &str = "alias/kms-plugin-test";
pub(crate) const REGION: &str = "us-east-1";

/// A `moto_server` on 127.0.0.1, logging each HTTP request to a file; killed on drop.
pub(crate) struct Moto {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Moto {
    /// Starts moto; fails (never skips) when it is not installed, saying how to provision it.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with_env(dir, &[])
    }

    /// [`Moto::start`] with extra environment for the server (e.g. moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`, after which it checks every request's credentials).
    pub(crate) fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Self {
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
            .envs(env.iter().copied())
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

    /// [`Moto::start`] with a fresh symmetric key behind [`ALIAS`], where every AWS test starts:
    /// moto, its SDK client and the key's ARN.
    pub(crate) async fn start_with_key(dir: &Path) -> (Self, aws_sdk_kms::Client, String) {
        let moto = Self::start(dir);
        let kms = moto.sdk();
        let key = create_key(&kms).await;
        point_alias(&kms, &key, true).await;
        (moto, kms, key)
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// KMS requests moto has answered so far (every KMS call is one `POST /`).
    pub(crate) fn requests(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"POST / HTTP/1.1\""))
            .count()
    }

    /// Freezes (`STOP`) or thaws (`CONT`) moto: a frozen KMS accepts requests and never answers.
    pub(crate) fn signal(&self, name: &str) {
        signal_pid(self.child.id(), name);
    }

    /// An SDK client for moto, to create keys and move the alias.
    pub(crate) fn sdk(&self) -> aws_sdk_kms::Client {
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
        signal_pid(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a symmetric key; returns its ARN.
pub(crate) async fn create_key(kms: &aws_sdk_kms::Client) -> String {
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

/// Points [`ALIAS`] at `key`, creating the alias if it does not exist.
pub(crate) async fn point_alias(kms: &aws_sdk_kms::Client, key: &str, create: bool) {
    if create {
        kms.create_alias()
            .alias_name(ALIAS)
            .target_key_id(key)
            .send()
            .await
            .expect("CreateAlias");
    } else {
        kms.update_alias()
            .alias_name(ALIAS)
            .target_key_id(key)
            .send()
            .await
            .expect("UpdateAlias");
    }
}

/// The `backend:` section of a plugin config using [`ALIAS`] at `endpoint`.
pub(crate) fn backend_yaml(endpoint: &str, cluster: &str) -> String {
    format!(
        "backend:\n  kind: aws\n  aws:\n    key_id: {ALIAS}\n    region: {REGION}\n    endpoint: {endpoint}\n    \
         key_refresh_interval: 1h\n    max_attempts: 2\n    attempt_timeout: 500ms\n    \
         operation_timeout: 1500ms\n    startup_timeout: 3s\n    encryption_context:\n      \
         kubernetes.io/cluster: {cluster}\n"
    )
}

/// Launches plugin `name` in `dir` on the AWS backend (`backend`, see [`backend_yaml`]) with
/// the health probe every `probe`, `extra` top-level lines and [`plugin_env`]. For
/// multi-threaded async tests: waits for health in `block_in_place`.
pub(crate) fn launch_plugin(
    dir: &Path,
    name: &str,
    probe: &str,
    extra: &str,
    backend: &str,
) -> Plugin {
    let yaml = plugin_config(&Plugin::socket_of(dir, name), probe, extra, backend);
    tokio::task::block_in_place(|| Plugin::launch(dir, name, &yaml, plugin_env(dir)))
}

/// Dummy credentials, and empty shared AWS files in `dir` so no profile of this machine is used
/// ([`super::serve_command`] also drops `AWS_PROFILE` and `AWS_SESSION_TOKEN`).
pub(crate) fn plugin_env(dir: &Path) -> Vec<(String, String)> {
    for name in ["aws-config", "aws-credentials"] {
        fs::write(dir.join(name), "").expect("empty AWS file");
    }
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), path("aws-config")),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            path("aws-credentials"),
        ),
    ]
}

/// A TCP relay in front of moto: stopping it refuses connections the way a stopped KMS
/// endpoint does, and restarting it on the same port brings KMS back with its keys intact
/// (a restarted moto would have forgotten them). Runs on the caller's tokio runtime.
pub(crate) struct Relay {
    pub port: u16,
    target: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    pub(crate) async fn start(target: u16) -> Self {
        let mut relay = Self {
            port: free_port(),
            target,
            tasks: Vec::new(),
            conns: Default::default(),
        };
        relay.resume().await;
        relay
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens again on the same port.
    pub(crate) async fn resume(&mut self) {
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
    pub(crate) fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for conn in self.conns.lock().expect("conns").drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
