//! The deployment files under `deploy/` agree with each other and with the real configuration
//! loader of the plugin.
//!
//! One path (the socket, the state directory, the config file, the plugin's uid) is written in
//! several files: the plugin config, the static pod, the host's tmpfiles.d entry, the
//! EncryptionConfiguration, the kube-apiserver patch and kubeadm configuration, the systemd
//! units and the Dockerfile. Each test parses the files involved and fails, naming the file and
//! the value, as soon as one of them drifts from the others.

use kms_config::{HumanDuration, PluginConfig};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Reading the files

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn deploy(relative: &str) -> PathBuf {
    repo_root().join("deploy").join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn yaml(relative: &str) -> Value {
    let path = deploy(relative);
    serde_yaml_ng::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Follows `keys` (mapping keys, or list indices written as numbers) from `value`.
fn at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a Value {
    let mut current = value;
    for key in keys {
        let next = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(*key),
        };
        current = next.unwrap_or_else(|| panic!("{file}: no `{}`", keys.join(".")));
    }
    current
}

fn str_at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a str {
    at(value, keys, file)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: `{}` is not a string", keys.join(".")))
}

fn strings(value: &Value, file: &str, what: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: `{what}` is not a list"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("{file}: `{what}` holds a non-string"))
                .to_owned()
        })
        .collect()
}

fn duration(text: &str, file: &str) -> Duration {
    text.parse::<HumanDuration>()
        .unwrap_or_else(|error| panic!("{file}: duration {text:?}: {error}"))
        .get()
}

/// What the deployment files need to know of the plugin configuration, read from its YAML.
///
/// The file is loaded with the real loader first (`PluginConfig::load`), so it is a valid
/// configuration; the values are then read from the YAML text itself, which keeps these tests
/// independent of how the config crate models them.
struct Plugin {
    socket: PathBuf,
    socket_mode: u32,
    socket_owner_set: bool,
    state_dir: PathBuf,
    backend_kind: String,
    backend_timeout: Duration,
    shutdown_grace: Duration,
    metrics_address: Option<String>,
}

const PLUGIN_CONFIG: &str = "config/kms-plugin.yaml";

fn plugin_config() -> Plugin {
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

fn socket_path(config: &Plugin) -> PathBuf {
    config.socket.clone()
}

fn socket_dir(config: &Plugin) -> PathBuf {
    config
        .socket
        .parent()
        .expect("the socket path has a directory")
        .to_owned()
}

fn state_dir(config: &Plugin) -> PathBuf {
    assert_eq!(
        config.backend_kind, "local",
        "deploy/config: the shipped backend is local"
    );
    config.state_dir.clone()
}

// ---------------------------------------------------------------------------------------------
// Pods

const STATIC_POD: &str = "static-pod/kms-plugin.yaml";

struct Volume {
    host_path: String,
    kind: String,
}

/// hostPath volumes of a pod by name.
fn host_path_volumes(pod: &Value, file: &str) -> BTreeMap<String, Volume> {
    let volumes = at(pod, &["spec", "volumes"], file)
        .as_sequence()
        .expect("volumes list");
    volumes
        .iter()
        .filter(|volume| volume.get("hostPath").is_some())
        .map(|volume| {
            let name = str_at(volume, &["name"], file).to_owned();
            let host_path = str_at(volume, &["hostPath", "path"], file).to_owned();
            let kind = volume
                .get("hostPath")
                .and_then(|h| h.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (name, Volume { host_path, kind })
        })
        .collect()
}

struct Mount {
    volume: String,
    read_only: bool,
}

/// Volume mounts of a container by mount path.
fn mounts(container: &Value, file: &str) -> BTreeMap<String, Mount> {
    let list = container
        .get("volumeMounts")
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{file}: container has no volumeMounts"));
    list.iter()
        .map(|mount| {
            let path = str_at(mount, &["mountPath"], file).to_owned();
            let volume = str_at(mount, &["name"], file).to_owned();
            let read_only = mount
                .get("readOnly")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (path, Mount { volume, read_only })
        })
        .collect()
}

/// Asserts that `dir` inside `container` is the host's `dir` (hostPath volume mounted at the same
/// path) and returns the mount and the volume.
fn host_dir_mount<'a>(
    container: &Value,
    volumes: &'a BTreeMap<String, Volume>,
    dir: &Path,
    file: &str,
) -> (Mount, &'a Volume) {
    let dir_text = dir.to_str().expect("utf-8 path");
    let mut all = mounts(container, file);
    let mount = all
        .remove(dir_text)
        .unwrap_or_else(|| panic!("{file}: nothing is mounted at {dir_text}"));
    let volume = volumes.get(&mount.volume).unwrap_or_else(|| {
        panic!(
            "{file}: mount {dir_text} uses `{}`, which is not a hostPath volume",
            mount.volume
        )
    });
    assert_eq!(
        volume.host_path, dir_text,
        "{file}: volume `{}` mounted at {dir_text} comes from host path {}",
        mount.volume, volume.host_path
    );
    (mount, volume)
}

fn only_container<'a>(pod: &'a Value, file: &str) -> &'a Value {
    let containers = at(pod, &["spec", "containers"], file)
        .as_sequence()
        .expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "{file}: expected exactly one container"
    );
    &containers[0]
}

