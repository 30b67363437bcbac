//! The PKCS#11 backend against a fresh SoftHSM2 token per test.
//!
//! Rotation is `kms-plugin rotate --config` (a new key version in the token) and SIGHUP; the
//! outage moves the token's files out of SoftHSM's token directory (an unplugged HSM) and
//! back; remote operations are counted from the plugin's debug log of token calls.

use super::Backend;
use crate::common::softhsm::{Hsm, PIN, remote_calls};
use crate::common::{Plugin, plugin_config};
use std::path::Path;

/// A token with its first root key version (`kms-plugin hsm init`).
pub(crate) struct Pkcs11 {
    hsm: Hsm,
}

impl Backend for Pkcs11 {
    async fn create(dir: &Path) -> Self {
        let hsm = Hsm::new(dir);
        let config = dir.join("init.yaml");
        let yaml = plugin_config(&dir.join("init.sock"), "1s", "", &hsm.backend_yaml("1h"));
        std::fs::write(&config, yaml).expect("init config");
        hsm.init_root_key(&config);
        Self { hsm }
    }

    fn backend_yaml(&self) -> String {
        self.hsm.backend_yaml("1h")
    }

    fn env(&self) -> Vec<(String, String)> {
        self.hsm.env()
    }

    async fn rotate(&mut self, plugin: &Plugin) {
        let printed = self
            .hsm
            .cli(&["rotate", "--config", plugin.config.to_str().expect("utf-8")]);
        assert!(
            printed.contains("new primary root key: pkcs11:root:"),
            "{printed}"
        );
        plugin.signal("HUP");
    }

    fn unknown_key_id(&self) -> String {
        "pkcs11:root:00000000000000090000000000000000".into()
    }

    fn remote_ops(&self, plugin: &Plugin, op: &str) -> Option<usize> {
        Some(remote_calls(&plugin.logs(), op))
    }

    fn outages(&self) -> Vec<&'static str> {
        vec!["token removed"]
    }

    async fn go_down(&mut self, _: &str) {
        self.hsm.remove_token();
    }

    async fn come_back(&mut self, _: &str) {
        self.hsm.return_token();
    }

    /// The PIN file now holds a wrong PIN.
    async fn break_root_key(&mut self) -> Vec<String> {
        std::fs::write(self.hsm.dir.join("pin"), "999999\n").expect("pin file");
        vec!["rejected the PIN".into()]
    }

    fn secrets(&self) -> Vec<Vec<u8>> {
        vec![PIN.as_bytes().to_vec(), b"999999".to_vec()]
    }
}
