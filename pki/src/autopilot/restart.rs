//! Restarting a static pod the way the kubelet understands: a change of its manifest. The
//! annotation `pki.k8s.io/autopilot-renewed-at` carries the renewal time; every other byte of
//! the manifest is kept.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store;

/// The safe restart order.
pub const ORDER: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The annotation autopilot sets.
pub const ANNOTATION: &str = "pki.k8s.io/autopilot-renewed-at";

/// `<manifests dir>/<component>.yaml`.
pub fn manifest_path(manifests_dir: &Path, component: &str) -> PathBuf {
    manifests_dir.join(format!("{component}.yaml"))
}

/// Sets the annotation to `value` in the manifest at `path` (atomically, mode kept).
pub fn annotate(path: &Path, value: &str) -> Result<()> {
    let text =
        store::read_optional(path)?.ok_or_else(|| Error::invalid(path, "manifest missing"))?;
    let out = with_annotation(&text, value)
        .ok_or_else(|| Error::invalid(path, "no top-level `metadata:` block to annotate"))?;
    let mode = store::mode_of(path).unwrap_or(0o600);
    store::write_atomic(path, out.as_bytes(), mode)
}

/// The manifest text with the annotation set (replaced when present).
fn with_annotation(text: &str, value: &str) -> Option<String> {
    let line_of = |indent: &str| format!("{indent}{ANNOTATION}: \"{value}\"");
    let lines: Vec<&str> = text.lines().collect();
    let meta = lines.iter().position(|l| l.trim_end() == "metadata:")?;
    let block_end = lines[meta + 1..]
        .iter()
        .position(|l| !l.is_empty() && !l.starts_with(' '))
        .map_or(lines.len(), |p| meta + 1 + p);
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let ann = (meta + 1..block_end).find(|&i| lines[i].trim_end() == "  annotations:");
    match ann {
        Some(a) => {
            let existing = (a + 1..block_end)
                .take_while(|&i| lines[i].starts_with("    "))
                .find(|&i| lines[i].trim_start().starts_with(&format!("{ANNOTATION}:")));
            match existing {
                Some(i) => out[i] = line_of("    "),
                None => out.insert(a + 1, line_of("    ")),
            }
        }
        None => {
            out.insert(meta + 1, "  annotations:".to_owned());
            out.insert(meta + 2, line_of("    "));
        }
    }
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    Some(s)
}

/// The values of `--flag=` in a manifest's command lines (kubeadm writes `- --flag=value`).
pub fn flag_value(manifest: &str, flag: &str) -> Option<String> {
    let prefix = format!("--{flag}=");
    manifest.lines().find_map(|l| {
        let item = l.trim_start().strip_prefix("- ")?.trim();
        let item = item.trim_matches('"');
        item.strip_prefix(&prefix).map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.1:2379\n  labels:\n    component: etcd\n  name: etcd\nspec:\n  containers:\n  - command:\n    - etcd\n    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379\n";

    #[test]
    fn annotation_added_then_replaced_other_bytes_kept() {
        let once = with_annotation(POD, "t1").expect("meta");
        assert!(
            once.contains(
                "  annotations:\n    pki.k8s.io/autopilot-renewed-at: \"t1\"\n    kubeadm"
            )
        );
        let twice = with_annotation(&once, "t2").expect("meta");
        assert_eq!(twice, once.replace("t1", "t2"));
        assert_eq!(
            twice.replace("    pki.k8s.io/autopilot-renewed-at: \"t2\"\n", ""),
            POD
        );
        let bare = "metadata:\n  name: x\nspec: {}\n";
        assert_eq!(
            with_annotation(bare, "t").expect("meta"),
            "metadata:\n  annotations:\n    pki.k8s.io/autopilot-renewed-at: \"t\"\n  name: x\nspec: {}\n"
        );
        assert_eq!(
            flag_value(POD, "listen-client-urls").as_deref(),
            Some("https://127.0.0.1:2379,https://10.0.0.1:2379")
        );
    }
}
