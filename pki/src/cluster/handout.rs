//! What the cluster hands out of the CA, during a `ca` rotation: the ConfigMap
//! `kube-root-ca.crt` in every namespace and the ClusterTrustBundle of the signer
//! `kubernetes.io/kube-apiserver-serving` (both published by kube-controller-manager from its
//! `--root-ca-file`, so a restarted kube-controller-manager updates them and a write of ours would
//! be undone: they are read, and gate `switch`), the pods that read `kube-root-ca.crt` (client-go
//! loads the CA file once: a pod started before its namespace's copy held the new CA must be
//! restarted before any API server serves a new-CA certificate), and `kube-public/cluster-info`
//! (kubeadm's discovery for joining nodes, which nothing else updates: written here after each
//! phase, from the node's `ca.crt`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use time::OffsetDateTime;

use super::client::Cluster;
use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle};

/// The ConfigMap kube-controller-manager publishes in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The signer whose ClusterTrustBundle carries the API servers' serving CA.
pub const SERVING_SIGNER: &str = "kubernetes.io/kube-apiserver-serving";

/// One namespace's `kube-root-ca.crt`.
#[derive(Debug, Clone)]
pub struct RootCaCopy {
    /// The namespace.
    pub namespace: String,
    /// The certificates of its `ca.crt` (empty when unreadable).
    pub certs: Vec<Cert>,
    /// When it was last written (the newest `managedFields` time), if known.
    pub updated: Option<OffsetDateTime>,
}

/// A ClusterTrustBundle: its name and certificates.
pub type TrustBundle = (String, Vec<Cert>);

/// A running pod that mounts `kube-root-ca.crt`.
#[derive(Debug, Clone)]
pub struct PodReader {
    /// `namespace/name`.
    pub pod: String,
    /// The earliest start of its running containers.
    pub started: Option<OffsetDateTime>,
}

/// What the `ca switch` gates read.
#[derive(Debug, Clone, Default)]
pub struct Handout {
    /// `kube-root-ca.crt` of every namespace that has one.
    pub root_ca: Vec<RootCaCopy>,
    /// The serving signer's ClusterTrustBundles; `None` when the API does not serve
    /// ClusterTrustBundles.
    pub serving_bundles: Option<Vec<TrustBundle>>,
    /// Running pods that mount `kube-root-ca.crt`.
    pub readers: Vec<PodReader>,
}

fn to_time(t: &Time) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok()
}

fn certs_of(pem: &str, origin: &str) -> Vec<Cert> {
    parse_bundle(pem, std::path::Path::new(origin)).unwrap_or_default()
}

