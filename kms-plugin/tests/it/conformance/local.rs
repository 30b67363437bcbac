//! The local backend: versioned root key files in a state directory.
//!
//! It has no remote side: nothing to count remotely (`/metrics` counts its operations) and
//! nothing to take down, so [`super::fault_cases`] does not apply. Its failure mode is a broken
//! state directory, which [`super::startup_refusal`] covers (a corrupt key file is refused at
//! startup with a message naming the file).

use super::Backend;
use crate::common::{BIN, Plugin};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A state directory (created by the first plugin that serves it).
pub(crate) struct Local {
    state_dir: PathBuf,
}

impl Backend for Local {
    async fn create(dir: &Path) -> Self {
        Self {
            state_dir: dir.join("state"),
        }
    }

    fn backend_yaml(&self) -> String {
        format!(
            "backend:\n  kind: local\n  local:\n    state_dir: {}\n    poll_interval: 200ms\n",
            self.state_dir.display()
        )
    }

    /// `kms-plugin rotate --config`, then SIGHUP (the plugin would also notice by polling).
    async fn rotate(&mut self, plugin: &Plugin) {
        testkit::expect_success(
            Command::new(BIN)
                .args(["rotate", "--config"])
                .arg(&plugin.config),
        );
        plugin.signal("HUP");
    }

    fn unknown_key_id(&self) -> String {
        "local:v99:000000000000000000000000".into()
    }

    fn remote_ops(&self, _: &Plugin, _: &str) -> Option<usize> {
        None
    }

    fn outages(&self) -> Vec<&'static str> {
        Vec::new()
    }

    async fn go_down(&mut self, outage: &str) {
        panic!("the local backend has no remote side to take down ({outage})")
    }

    async fn come_back(&mut self, outage: &str) {
        panic!("the local backend has no remote side to bring back ({outage})")
    }

    /// Truncates the primary key file (keeping its 0600 mode).
    async fn break_root_key(&mut self) -> Vec<String> {
        let file = self.state_dir.join("root-key-v1.key");
        std::fs::write(&file, b"short").expect("corrupt the key file");
        vec![
            file.display().to_string(),
            "expected 32 key bytes, found 5".into(),
        ]
    }

    fn secrets(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "key"))
            .map(|p| std::fs::read(p).expect("key file"))
            .filter(|key| key.len() == 32)
            .collect()
    }
}
