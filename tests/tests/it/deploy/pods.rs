//! The plugin's static pod: its command, mounts, probes and security context, and the host
//! directories tmpfiles.d creates for it.

use cross_crate_tests::command_line::{assert_subcommand, flag_value};
use cross_crate_tests::files::{deploy, read};
use cross_crate_tests::plugin::{duration, plugin_config, socket_dir, socket_path, state_dir};
use cross_crate_tests::pod::{
    STATIC_POD, assert_read_only_host_dir, container_command, host_dir_mount, host_path_volumes,
    only_container,
};
use cross_crate_tests::tmpfiles::{same_run_path, tmpfiles_entries};
use cross_crate_tests::yaml::{at, str_at, strings, yaml};
use serde_yaml_ng::Value;
use std::path::Path;
use std::time::Duration;

#[test]
fn static_pod_runs_the_plugin_with_its_config_socket_and_state() {
    let file = "deploy/static-pod/kms-plugin.yaml";
    let config = plugin_config();
    let pod = yaml(STATIC_POD);
    assert_eq!(str_at(&pod, &["kind"], file), "Pod");
    assert_eq!(
        str_at(&pod, &["metadata", "namespace"], file),
        "kube-system"
    );
    let spec = at(&pod, &["spec"], file);
    assert_eq!(
        spec.get("hostNetwork").and_then(Value::as_bool),
        Some(true),
        "{file}: hostNetwork"
    );
    assert_eq!(
        str_at(spec, &["priorityClassName"], file),
        "system-node-critical"
    );
    if let Some(priority) = spec.get("priority") {
        assert_eq!(
            priority.as_i64(),
            Some(2_000_001_000),
            "{file}: priority must be system-node-critical's"
        );
    }
    let container = only_container(&pod, file);
    let volumes = host_path_volumes(&pod, file);

    // Command: serve --config FILE, with FILE inside a read-only host directory mounted 1:1.
    let command = container_command(container, file);
    assert_subcommand(&command, "serve", &format!("{file}: command"));
    let config_file = flag_value(&command, "--config")
        .unwrap_or_else(|| panic!("{file}: no --config in {command:?}"));
    let config_dir = Path::new(&config_file).parent().expect("config dir");
    assert_read_only_host_dir(container, &volumes, config_dir, file);
    // The shipped config is installed under that name.
    assert_eq!(
        config_file, "/etc/kms-plugin/config.yaml",
        "{file}: the README installs the config as /etc/kms-plugin/config.yaml"
    );
    // Flags on the command line would override the config file silently.
    for flag in ["--socket", "--state-dir", "--socket-mode"] {
        assert!(
            flag_value(&command, flag).is_none(),
            "{file}: {flag} overrides the config file"
        );
    }

    // Socket and state directories: host directories, writable, created by the host.
    for dir in [socket_dir(&config), state_dir(&config)] {
        let (mount, volume) = host_dir_mount(container, &volumes, &dir, file);
        assert!(
            !mount.read_only,
            "{file}: the plugin writes {}",
            dir.display()
        );
        assert_eq!(
            volume.kind,
            "Directory",
            "{file}: {} must be type Directory (created by tmpfiles.d with the plugin as owner)",
            dir.display()
        );
    }

    // Probes call the plugin's Status on the configured socket with the same binary.
    let socket = socket_path(&config).display().to_string();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe_command = strings(
            at(container, &[probe, "exec", "command"], file),
            file,
            probe,
        );
        assert_eq!(
            probe_command.first(),
            command.first(),
            "{file}: {probe} runs another binary"
        );
        assert_subcommand(&probe_command, "status", &format!("{file}: {probe}"));
        assert_eq!(
            flag_value(&probe_command, "--socket").as_deref(),
            Some(socket.as_str()),
            "{file}: {probe} socket"
        );
        // The probe's own timeout must leave room for the status call's deadline.
        let call = flag_value(&probe_command, "--timeout")
            .map_or(Duration::from_secs(3), |t| duration(&t, file));
        let probe_timeout = at(container, &[probe, "timeoutSeconds"], file)
            .as_u64()
            .expect("timeoutSeconds");
        assert!(
            Duration::from_secs(probe_timeout) > call,
            "{file}: {probe} timeoutSeconds must exceed the status --timeout"
        );
    }

    // Liveness never depends on the backend (`--live`); readiness and startup do (no `--live`).
    for (probe, live) in [
        ("livenessProbe", true),
        ("readinessProbe", false),
        ("startupProbe", false),
    ] {
        let probe_command = strings(
            at(container, &[probe, "exec", "command"], file),
            file,
            probe,
        );
        assert_eq!(
            probe_command.iter().any(|w| w == "--live"),
            live,
            "{file}: {probe} --live"
        );
    }

    // Security context: non-root, no privilege, read-only root, no capabilities, seccomp.
    let pod_security = spec.get("securityContext").cloned().unwrap_or(Value::Null);
    let security = at(container, &["securityContext"], file);
    let setting = |key: &str| {
        security
            .get(key)
            .or_else(|| pod_security.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        security
            .get("readOnlyRootFilesystem")
            .and_then(Value::as_bool),
        Some(true),
        "{file}: readOnlyRootFilesystem"
    );
    assert_eq!(
        security
            .get("allowPrivilegeEscalation")
            .and_then(Value::as_bool),
        Some(false),
        "{file}: allowPrivilegeEscalation"
    );
    assert_ne!(
        security.get("privileged").and_then(Value::as_bool),
        Some(true),
        "{file}: privileged"
    );
    assert_eq!(
        strings(at(security, &["capabilities", "drop"], file), file, "drop"),
        ["ALL"],
        "{file}: capabilities.drop"
    );
    assert!(
        at(security, &["capabilities"], file).get("add").is_none(),
        "{file}: no capability may be added"
    );
    assert_eq!(
        setting("seccompProfile")
            .get("type")
            .and_then(Value::as_str),
        Some("RuntimeDefault"),
        "{file}: seccompProfile"
    );
    assert_eq!(
        setting("runAsNonRoot").as_bool(),
        Some(true),
        "{file}: runAsNonRoot"
    );
    let uid = setting("runAsUser")
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: runAsUser must be set"));
    let gid = setting("runAsGroup")
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: runAsGroup must be set"));
    assert_ne!(uid, 0, "{file}: runAsUser");

    // Resources and shutdown.
    let requests = at(container, &["resources", "requests"], file);
    assert!(
        requests.get("cpu").is_some() && requests.get("memory").is_some(),
        "{file}: cpu and memory requests"
    );
    let grace = at(spec, &["terminationGracePeriodSeconds"], file)
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > config.shutdown_grace,
        "{file}: terminationGracePeriodSeconds {grace} must exceed shutdown_grace {:?}",
        config.shutdown_grace
    );
    assert_eq!(
        spec.get("automountServiceAccountToken")
            .and_then(Value::as_bool),
        Some(false),
        "{file}: the plugin needs no API token"
    );

    // The host creates both directories for exactly this uid/gid.
    let tmpfiles = tmpfiles_entries();
    for (dir, mode) in [
        (socket_dir(&config), None),
        (state_dir(&config), Some(0o700)),
    ] {
        let entry = tmpfiles
            .iter()
            .find(|entry| same_run_path(&entry.path, &dir))
            .unwrap_or_else(|| {
                panic!("kms-plugin.tmpfiles.conf does not create {}", dir.display())
            });
        assert_eq!(entry.kind, "d", "tmpfiles entry for {}", dir.display());
        assert_eq!(
            (entry.uid, entry.gid),
            (uid, gid),
            "tmpfiles owner of {} differs from the pod's runAsUser/runAsGroup",
            dir.display()
        );
        assert_eq!(
            entry.mode & 0o007,
            0,
            "tmpfiles mode of {} gives others access",
            dir.display()
        );
        if let Some(mode) = mode {
            assert_eq!(entry.mode, mode, "tmpfiles mode of {}", dir.display());
        }
    }

    // The runbooks run admin commands and install key files as this uid/gid.
    let readme = read(&deploy("README.md"));
    for needle in [
        format!("--reuid={uid} --regid={gid}"),
        format!("-o {uid} -g {gid}"),
        format!("supplementalGroups: [{gid}]"),
    ] {
        assert!(
            readme.contains(&needle),
            "deploy/README.md does not use the pod's uid/gid in `{needle}`"
        );
    }

    // The documented placeholder image is the one in the manifest.
    let image = str_at(container, &["image"], file);
    assert!(
        read(&deploy("README.md")).contains(image),
        "deploy/README.md does not document the image {image}"
    );
}
