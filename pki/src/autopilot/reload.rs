//! Which components load renewed certificate files again by themselves, so a pass need not
//! restart them (a restart of kube-apiserver is an API outage on that node). Read from the
//! Kubernetes source of each version; a version not checked here is restarted.
//!
//! | component | version | renewed files, and how they are read again |
//! |---|---|---|
//! | kube-apiserver | 1.34–1.37 | `--tls-cert-file`: a dynamic serving certificate (file watch and a one-minute re-read); `--proxy-client-cert-file`: the aggregator's dynamic client certificate; `--kubelet-client-certificate`: client-go with `ReloadTLSFiles`; `--etcd-certfile`: etcd's client TLS reads the files at every new connection. Not with `--peer-ca-file` (the peer proxy reads the proxy client certificate once). |
//! | kube-apiserver | 1.28–1.33 | not checked here (the module proxy serves 1.34 and later): restarted |
//! | etcd | any | restarted (the autopilot's restart, peer check and Lease are what keep its quorum) |
//! | kube-controller-manager, kube-scheduler | any | restarted: kubeadm embeds the client certificate in their kubeconfigs, which client-go reads once |

use super::restart::flag_value;

/// Why `component`, as its manifest runs it, picks up every renewed file by itself; `None`: it
/// must be restarted.
pub fn reloads_by_itself(component: &str, manifest: &str) -> Option<&'static str> {
    match component {
        "kube-apiserver" => {
            let (major, minor) = image_version(manifest, "kube-apiserver")?;
            let checked = major == 1 && (34..=37).contains(&minor);
            (checked && flag_value(manifest, "peer-ca-file").is_none()).then_some(
                "kube-apiserver 1.34 to 1.37 reloads its serving, front-proxy and kubelet client certificates and reads its etcd client certificate at every new etcd connection",
            )
        }
        _ => None,
    }
}

/// `(major, minor)` of the image tag of the container named `name` (`registry/name:vX.Y.Z`).
fn image_version(manifest: &str, name: &str) -> Option<(u32, u32)> {
    manifest.lines().find_map(|l| {
        let image = l
            .trim_start()
            .strip_prefix("image:")?
            .trim()
            .trim_matches('"');
        let (repo, tag) = image.rsplit_once(':')?;
        if repo.rsplit('/').next() != Some(name) {
            return None;
        }
        let mut parts = tag.strip_prefix('v')?.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checked_versions_skip_the_restart() {
        let api = |tag: &str, extra: &str| {
            format!(
                "spec:\n  containers:\n  - command:\n    - kube-apiserver\n{extra}    image: registry.k8s.io/kube-apiserver:{tag}\n"
            )
        };
        assert!(reloads_by_itself("kube-apiserver", &api("v1.37.2", "")).is_some());
        assert!(reloads_by_itself("kube-apiserver", &api("v1.34.4", "")).is_some());
        assert!(reloads_by_itself("kube-apiserver", &api("v1.33.9", "")).is_none());
        assert!(reloads_by_itself("kube-apiserver", &api("v1.38.0", "")).is_none());
        assert!(reloads_by_itself("kube-apiserver", &api("latest", "")).is_none());
        assert!(
            reloads_by_itself(
                "kube-apiserver",
                &api("v1.37.0", "    - --peer-ca-file=/x\n")
            )
            .is_none(),
            "the peer proxy reads its client certificate once"
        );
        let etcd = "    image: registry.k8s.io/etcd:3.6.4-0\n";
        assert!(reloads_by_itself("etcd", etcd).is_none());
        assert!(reloads_by_itself("kube-scheduler", &api("v1.37.2", "")).is_none());
    }
}
