//! Pods as manifests write them: hostPath volumes, volume mounts, the one container.

use crate::yaml::{at, str_at, strings};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The plugin's static pod, under `deploy/`.
pub const STATIC_POD: &str = "static-pod/kms-plugin.yaml";

/// A hostPath volume.
pub struct Volume {
    /// `hostPath.path`.
    pub host_path: String,
    /// `hostPath.type` (empty when unset).
    pub kind: String,
}

/// hostPath volumes of a pod by name.
pub fn host_path_volumes(pod: &Value, file: &str) -> BTreeMap<String, Volume> {
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

/// A container's volume mount.
pub struct Mount {
    /// The volume's name.
    pub volume: String,
    /// `readOnly` (false when unset).
    pub read_only: bool,
}

/// Volume mounts of a container by mount path.
pub fn mounts(container: &Value, file: &str) -> BTreeMap<String, Mount> {
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
pub fn host_dir_mount<'a>(
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

/// Asserts that `dir` inside `container` is the host's `dir` (see [`host_dir_mount`]), mounted
/// read-only.
pub fn assert_read_only_host_dir(
    container: &Value,
    volumes: &BTreeMap<String, Volume>,
    dir: &Path,
    file: &str,
) {
    let (mount, _) = host_dir_mount(container, volumes, dir, file);
    assert!(
        mount.read_only,
        "{file}: {} must be mounted read-only",
        dir.display()
    );
}

/// The `command` of `container` in `file`.
pub fn container_command(container: &Value, file: &str) -> Vec<String> {
    strings(at(container, &["command"], file), file, "command")
}

/// The command of the plugin's [`STATIC_POD`].
pub fn static_pod_command() -> Vec<String> {
    let pod = crate::yaml::yaml(STATIC_POD);
    container_command(only_container(&pod, STATIC_POD), STATIC_POD)
}

/// The pod's container; panics unless there is exactly one.
pub fn only_container<'a>(pod: &'a Value, file: &str) -> &'a Value {
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