impl Cluster {
    /// Reads what the cluster hands out of the CA.
    pub fn handout(&self) -> Result<Handout> {
        let mut h = Handout::default();
        let cms: Api<ConfigMap> = Api::all(self.client());
        let lp = ListParams::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}"));
        let mut found = BTreeMap::new();
        for cm in self.call("list kube-root-ca.crt", cms.list(&lp))?.items {
            let ns = cm.metadata.namespace.clone().unwrap_or_default();
            let updated = cm
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|m| m.time.as_ref().and_then(to_time))
                .max()
                .or_else(|| cm.metadata.creation_timestamp.as_ref().and_then(to_time));
            let pem = cm
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .cloned()
                .unwrap_or_default();
            let certs = certs_of(&pem, &format!("{ns}/{ROOT_CA_CONFIGMAP}"));
            found.insert(
                ns.clone(),
                RootCaCopy {
                    namespace: ns,
                    certs,
                    updated,
                },
            );
        }
        h.root_ca = found.into_values().collect();
        h.serving_bundles = self.serving_bundles()?;
        let pods: Api<Pod> = Api::all(self.client());
        let lp = ListParams::default().fields("status.phase=Running");
        for pod in self.call("list pods", pods.list(&lp))?.items {
            if !mounts_root_ca(&pod) {
                continue;
            }
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .filter_map(to_time)
                .min()
                .or_else(|| pod.status.as_ref()?.start_time.as_ref().and_then(to_time));
            h.readers.push(PodReader {
                pod: format!(
                    "{}/{}",
                    pod.metadata.namespace.unwrap_or_default(),
                    pod.metadata.name.unwrap_or_default()
                ),
                started,
            });
        }
        Ok(h)
    }

    /// The ClusterTrustBundles of the serving signer, through the newest served version
    /// (`certificates.k8s.io/v1`, else `v1beta1`); `None` when neither is served.
    fn serving_bundles(&self) -> Result<Option<Vec<TrustBundle>>> {
        for version in ["v1", "v1beta1"] {
            let gvk = GroupVersionKind::gvk("certificates.k8s.io", version, "ClusterTrustBundle");
            let ar = ApiResource::from_gvk_with_plural(&gvk, "clustertrustbundles");
            let api: Api<DynamicObject> = Api::all_with(self.client(), &ar);
            let lp = ListParams::default().fields(&format!("spec.signerName={SERVING_SIGNER}"));
            match self.try_call("list clustertrustbundles", api.list(&lp))? {
                Ok(list) => {
                    let bundles = list
                        .items
                        .into_iter()
                        .map(|o| {
                            let name = o.metadata.name.clone().unwrap_or_default();
                            let pem = o.data["spec"]["trustBundle"].as_str().unwrap_or_default();
                            let certs = certs_of(pem, &name);
                            (name, certs)
                        })
                        .collect();
                    return Ok(Some(bundles));
                }
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 404 => continue,
                Err(e) => return Err(super::client::api_error("list clustertrustbundles", e)),
            }
        }
        Ok(None)
    }

    /// Sets the CA data of every cluster in `kube-public/cluster-info`'s kubeconfig to `bundle`
    /// (with the `resourceVersion` read); returns whether it changed, `None` when the ConfigMap
    /// does not exist (not a kubeadm cluster, or discovery not set up).
    pub fn set_cluster_info_ca(&self, bundle: &str) -> Result<Option<bool>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client(), "kube-public");
        for _ in 0..10 {
            let Some(mut cm) = self.call(
                "get kube-public/ConfigMap/cluster-info",
                api.get_opt("cluster-info"),
            )?
            else {
                return Ok(None);
            };
            let data = cm.data.get_or_insert_with(BTreeMap::new);
            let text = data.get("kubeconfig").cloned().ok_or_else(|| {
                Error::Cluster("kube-public/ConfigMap/cluster-info has no kubeconfig key".into())
            })?;
            let new = with_ca_data(&text, bundle)?;
            if new == text {
                return Ok(Some(false));
            }
            data.insert("kubeconfig".into(), new);
            match self.try_call(
                "update kube-public/ConfigMap/cluster-info",
                api.replace("cluster-info", &PostParams::default(), &cm),
            )? {
                Ok(_) => return Ok(Some(true)),
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(e) => {
                    return Err(super::client::api_error(
                        "update kube-public/ConfigMap/cluster-info",
                        e,
                    ));
                }
            }
        }
        Err(Error::Cluster(
            "kube-public/ConfigMap/cluster-info kept changing under this write: rerun".into(),
        ))
    }
}

/// A pod mounts `kube-root-ca.crt` through a configMap volume or a projected source.
fn mounts_root_ca(pod: &Pod) -> bool {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes.into_iter().flatten().any(|v| {
        v.config_map
            .as_ref()
            .is_some_and(|c| c.name == ROOT_CA_CONFIGMAP)
            || v.projected.as_ref().is_some_and(|p| {
                p.sources.iter().flatten().any(|s| {
                    s.config_map
                        .as_ref()
                        .is_some_and(|c| c.name == ROOT_CA_CONFIGMAP)
                })
            })
    })
}

/// `text` (a kubeconfig) with every cluster's `certificate-authority-data` set to `bundle`.
fn with_ca_data(text: &str, bundle: &str) -> Result<String> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::Cluster(format!(
            "kube-public/ConfigMap/cluster-info: its kubeconfig: {e}"
        ))
    };
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| bad(&e))?;
    let encoded = serde_yaml_ng::Value::String(STANDARD.encode(bundle));
    let mut current = None;
    let clusters = doc
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .ok_or_else(|| bad(&"no clusters"))?;
    for c in clusters.iter_mut() {
        let cluster = c
            .get_mut("cluster")
            .and_then(|c| c.as_mapping_mut())
            .ok_or_else(|| bad(&"a cluster without its `cluster` map"))?;
        let key = serde_yaml_ng::Value::String("certificate-authority-data".into());
        current = cluster.get(&key).cloned();
        cluster.insert(key, encoded.clone());
    }
    if current.as_ref() == Some(&encoded) && clusters.len() == 1 {
        return Ok(text.to_owned());
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_gets_the_bundle_and_keeps_the_rest() -> Result<()> {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: T0xE\n    server: https://10.0.0.1:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\nusers: null\n";
        let out = with_ca_data(text, "NEW")?;
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&out).map_err(|e| Error::Cluster(e.to_string()))?;
        let c = &doc["clusters"][0]["cluster"];
        assert_eq!(
            c["certificate-authority-data"].as_str(),
            Some(STANDARD.encode("NEW").as_str())
        );
        assert_eq!(c["server"].as_str(), Some("https://10.0.0.1:6443"));
        assert_eq!(doc["kind"].as_str(), Some("Config"));
        // Already so: the text is returned unchanged (no write).
        assert_eq!(with_ca_data(&out, "NEW")?, out);
        assert!(with_ca_data("kind: Config\n", "NEW").is_err());
        Ok(())
    }
}
