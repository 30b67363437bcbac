//! What the deployment files need to know of the shipped plugin configuration
//! (`deploy/config/kms-plugin.yaml`).

use crate::files::deploy;
use crate::yaml::{str_at, yaml};
use kms_config::{HumanDuration, PluginConfig};
use serde_yaml_ng::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The shipped plugin configuration, under `deploy/`.
pub const PLUGIN_CONFIG: &str = "config/kms-plugin.yaml";

/// What the deployment files need to know of the plugin configuration, read from its YAML.
///
/// The file is loaded with the real loader first (`PluginConfig::load`), so it is a valid
/// configuration; the values are then read from the YAML text itself, which keeps these tests
/// independent of how the config crate models them.
pub struct Plugin {
    /// `socket`: the socket file.
    pub socket: PathBuf,
    /// `socket_mode`, parsed as octal.
    pub socket_mode: u32,
    /// Whether `socket_uid` or `socket_gid` is set.
    pub socket_owner_set: bool,
    /// `backend.local.state_dir`.
    pub state_dir: PathBuf,
    /// `backend.kind`.
    pub backend_kind: String,
    /// `backend_timeout`.
    pub backend_timeout: Duration,
    /// `shutdown_grace`.
    pub shutdown_grace: Duration,
    /// `metrics_address`, when set.
    pub metrics_address: Option<String>,
}

/// Loads [`PLUGIN_CONFIG`] with the plugin's own loader, then reads [`Plugin`] from its YAML.
pub fn plugin_config() -> Plugin {
    let path = deploy(PLUGIN_CONFIG);
    if let Err(error) = PluginConfig::load(&path) {
        panic!(
            "the plugin's own loader rejects {}: {error}",
            path.display()
        );
    }
    let file = "deploy/config/kms-plugin.yaml";
    let value = yaml(PLUGIN_CONFIG);
    let socket = str_at(&value, &["socket"], file);
    assert!(
        socket.starts_with('/'),
        "{file}: socket {socket:?} must be an absolute file path: kube-apiserver reaches it through a mounted directory"
    );
    let mode = str_at(&value, &["socket_mode"], file);
    let backend_kind = str_at(&value, &["backend", "kind"], file).to_owned();
    let state_dir = value
        .get("backend")
        .and_then(|b| b.get("local"))
        .and_then(|l| l.get("state_dir"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{file}: backend.local.state_dir"));
    Plugin {
        socket: PathBuf::from(socket),
        socket_mode: u32::from_str_radix(mode, 8)
            .unwrap_or_else(|_| panic!("{file}: socket_mode {mode:?}")),
        socket_owner_set: value.get("socket_uid").is_some() || value.get("socket_gid").is_some(),
        state_dir: PathBuf::from(state_dir),
        backend_kind,
        backend_timeout: duration(str_at(&value, &["backend_timeout"], file), file),
        shutdown_grace: duration(str_at(&value, &["shutdown_grace"], file), file),
        metrics_address: value
            .get("metrics_address")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// The socket file of `config`.
pub fn socket_path(config: &Plugin) -> PathBuf {
    config.socket.clone()
}

/// The directory of the socket: what pods and units share, never the socket file itself.
pub fn socket_dir(config: &Plugin) -> PathBuf {
    config
        .socket
        .parent()
        .expect("the socket path has a directory")
        .to_owned()
}

/// The local backend's state directory (the shipped backend must be local).
pub fn state_dir(config: &Plugin) -> PathBuf {
    assert_eq!(
        config.backend_kind, "local",
        "deploy/config: the shipped backend is local"
    );
    config.state_dir.clone()
}

/// `text` read as the plugin config reads durations (`2s`, `500ms`, `1h`) in `file`.
pub fn duration(text: &str, file: &str) -> Duration {
    text.parse::<HumanDuration>()
        .unwrap_or_else(|error| panic!("{file}: duration {text:?}: {error}"))
        .get()
}