/// The `--flag VALUE` or `--flag=VALUE` argument of a command line.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(index, arg)| {
        if arg == flag {
            args.get(index + 1).cloned()
        } else {
            arg.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

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

#[test]
fn encryption_configuration_points_at_the_plugin_socket() {
    let file = "deploy/apiserver/encryption-config.yaml";
    let config = plugin_config();
    let encryption = yaml("apiserver/encryption-config.yaml");
    assert_eq!(
        str_at(&encryption, &["apiVersion"], file),
        "apiserver.config.k8s.io/v1"
    );
    assert_eq!(
        str_at(&encryption, &["kind"], file),
        "EncryptionConfiguration"
    );
    let rule = at(&encryption, &["resources", "0"], file);
    assert!(
        strings(at(rule, &["resources"], file), file, "resources").contains(&"secrets".to_owned()),
        "{file}: secrets are not encrypted"
    );
    let providers = at(rule, &["providers"], file)
        .as_sequence()
        .expect("providers list");
    // The first provider encrypts every write: identity first would store plaintext.
    let kms = providers[0].get("kms").unwrap_or_else(|| {
        panic!("{file}: the first provider must be kms, it encrypts every write")
    });
    assert_eq!(
        str_at(kms, &["apiVersion"], file),
        "v2",
        "{file}: kms apiVersion"
    );
    let name = str_at(kms, &["name"], file);
    assert!(
        !name.is_empty() && !name.contains(':'),
        "{file}: provider name {name:?} must be non-empty without ':'"
    );
    assert!(
        kms.get("cachesize").is_none(),
        "{file}: cachesize is rejected for KMS v2"
    );
    let endpoint = str_at(kms, &["endpoint"], file);
    assert_eq!(
        endpoint,
        format!("unix://{}", socket_path(&config).display()),
        "{file}: endpoint differs from the plugin config's socket"
    );
    // The plugin must give up on its root key before kube-apiserver gives up on the plugin.
    let timeout = duration(str_at(kms, &["timeout"], file), file);
    assert!(
        config.backend_timeout < timeout,
        "plugin backend_timeout {:?} must be below the apiserver's timeout {timeout:?}",
        config.backend_timeout
    );
    let last = providers.last().expect("providers");
    assert!(
        last.get("identity").is_some(),
        "{file}: identity {{}} must come last, for reading plaintext during migration"
    );
    // The documented etcd prefix names this provider.
    let readme = read(&deploy("README.md"));
    assert!(
        readme.contains(&format!("k8s:enc:kms:v2:{name}:")),
        "deploy/README.md does not show the etcd prefix of provider {name}"
    );
}

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
    let command = strings(at(container, &["command"], file), file, "command");
    assert_eq!(
        command.get(1).map(String::as_str),
        Some("serve"),
        "{file}: command {command:?}"
    );
    let config_file = flag_value(&command, "--config")
        .unwrap_or_else(|| panic!("{file}: no --config in {command:?}"));
    let config_dir = Path::new(&config_file).parent().expect("config dir");
    let (mount, _) = host_dir_mount(container, &volumes, config_dir, file);
    assert!(
        mount.read_only,
        "{file}: {} must be mounted read-only",
        config_dir.display()
    );
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
    for probe in ["livenessProbe", "startupProbe"] {
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
        assert_eq!(
            probe_command.get(1).map(String::as_str),
            Some("status"),
            "{file}: {probe}"
        );
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

struct TmpfilesEntry {
    kind: String,
    path: String,
    mode: u32,
    uid: u64,
    gid: u64,
}

fn tmpfiles_entries() -> Vec<TmpfilesEntry> {
    let path = deploy("static-pod/kms-plugin.tmpfiles.conf");
    read(&path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 5, "{}: short line {line:?}", path.display());
            let number = |text: &str| -> u64 {
                text.parse().unwrap_or_else(|_| {
                    panic!(
                        "{}: {text:?} must be numeric (no such user on the host)",
                        path.display()
                    )
                })
            };
            TmpfilesEntry {
                kind: fields[0].to_owned(),
                path: fields[1].to_owned(),
                mode: u32::from_str_radix(fields[2], 8).expect("octal mode"),
                uid: number(fields[3]),
                gid: number(fields[4]),
            }
        })
        .collect()
}

