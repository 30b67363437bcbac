//! Test harness: runs the real `kms-plugin` binary on a real Unix socket.
#![allow(dead_code, missing_docs)]

pub mod raw_h2;

use kms_config::SocketAddress;
use kms_proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::kms_v2::{
    DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_kms-plugin");

/// A running plugin with its own temp directory, socket, state and log file.
pub struct Plugin {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// A configuration for the local backend with fast polling and probing.
pub fn local_config(socket: &Path, state_dir: &Path, extra: &str) -> String {
    format!(
        "socket: {}\nhealth_probe_interval: 1s\nshutdown_grace: 5s\nlog_level: info\n{extra}backend:\n  kind: local\n  local:\n    state_dir: {}\n    poll_interval: 200ms\n",
        socket.display(),
        state_dir.display()
    )
}

impl Plugin {
    /// Starts a plugin on the local backend in a fresh temp directory.
    pub fn start_local(temp: &Path) -> Self {
        Self::start_with(temp, "")
    }

    /// Starts a plugin whose config has `extra` top-level lines.
    pub fn start_with(temp: &Path, extra: &str) -> Self {
        let socket = temp.join("kms.sock");
        let state_dir = temp.join("state");
        let config = temp.join("config.yaml");
        std::fs::write(&config, local_config(&socket, &state_dir, extra)).expect("write config");
        let mut plugin = Self {
            child: None,
            dir: temp.to_owned(),
            socket,
            state_dir,
            config,
            log: temp.join("plugin.log"),
        };
        plugin.spawn();
        plugin
    }

    /// Spawns the binary (again) with the same config and waits until it is healthy.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kms-plugin");
        self.child = Some(child);
        self.wait_healthy();
    }

    pub fn address(&self) -> SocketAddress {
        SocketAddress::Path(self.socket.clone())
    }

    /// Waits until Status reports healthy (or panics after 20 s with the log).
    pub fn wait_healthy(&mut self) {
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

    pub async fn client(&self) -> KeyManagementServiceClient<Channel> {
        kms_plugin::client::connect(&self.address(), Duration::from_secs(10))
            .await
            .expect("connect")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name with the `kill` utility.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit (at most 15 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(15))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
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

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an admin subcommand against this plugin's state directory.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .output()
            .expect("run kms-plugin")
    }
}

/// One Status call on a private runtime in its own thread (callers may be inside a runtime).
pub fn probe_healthy(address: &SocketAddress) -> bool {
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

pub async fn status(client: &mut KeyManagementServiceClient<Channel>) -> StatusResponse {
    client
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

pub async fn encrypt(
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

pub fn decrypt_request(sealed: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: uid(),
        key_id: sealed.key_id.clone(),
        annotations: sealed.annotations.clone(),
    }
}

pub async fn decrypt(
    client: &mut KeyManagementServiceClient<Channel>,
    sealed: &EncryptResponse,
) -> Result<Vec<u8>, tonic::Status> {
    client
        .decrypt(decrypt_request(sealed))
        .await
        .map(|r| r.into_inner().plaintext)
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("rng");
    bytes
}

pub fn uid() -> String {
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
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
