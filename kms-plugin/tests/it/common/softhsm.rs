//! A fresh SoftHSM2 token per test, for the PKCS#11 backend.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, so every process that touches the token
//! (the plugin, `kms-plugin hsm init`, `kms-plugin rotate`) gets [`Hsm::env`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const TOKEN_LABEL: &str = "kms";
pub(crate) const KEY_LABEL: &str = "root";
pub(crate) const PIN: &str = "246810";
pub(crate) const SO_PIN: &str = "13579111";
/// Log target of the plugin's remote (token/KMS) calls, one `debug` line each.
pub(crate) const REMOTE_TARGET: &str = "kms_plugin::root_key::remote";

/// Fails (never skips) when SoftHSM2 is missing, saying how to provision it.
pub(crate) fn require_softhsm() {
    let tool = Command::new("softhsm2-util").arg("--version").output();
    assert!(
        tool.is_ok_and(|out| out.status.success()) && Path::new(MODULE).exists(),
        "SoftHSM2 is not installed (softhsm2-util and {MODULE} are needed): run `bash .ci/provision-softhsm.sh` \
         (apt-get install -y softhsm2) before these tests"
    );
}

/// A SoftHSM2 token directory with its own config file and PIN file, under a test's directory.
pub(crate) struct Hsm {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub tokens: PathBuf,
}

impl Hsm {
    /// Initialises a fresh token labelled [`TOKEN_LABEL`] under `dir` (no root key yet).
    pub(crate) fn new(dir: &Path) -> Self {
        Self::with_pin(dir, PIN)
    }

    /// [`Hsm::new`] with the user PIN `pin` (in the token and in the PIN file `dir/pin`).
    pub(crate) fn with_pin(dir: &Path, pin: &str) -> Self {
        require_softhsm();
        let (conf, tokens) = super::softhsm_token::init_token(dir, TOKEN_LABEL, pin, SO_PIN);
        Self {
            dir: dir.to_owned(),
            conf,
            tokens,
        }
    }

    /// The `SOFTHSM2_CONF` every process touching this token needs.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.display().to_string())]
    }

    /// The `backend:` section of a plugin config for this token.
    pub(crate) fn backend_yaml(&self, refresh: &str) -> String {
        self.backend_yaml_with_pin(refresh, &self.dir.join("pin"))
    }

    /// [`Hsm::backend_yaml`] with another PIN file.
    pub(crate) fn backend_yaml_with_pin(&self, refresh: &str, pin_file: &Path) -> String {
        format!(
            "backend:\n  kind: pkcs11\n  pkcs11:\n    module: {MODULE}\n    token_label: {TOKEN_LABEL}\n    \
             pin_file: {pin}\n    key_label: {KEY_LABEL}\n    max_sessions: 4\n    refresh_interval: {refresh}\n",
            pin = pin_file.display(),
        )
    }

    /// Runs the plugin binary against this token; panics with its output unless it succeeds.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = testkit::expect_success(
            Command::new(super::BIN)
                .args(args)
                .env("SOFTHSM2_CONF", &self.conf),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the first root key version: `kms-plugin hsm init --config <config>`.
    pub(crate) fn init_root_key(&self, config: &Path) -> String {
        let printed = self.cli(&["hsm", "init", "--config", config.to_str().expect("utf-8")]);
        assert!(printed.contains("pkcs11:root:"), "{printed}");
        printed
    }

    /// The token leaves (its files move out of SoftHSM's tokendir, as when an HSM is unplugged).
    pub(crate) fn remove_token(&self) {
        move_all(&self.tokens, &self.dir.join("tokens-away"));
    }

    /// The token returns.
    pub(crate) fn return_token(&self) {
        move_all(&self.dir.join("tokens-away"), &self.tokens);
    }
}

/// Moves every entry of `from` into `to`.
fn move_all(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("target dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        fs::rename(entry.path(), to.join(entry.file_name())).expect("rename");
    }
}

/// Remote calls of `op` (e.g. `wrap`, `unwrap`) in a JSON log written with [`REMOTE_TARGET`]
/// at debug level.
pub(crate) fn remote_calls(log: &str, op: &str) -> usize {
    let needle = format!("\"op\":\"{op}\"");
    log.lines()
        .filter(|l| l.contains(REMOTE_TARGET) && l.contains(&needle))
        .count()
}