/// `/var/run` is a symlink to `/run`: both spellings name one directory.
fn same_run_path(a: &str, b: &Path) -> bool {
    let normalize = |p: &str| {
        p.strip_prefix("/var/run/")
            .map_or_else(|| p.to_owned(), |rest| format!("/run/{rest}"))
    };
    normalize(a) == normalize(b.to_str().expect("utf-8"))
}

// ---------------------------------------------------------------------------------------------
// kube-apiserver

/// A kube-apiserver static pod shaped like kubeadm's, to apply the patch to.
const KUBEADM_APISERVER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  hostNetwork: true
  containers:
    - name: kube-apiserver
      image: registry.k8s.io/kube-apiserver:v1.33.0
      command: [kube-apiserver, --advertise-address=10.0.0.10, --etcd-servers=https://127.0.0.1:2379]
      volumeMounts:
        - {name: k8s-certs, mountPath: /etc/kubernetes/pki, readOnly: true}
  volumes:
    - name: k8s-certs
      hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}
"#;

/// Applies the `add` operations of an RFC 6902 patch (the only operation the patch uses).
fn apply_json_patch(document: &mut Value, patch: &Value, file: &str) {
    for operation in patch
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: not a list of operations"))
    {
        assert_eq!(
            str_at(operation, &["op"], file),
            "add",
            "{file}: only `add` is expected"
        );
        let path = str_at(operation, &["path"], file);
        let value = at(operation, &["value"], file).clone();
        let tokens: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (last, parents) = tokens.split_last().expect("non-empty path");
        let mut target = &mut *document;
        for token in parents {
            target = match token.parse::<usize>() {
                Ok(index) => target.get_mut(index),
                Err(_) => target.get_mut(*token),
            }
            .unwrap_or_else(|| {
                panic!("{file}: {path} does not exist in kubeadm's kube-apiserver manifest")
            });
        }
        match (target, *last) {
            (Value::Sequence(list), "-") => list.push(value),
            (Value::Mapping(map), key) => {
                map.insert(Value::String(key.to_owned()), value);
            }
            _ => panic!("{file}: cannot add at {path}"),
        }
    }
}

