//! kube-apiserver's side: the EncryptionConfiguration names the plugin's socket, and the
//! manifest patch and kubeadm configuration mount it and the encryption config.

use cross_crate_tests::command_line::flag_value;
use cross_crate_tests::files::{deploy, read};
use cross_crate_tests::plugin::{duration, plugin_config, socket_dir, socket_path};
use cross_crate_tests::pod::{
    STATIC_POD, assert_read_only_host_dir, container_command, host_dir_mount, host_path_volumes,
    mounts, only_container,
};
use cross_crate_tests::yaml::{at, str_at, strings, yaml};
use serde_yaml_ng::Value;
use std::path::Path;

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

    let command = container_command(container, file);
    let encryption_file = flag_value(&command, "--encryption-provider-config")
        .unwrap_or_else(|| panic!("{file}: no --encryption-provider-config"));
    assert_eq!(
        Path::new(&encryption_file).file_name(),
        deploy("apiserver/encryption-config.yaml").file_name(),
        "{file}: the flag names another file than deploy/apiserver/encryption-config.yaml"
    );
    let encryption_dir = Path::new(&encryption_file).parent().expect("dir");
    assert_read_only_host_dir(container, &volumes, encryption_dir, file);

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
