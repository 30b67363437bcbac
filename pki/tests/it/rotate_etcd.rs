//! A real etcd (Debian `etcd-server`, installed by `.ci/provision-etcd.sh`) serving with the
//! generated certificates (`--client-cert-auth`, `--trusted-ca-file etcd/ca.crt`) keeps
//! accepting kube-apiserver's etcd client certificate through an etcd CA rotation, restarted
//! between phases as the restart sequence says.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::etcd_support::{self, ClientTls};
use crate::rotate_support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use rotate_support::*;

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
        let cluster = format!("cp1={peer}");
        self.child = Some(etcd_support::spawn_etcd(
            "cp1",
            &self.data,
            &client,
            &peer,
            &["--initial-cluster", &cluster],
            &self.pki,
            &self.log,
        ));
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
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
        let url = format!("https://127.0.0.1:{}{path}", self.client_port);
        etcd_support::post(&ClientTls { ca, crt, key }, &url, body)
    }

    /// Reads key `foo` (base64 `Zm9v`) with the given client certificate.
    fn read_foo(&self, ca: &Path, crt: &Path, key: &Path) -> Result<String, String> {
        self.post(ca, crt, key, "/v3/kv/range", r#"{"key":"Zm9v"}"#)
    }

    /// Waits until etcd serves a client presenting `crt`.
    fn wait_ready(&self, ca: &Path, crt: &Path, key: &Path) {
        etcd_support::wait_ready(Duration::from_secs(20), &self.log, || {
            self.read_foo(ca, crt, key)
        });
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
    ok(&c.cmd(&["rotate", "etcd-ca", "switch", "--confirm-nodes"]));
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