#[test]
fn apiserver_patch_mounts_the_encryption_config_and_the_socket_directory() {
    let file = "deploy/apiserver/patches/kube-apiserver+json.yaml";
    let config = plugin_config();
    let mut pod: Value = serde_yaml_ng::from_str(KUBEADM_APISERVER).expect("fixture");
    apply_json_patch(
        &mut pod,
        &yaml("apiserver/patches/kube-apiserver+json.yaml"),
        file,
    );
    let container = &at(&pod, &["spec", "containers"], file)[0];
    let volumes = host_path_volumes(&pod, file);
    // Every mount has its volume (kubelet rejects the pod otherwise).
    for (path, mount) in mounts(container, file) {
        assert!(
            volumes.contains_key(&mount.volume),
            "{file}: mount {path} uses missing volume `{}`",
            mount.volume
        );
    }

    let command = strings(at(container, &["command"], file), file, "command");
    let encryption_file = flag_value(&command, "--encryption-provider-config")
        .unwrap_or_else(|| panic!("{file}: no --encryption-provider-config"));
    assert_eq!(
        Path::new(&encryption_file).file_name(),
        deploy("apiserver/encryption-config.yaml").file_name(),
        "{file}: the flag names another file than deploy/apiserver/encryption-config.yaml"
    );
    let encryption_dir = Path::new(&encryption_file).parent().expect("dir");
    let (mount, _) = host_dir_mount(container, &volumes, encryption_dir, file);
    assert!(
        mount.read_only,
        "{file}: {} must be read-only",
        encryption_dir.display()
    );

    // The socket's directory (never the socket file) is the host's, as in the plugin's pod.
    let (_, volume) = host_dir_mount(container, &volumes, &socket_dir(&config), file);
    assert_eq!(
        volume.kind, "Directory",
        "{file}: the socket directory must exist (created for the plugin), not be created as root"
    );
    let plugin_pod = yaml(STATIC_POD);
    let plugin_volumes = host_path_volumes(&plugin_pod, STATIC_POD);
    host_dir_mount(
        only_container(&plugin_pod, STATIC_POD),
        &plugin_volumes,
        &socket_dir(&config),
        STATIC_POD,
    );

    // The kubeadm configuration says the same.
    let kubeadm_file = "deploy/apiserver/kubeadm-cluster-configuration.yaml";
    let kubeadm = yaml("apiserver/kubeadm-cluster-configuration.yaml");
    let args = at(&kubeadm, &["apiServer", "extraArgs"], kubeadm_file)
        .as_sequence()
        .expect("v1beta4 extraArgs list");
    let flag = args
        .iter()
        .find(|arg| arg.get("name").and_then(Value::as_str) == Some("encryption-provider-config"))
        .unwrap_or_else(|| panic!("{kubeadm_file}: no encryption-provider-config"));
    assert_eq!(
        str_at(flag, &["value"], kubeadm_file),
        encryption_file,
        "{kubeadm_file}: flag value"
    );
    let extra_volumes = at(&kubeadm, &["apiServer", "extraVolumes"], kubeadm_file)
        .as_sequence()
        .expect("extraVolumes");
    for (dir, read_only, kind) in [
        (encryption_dir.to_path_buf(), true, "DirectoryOrCreate"),
        (socket_dir(&config), true, "Directory"),
    ] {
        let dir = dir.to_str().expect("utf-8");
        let volume = extra_volumes
            .iter()
            .find(|v| v.get("mountPath").and_then(Value::as_str) == Some(dir))
            .unwrap_or_else(|| panic!("{kubeadm_file}: nothing mounted at {dir}"));
        assert_eq!(
            str_at(volume, &["hostPath"], kubeadm_file),
            dir,
            "{kubeadm_file}: hostPath of {dir}"
        );
        assert_eq!(
            volume
                .get("readOnly")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            read_only,
            "{kubeadm_file}: readOnly of {dir}"
        );
        assert_eq!(
            str_at(volume, &["pathType"], kubeadm_file),
            kind,
            "{kubeadm_file}: pathType of {dir}"
        );
    }

    // The by-hand instructions show the same flag.
    let explanation = read(&deploy("apiserver/kube-apiserver-patch.md"));
    assert!(
        explanation.contains(&format!("--encryption-provider-config={encryption_file}")),
        "kube-apiserver-patch.md shows another flag value"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// A unit file: section -> key -> every value assigned, in order.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn unit(relative: &str) -> Unit {
    let path = deploy(relative);
    let mut sections = Unit::new();
    let mut current = String::new();
    for line in read(&path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not key=value: {line:?}", path.display()));
        assert!(
            !current.is_empty(),
            "{}: {key} outside a section",
            path.display()
        );
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str, file: &str) -> &'a [String] {
    unit.get(section)
        .and_then(|keys| keys.get(key))
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{file}: [{section}] has no {key}="))
}

fn last<'a>(unit: &'a Unit, section: &str, key: &str, file: &str) -> &'a str {
    values(unit, section, key, file)
        .last()
        .expect("at least one value")
}

