//! The shipped plugin configuration: the real loader accepts it, its paths are the documented
//! ones, and each commented backend alternative is valid once uncommented.

use cross_crate_tests::files::{deploy, read};
use cross_crate_tests::plugin::{plugin_config, socket_path, state_dir};
use cross_crate_tests::yaml::str_at;
use kms_config::PluginConfig;
use serde_yaml_ng::Value;
use std::path::Path;

#[test]
fn plugin_config_loads_with_the_real_loader_and_keeps_the_documented_paths() {
    let config = plugin_config();
    assert_eq!(
        socket_path(&config),
        Path::new("/var/run/kms-plugin/kms.sock")
    );
    assert_eq!(state_dir(&config), Path::new("/var/lib/kms-plugin"));
    assert_eq!(
        config.socket_mode & 0o007,
        0,
        "deploy/config: the socket must not be reachable by others (mode {:o})",
        config.socket_mode
    );
    // The socket belongs to the plugin's own uid/gid: socket_uid/socket_gid would need
    // CAP_CHOWN, which neither the static pod nor the systemd unit grants.
    assert!(
        !config.socket_owner_set,
        "deploy/config: socket_uid/socket_gid need CAP_CHOWN"
    );
    if let Some(address) = &config.metrics_address {
        assert!(
            address.starts_with("127.0.0.1:"),
            "deploy/config: metrics_address {address} must stay on loopback"
        );
    }
}

/// Uncomments the `# kind: NAME` block of the config and loads it instead of the local backend.
fn alternative_backend(name: &str) -> Value {
    let path = deploy("config/kms-plugin.yaml");
    let text = read(&path);
    let start_marker = format!("  # kind: {name}");
    let mut block = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == start_marker {
            inside = true;
        }
        if inside {
            match line.strip_prefix("  # ") {
                Some(rest) => block.push(format!("  {rest}")),
                None => break,
            }
        }
    }
    assert!(
        !block.is_empty(),
        "deploy/config: no commented `kind: {name}` alternative"
    );
    let mut edited: Vec<String> = text
        .lines()
        .filter(|line| line.trim() != "kind: local")
        .map(str::to_owned)
        .collect();
    edited.extend(block);
    let edited = edited.join("\n");
    let config = PluginConfig::parse(&edited, &path)
        .unwrap_or_else(|error| panic!("the commented {name} alternative: {error}\n{edited}"));
    config
        .validate(&format!("the commented {name} alternative"))
        .unwrap_or_else(|error| panic!("{error}"));
    let value: Value = serde_yaml_ng::from_str(&edited).expect("parsed above");
    assert_eq!(str_at(&value, &["backend", "kind"], "alternative"), name);
    value
}

#[test]
fn commented_backend_alternatives_are_valid_when_uncommented() {
    let pkcs11 = alternative_backend("pkcs11");
    // The PIN file must be inside the config directory the pod mounts.
    let pin = str_at(
        &pkcs11,
        &["backend", "pkcs11", "pin_file"],
        "the pkcs11 alternative",
    );
    assert!(
        pin.starts_with("/etc/kms-plugin/"),
        "PIN file {pin} is outside /etc/kms-plugin"
    );
    alternative_backend("aws");
}
