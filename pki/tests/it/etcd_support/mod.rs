//! What the tests running a real etcd member (Debian `etcd-server`, installed by
//! `.ci/provision-etcd.sh`) share: starting it as kubeadm's manifest does (client and peer TLS
//! from a cert dir), requests to its gRPC gateway with a client certificate, waiting for it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{append_log, etcd_tls_args};

/// Starts etcd member `name` with its data in `data`, serving clients at the URL `client` and
/// peers at the URL `peer`, with kubeadm's TLS flags for the cert dir `pki`, then the
/// `cluster` arguments (`--initial-cluster ...`); its output is appended to `log`.
pub(crate) fn spawn_etcd(
    name: &str,
    data: &Path,
    client: &str,
    peer: &str,
    cluster: &[&str],
    pki: &Path,
    log: &Path,
) -> Child {
    let out = append_log(log);
    Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .args(cluster)
        .args(etcd_tls_args(pki))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("etcd not found: run .ci/provision-etcd.sh")
}

/// A client certificate and key, with the CA bundle that verifies the server.
pub(crate) struct ClientTls<'a> {
    pub ca: &'a Path,
    pub crt: &'a Path,
    pub key: &'a Path,
}

/// POSTs `body` to `url` (etcd's gRPC gateway) presenting `tls`; `Err` carries curl's message.
pub(crate) fn post(tls: &ClientTls, url: &str, body: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
        .arg(tls.ca)
        .arg("--cert")
        .arg(tls.crt)
        .arg("--key")
        .arg(tls.key)
        .args(["-X", "POST", "-d", body])
        .arg(url)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Polls `ready` every 100 ms until it answers `Ok`; after `timeout`, panics with its last error
/// and etcd's `log`.
pub(crate) fn wait_ready(
    timeout: Duration,
    log: &Path,
    ready: impl Fn() -> Result<String, String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match ready() {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!(
                "etcd not ready: {e}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
