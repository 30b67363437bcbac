//! A real etcd (Debian `etcd-server`, installed by `.ci/provision-etcd.sh`) serving with the
//! generated certificates (`--client-cert-auth`, `--trusted-ca-file etcd/ca.crt`) keeps
//! accepting kube-apiserver's etcd client certificate through an etcd CA rotation, restarted
//! between phases as the restart sequence says.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::rotate_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rotate_support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An etcd member started from the cert dir; stopped (SIGTERM, then SIGKILL) on drop.
struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    pki: PathBuf,
    log: PathBuf,
}

impl Etcd {
    fn start(pki: &Path, data: &Path, log: &Path) -> Etcd {
        let mut e = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data: data.to_path_buf(),
            pki: pki.to_path_buf(),
            log: log.to_path_buf(),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let client = format!("https://127.0.0.1:{}", self.client_port);
        let peer = format!("https://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", "cp1", "--data-dir"])
            .arg(&self.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("cp1={peer}")])
            .args(etcd_tls_args(&self.pki))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd not found: run .ci/provision-etcd.sh");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// POST to etcd's gRPC gateway with a client certificate; `Err` carries curl's message.
    fn post(
        &self,
        ca: &Path,
        crt: &Path,
        key: &Path,
        path: &str,
        body: &str,
    ) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(ca)
            .arg("--cert")
            .arg(crt)
            .arg("--key")
            .arg(key)
            .args(["-X", "POST", "-d", body])
            .arg(format!("https://127.0.0.1:{}{path}", self.client_port))
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Reads key `foo` (base64 `Zm9v`) with the given client certificate.
    fn read_foo(&self, ca: &Path, crt: &Path, key: &Path) -> Result<String, String> {
        self.post(ca, crt, key, "/v3/kv/range", r#"{"key":"Zm9v"}"#)
    }

    /// Waits until etcd serves a client presenting `crt`.
    fn wait_ready(&self, ca: &Path, crt: &Path, key: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.read_foo(ca, crt, key) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "etcd not ready: {e}\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn etcd_keeps_serving_the_apiserver_client_through_an_etcd_ca_rotation() {
    let c = Cluster::initialized();
    let ca = c.path("etcd/ca.crt");
    let old = keep(&c, "old", &["apiserver-etcd-client"]);
    let (old_crt, old_key) = (
        old.join("apiserver-etcd-client.crt"),
        old.join("apiserver-etcd-client.key"),
    );
    let (cur_crt, cur_key) = (
        c.path("apiserver-etcd-client.crt"),
        c.path("apiserver-etcd-client.key"),
    );
    let data = c.root().join("etcd-data");
    let mut etcd = Etcd::start(&c.pki(), &data, &c.root().join("etcd.log"));
    etcd.wait_ready(&ca, &cur_crt, &cur_key);
    // value "bar" (YmFy), written with the old client certificate
    etcd.post(
        &ca,
        &cur_crt,
        &cur_key,
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmFy"}"#,
    )
    .unwrap();
    let has_value = |r: Result<String, String>| {
        let r = r.unwrap();
        assert!(r.contains("YmFy"), "{r}");
    };

    // start: etcd restarted with trusted CA = old+new; the old client certificate works.
    ok(&c.cmd(&["rotate", "etcd-ca", "start"]));
    etcd.restart();
    etcd.wait_ready(&ca, &cur_crt, &cur_key);
    has_value(etcd.read_foo(&ca, &old_crt, &old_key));

    // switch: etcd serves a new-CA certificate; old (kept copy) and new client certs both work.
    ok(&c.cmd(&["rotate", "etcd-ca", "switch"]));
    assert_ne!(read(&cur_crt), read(&old_crt));
    etcd.restart();
    etcd.wait_ready(&ca, &cur_crt, &cur_key);
    has_value(etcd.read_foo(&ca, &cur_crt, &cur_key));
    has_value(etcd.read_foo(&ca, &old_crt, &old_key));
    // The health-check client (liveness probe) was re-issued too.
    has_value(etcd.read_foo(
        &ca,
        &c.path("etcd/healthcheck-client.crt"),
        &c.path("etcd/healthcheck-client.key"),
    ));

    // finish: only the new CA is trusted; the old client certificate is refused.
    ok(&c.cmd(&["rotate", "etcd-ca", "finish"]));
    etcd.restart();
    etcd.wait_ready(&ca, &cur_crt, &cur_key);
    has_value(etcd.read_foo(&ca, &cur_crt, &cur_key));
    let refused = etcd.read_foo(&ca, &old_crt, &old_key);
    assert!(
        refused.is_err(),
        "old client certificate still accepted: {refused:?}"
    );
    etcd.stop();
}