/// Words of all assignments of a list-valued directive.
fn words(unit: &Unit, section: &str, key: &str, file: &str) -> Vec<String> {
    values(unit, section, key, file)
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_owned)
        .collect()
}

fn is_yes(value: &str) -> bool {
    matches!(value, "yes" | "true" | "on" | "1")
}

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

    let exec: Vec<String> = last(&unit, service, "ExecStart", file)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        exec.get(1).map(String::as_str),
        Some("serve"),
        "{file}: ExecStart"
    );
    let config_file = flag_value(&exec, "--config")
        .unwrap_or_else(|| panic!("{file}: ExecStart has no --config"));
    assert_eq!(
        Path::new(&config_file).parent(),
        Some(Path::new("/etc").join(configuration).as_path()),
        "{file}: config outside ConfigurationDirectory"
    );
    // Same binary and config file as the static pod.
    let pod = yaml(STATIC_POD);
    let pod_command = strings(
        at(only_container(&pod, STATIC_POD), &["command"], STATIC_POD),
        STATIC_POD,
        "command",
    );
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
    let uid = at(&pod, &["spec", "securityContext", "runAsUser"], STATIC_POD)
        .as_u64()
        .expect("runAsUser");
    assert_eq!(
        entry[2],
        uid.to_string(),
        "sysusers uid of {user} differs from the static pod's runAsUser"
    );
}

#[test]
fn pki_expiry_export_feeds_the_alert_rules() {
    let file = "deploy/systemd/pki-expiry.service";
    let service = unit("systemd/pki-expiry.service");
    assert_eq!(last(&service, "Service", "Type", file), "oneshot");
    let exec: Vec<String> = last(&service, "Service", "ExecStart", file)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        exec.get(1).map(String::as_str),
        Some("check-expiration"),
        "{file}: ExecStart"
    );
    assert_eq!(
        flag_value(&exec, "-o").as_deref(),
        Some("prometheus"),
        "{file}: -o prometheus"
    );
    let output =
        flag_value(&exec, "--output-file").unwrap_or_else(|| panic!("{file}: --output-file"));
    assert!(
        output.ends_with(".prom"),
        "{file}: node-exporter only reads *.prom"
    );
    let state = last(&service, "Service", "StateDirectory", file);
    assert_eq!(
        Path::new(&output).parent(),
        Some(Path::new("/var/lib").join(state).as_path()),
        "{file}: --output-file must be in the writable StateDirectory"
    );
    let timer_file = "deploy/systemd/pki-expiry.timer";
    let timer = unit("systemd/pki-expiry.timer");
    assert!(
        timer["Timer"].contains_key("OnCalendar"),
        "{timer_file}: OnCalendar"
    );
    assert_eq!(
        last(&timer, "Install", "WantedBy", timer_file),
        "timers.target"
    );

    // The alert rules use exactly the metric names the pki crate writes.
    let exporter = rust_sources(&repo_root().join("pki/src"));
    let rules_file = "deploy/prometheus/pki-alerts.yaml";
    let rules = yaml("prometheus/pki-alerts.yaml");
    let mut exprs = Vec::new();
    for group in at(&rules, &["groups"], rules_file)
        .as_sequence()
        .expect("groups")
    {
        for rule in at(group, &["rules"], rules_file)
            .as_sequence()
            .expect("rules")
        {
            exprs.push(str_at(rule, &["expr"], rules_file).to_owned());
        }
    }
    let metric_names: Vec<&str> = exprs
        .iter()
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("pki_"))
        .collect();
    assert!(
        !metric_names.is_empty(),
        "{rules_file}: no pki_* metric used"
    );
    for name in metric_names {
        assert!(
            mentions_identifier(&exporter, name),
            "{rules_file}: pki does not write a metric named {name}"
        );
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("pki_certificate_expiry_timestamp_seconds")
                && e.contains("- time() < 30*24*3600")),
        "{rules_file}: the 30-day expiry alert is gone"
    );
}

