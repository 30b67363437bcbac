//! Which components load renewed certificate files again by themselves, so a pass need not
//! restart them (a restart of kube-apiserver is an API outage on that node). Read from the
//! Kubernetes source of each version; a version not checked here is restarted.
//!
//! | component | version | renewed files, and how they are read again |
//! |---|---|---|
//! | kube-apiserver | 1.34–1.37 | `--tls-cert-file`: a dynamic serving certificate (file watch and a one-minute re-read); `--proxy-client-cert-file`: the aggregator's dynamic client certificate; `--kubelet-client-certificate`: client-go with `ReloadTLSFiles`; `--etcd-certfile`: etcd's client TLS reads the files at every new connection. Not with `--peer-ca-file` (the peer proxy reads the proxy client certificate once). |
//! | kube-apiserver | 1.28–1.33 | not checked here (the module proxy serves 1.34 and later): restarted |
//! | etcd | 3.4–3.7 | `--cert-file`/`--key-file` and `--peer-cert-file`/`--peer-key-file`: its TLS configuration loads the pair again at every handshake, as server and as a peer's client (`GetCertificate`/`GetClientCertificate` in `client/pkg/transport` of 3.5.21, 3.6.4 and 3.7.0, kubeadm's default for 1.34–1.37; shown on a running 3.4.23, which serves a renewed `server.crt` at the next connection). Its trusted CA files are read once, but a renewal does not change them. |
//! | etcd | other | restarted, one member at a time: the Lease, and the check that every other member is healthy, keep its quorum |
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
        "etcd" => {
            let (major, minor) = image_version(manifest, "etcd")?;
            (major == 3 && (4..=7).contains(&minor)).then_some(
                "etcd 3.4 to 3.7 reads its serving and peer certificates again at every TLS handshake",
            )
        }
        _ => None,
    }
}

/// `(major, minor)` of the image tag of the container named `name` (`registry/name:vX.Y.Z`, or
/// `X.Y.Z-N` as etcd's images are tagged).
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
        let mut parts = tag.strip_prefix('v').unwrap_or(tag).split(['.', '-', '+']);
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
        let etcd = |tag: &str| format!("    image: registry.k8s.io/etcd:{tag}\n");
        for tag in ["3.7.0-0", "3.6.4-0", "3.5.21-0", "3.4.23-0", "v3.5.9"] {
            assert!(reloads_by_itself("etcd", &etcd(tag)).is_some(), "{tag}");
        }
        for tag in ["3.3.17-0", "3.8.0-0", "latest"] {
            assert!(reloads_by_itself("etcd", &etcd(tag)).is_none(), "{tag}");
        }
        assert!(reloads_by_itself("etcd", "    image: example.com/my-etcd:3.5.0\n").is_none());
        assert!(reloads_by_itself("kube-scheduler", &api("v1.37.2", "")).is_none());
    }
}
