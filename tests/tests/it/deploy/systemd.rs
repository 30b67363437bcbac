//! The plugin's systemd unit: sandboxed, and running the static pod's command with the config's
//! directories and user.

use cross_crate_tests::command_line::{assert_subcommand, flag_value};
use cross_crate_tests::files::{deploy, read};
use cross_crate_tests::plugin::{duration, plugin_config, socket_dir, socket_path, state_dir};
use cross_crate_tests::pod::{STATIC_POD, static_pod_command};
use cross_crate_tests::tmpfiles::same_run_path;
use cross_crate_tests::unit::{is_yes, last, last_words, unit, values, words};
use cross_crate_tests::yaml::{at, yaml};
use std::path::Path;

#[test]
fn systemd_unit_is_sandboxed_and_uses_the_config_paths() {
    let file = "deploy/systemd/kms-plugin.service";
    let config = plugin_config();
    let unit = unit("systemd/kms-plugin.service");
    let service = "Service";

    assert!(
        words(&unit, "Unit", "Before", file).contains(&"kubelet.service".to_owned()),
        "{file}: Before=kubelet.service"
    );
    assert_eq!(last(&unit, service, "ProtectSystem", file), "strict");
    for key in [
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "RuntimeDirectoryPreserve",
    ] {
        assert!(is_yes(last(&unit, service, key, file)), "{file}: {key}=yes");
    }
    // An empty CapabilityBoundingSet= drops every capability; a later non-empty one would add back.
    assert!(
        values(&unit, service, "CapabilityBoundingSet", file)
            .iter()
            .all(String::is_empty),
        "{file}: CapabilityBoundingSet must be empty"
    );
    assert!(
        unit[service]
            .get("AmbientCapabilities")
            .is_none_or(|v| v.iter().all(String::is_empty)),
        "{file}: no ambient capabilities"
    );
    assert!(
        words(&unit, service, "SystemCallFilter", file).contains(&"@system-service".to_owned()),
        "{file}: SystemCallFilter"
    );
    let families = words(&unit, service, "RestrictAddressFamilies", file);
    assert!(
        families.contains(&"AF_UNIX".to_owned()),
        "{file}: AF_UNIX must be allowed"
    );
    if config.backend_kind == "aws" || config.metrics_address.is_some() {
        assert!(
            families.contains(&"AF_INET".to_owned()),
            "{file}: the AWS backend and metrics_address need AF_INET"
        );
    }
    assert_eq!(last(&unit, service, "Restart", file), "always");
    assert_eq!(last(&unit, service, "KillSignal", file), "SIGTERM");
    let stop = duration(last(&unit, service, "TimeoutStopSec", file), file);
    assert!(
        stop > config.shutdown_grace,
        "{file}: TimeoutStopSec must exceed shutdown_grace"
    );

    // The directories systemd creates are the ones the config names.
    let runtime = last(&unit, service, "RuntimeDirectory", file);
    assert!(
        same_run_path(&format!("/run/{runtime}"), &socket_dir(&config)),
        "{file}: RuntimeDirectory={runtime} is not the socket's directory"
    );
    let state = last(&unit, service, "StateDirectory", file);
    assert_eq!(
        Path::new("/var/lib").join(state),
        state_dir(&config),
        "{file}: StateDirectory"
    );
    assert_eq!(last(&unit, service, "StateDirectoryMode", file), "0700");
    let configuration = last(&unit, service, "ConfigurationDirectory", file);

    let exec = last_words(&unit, service, "ExecStart", file);
    assert_subcommand(&exec, "serve", &format!("{file}: ExecStart"));
    let config_file = flag_value(&exec, "--config")
        .unwrap_or_else(|| panic!("{file}: ExecStart has no --config"));
    assert_eq!(
        Path::new(&config_file).parent(),
        Some(Path::new("/etc").join(configuration).as_path()),
        "{file}: config outside ConfigurationDirectory"
    );
    // Same binary and config file as the static pod.
    let pod_command = static_pod_command();
    assert_eq!(
        exec, pod_command,
        "{file}: ExecStart differs from the static pod's command"
    );

    let post = last(&unit, service, "ExecStartPost", file);
    assert!(
        post.contains(&format!(
            "status --socket {}",
            socket_path(&config).display()
        )),
        "{file}: ExecStartPost must wait for Status on the configured socket"
    );

    // The service user is the sysusers entry, with the static pod's uid.
    let user = last(&unit, service, "User", file);
    let sysusers = read(&deploy("systemd/kms-plugin.sysusers.conf"));
    let entry: Vec<&str> = sysusers
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(user))
        .unwrap_or_else(|| panic!("kms-plugin.sysusers.conf does not create {user}"))
        .split_whitespace()
        .collect();
    let pod = yaml(STATIC_POD);
    let uid = at(&pod, &["spec", "securityContext", "runAsUser"], STATIC_POD)
        .as_u64()
        .expect("runAsUser");
    assert_eq!(
        entry[2],
        uid.to_string(),
        "sysusers uid of {user} differs from the static pod's runAsUser"
    );
}