/// The text of every `.rs` file under `dir`.
fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                text.push_str(&read(&path));
                text.push('\n');
            }
        }
    }
    text
}

/// Whether `name` occurs in `text` as a whole identifier (not as a prefix of a longer one).
fn mentions_identifier(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

// ---------------------------------------------------------------------------------------------
// Image and documentation

#[test]
fn dockerfile_builds_the_binary_the_manifests_run() {
    let file = "deploy/Dockerfile";
    let dockerfile = read(&deploy("Dockerfile"));
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    // Bases are build arguments (deploy/build-image.sh substitutes them); their defaults are the
    // production bases, and by default the builder compiles the binary itself.
    let arg_default = |name: &str| -> String {
        instructions
            .iter()
            .find_map(|l| {
                l.strip_prefix("ARG ")?
                    .strip_prefix(name)?
                    .strip_prefix('=')
            })
            .unwrap_or_else(|| panic!("{file}: no ARG {name}=<default>"))
            .to_owned()
    };
    assert_eq!(
        arg_default("PREBUILT_BINARY"),
        "",
        "{file}: builds from source by default"
    );
    let from: Vec<String> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(
            |f| match f.strip_prefix("${").and_then(|r| r.split_once('}')) {
                Some((name, rest)) => format!("{}{rest}", arg_default(name)),
                None => f.to_owned(),
            },
        )
        .collect();
    assert_eq!(from.len(), 2, "{file}: a builder and a runtime stage");
    assert!(
        from[1].starts_with("gcr.io/distroless/cc-debian12"),
        "{file}: glibc runtime (PKCS#11 modules are dlopen'ed)"
    );
    assert!(
        dockerfile.contains("cargo build --release -p kms-plugin --locked"),
        "{file}: release build of kms-plugin"
    );

    // The builder's Rust is at least the workspace's rust-version.
    let builder_version = from[0]
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| panic!("{file}: builder is not rust:<version>"));
    let manifest = read(&repo_root().join("Cargo.toml"));
    let required = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("workspace rust-version");
    let parse = |v: &str| -> Vec<u32> {
        v.split('.')
            .map(|p| p.parse().expect("numeric version"))
            .collect()
    };
    assert!(
        parse(builder_version) >= parse(required),
        "{file}: rust:{builder_version} is older than rust-version {required}"
    );

    // ENTRYPOINT + CMD is the static pod's command.
    let json_list = |prefix: &str| -> Vec<String> {
        let line = instructions
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{file}: no {prefix}"));
        serde_yaml_ng::from_str(line).unwrap_or_else(|e| panic!("{file}: {prefix}{line}: {e}"))
    };
    let mut image_command = json_list("ENTRYPOINT ");
    image_command.extend(json_list("CMD "));
    let pod = yaml(STATIC_POD);
    let pod_command = strings(
        at(only_container(&pod, STATIC_POD), &["command"], STATIC_POD),
        STATIC_POD,
        "command",
    );
    assert_eq!(
        image_command, pod_command,
        "{file}: ENTRYPOINT+CMD differ from the static pod's command"
    );
}

#[test]
fn readme_describes_every_deployment_file() {
    let readme = read(&deploy("README.md"));
    let mut stack = vec![deploy("")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(deploy(""))
                .expect("under deploy/")
                .to_str()
                .expect("utf-8")
                .to_owned();
            if relative == "README.md" {
                continue;
            }
            assert!(
                readme.contains(&relative),
                "deploy/README.md does not mention {relative}"
            );
        }
    }
}
