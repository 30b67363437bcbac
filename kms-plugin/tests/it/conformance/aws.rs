//! The AWS KMS backend against moto's KMS server, one per test, behind a TCP relay.
//!
//! Rotation re-points the alias at a new key, lists the old key in the plugin's
//! `previous_key_ids` (so its data decrypts after a restart) and sends SIGHUP; the outages freeze moto
//! (SIGSTOP: requests hang) and close the relay (connections refused); remote operations are
//! counted from moto's request log, which does not name the operation, so every KMS request
//! counts.
//!
//! moto deviates from AWS KMS on a wrapped KEK whose key reference is damaged, or a Decrypt
//! naming another key: it answers `AccessDeniedException` (moto `kms/utils.py` and
//! `kms/models.py` `decrypt`) where AWS answers `InvalidCiphertextException` or
//! `IncorrectKeyException`. The plugin rightly treats "access denied" as a refusal, not an
//! integrity failure; the tamper scenario tolerates exactly that for those cases.

use super::{Backend, EmulatorDeviation};
use crate::common::Plugin;
use crate::common::moto::{ALIAS, Moto, Relay, backend_yaml, create_key, plugin_env, point_alias};
use std::path::{Path, PathBuf};

/// moto with a key behind [`ALIAS`], and a relay the plugin talks through.
pub(crate) struct Aws {
    dir: PathBuf,
    moto: Moto,
    kms: aws_sdk_kms::Client,
    relay: Relay,
    /// Key ARNs the alias pointed at before the current one.
    previous: Vec<String>,
    current: String,
}

const HUNG: &str = "hung KMS (moto frozen with SIGSTOP)";
const STOPPED: &str = "stopped KMS (relay closed: connections refused)";

impl Backend for Aws {
    async fn create(dir: &Path) -> Self {
        let (moto, kms, key) = Moto::start_with_key(dir).await;
        let relay = Relay::start(moto.port).await;
        Self {
            dir: dir.to_owned(),
            moto,
            kms,
            relay,
            previous: Vec::new(),
            current: key,
        }
    }

    fn backend_yaml(&self) -> String {
        backend_yaml(&self.relay.endpoint(), "test-cluster")
    }

    fn env(&self) -> Vec<(String, String)> {
        plugin_env(&self.dir)
    }

    async fn rotate(&mut self, plugin: &Plugin) {
        let key = create_key(&self.kms).await;
        point_alias(&self.kms, &key, false).await;
        self.previous
            .push(std::mem::replace(&mut self.current, key));
        let yaml = std::fs::read_to_string(&plugin.config).expect("plugin config");
        let key_line = format!("    key_id: {ALIAS}\n");
        let listed = format!(
            "{key_line}    previous_key_ids: [{}]\n",
            self.previous.join(", ")
        );
        let yaml: String = yaml
            .lines()
            .filter(|line| !line.trim_start().starts_with("previous_key_ids:"))
            .map(|line| format!("{line}\n"))
            .collect::<String>()
            .replace(&key_line, &listed);
        std::fs::write(&plugin.config, yaml).expect("plugin config");
        plugin.signal("HUP");
    }

    fn unknown_key_id(&self) -> String {
        "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000".into()
    }

    fn remote_ops(&self, _: &Plugin, _: &str) -> Option<usize> {
        Some(self.moto.requests())
    }

    fn outages(&self) -> Vec<&'static str> {
        vec![HUNG, STOPPED]
    }

    async fn go_down(&mut self, outage: &str) {
        match outage {
            HUNG => self.moto.signal("STOP"),
            STOPPED => self.relay.stop(),
            other => panic!("unknown outage {other}"),
        }
    }

    async fn come_back(&mut self, outage: &str) {
        match outage {
            HUNG => self.moto.signal("CONT"),
            STOPPED => self.relay.resume().await,
            other => panic!("unknown outage {other}"),
        }
    }

    /// The alias the config names is deleted.
    async fn break_root_key(&mut self) -> Vec<String> {
        self.kms
            .delete_alias()
            .alias_name(ALIAS)
            .send()
            .await
            .expect("DeleteAlias");
        vec![ALIAS.into()]
    }

    fn secrets(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn emulator_deviation(&self) -> Option<EmulatorDeviation> {
        Some(EmulatorDeviation {
            code: tonic::Code::Internal,
            log_text: "AccessDeniedException",
        })
    }
}
