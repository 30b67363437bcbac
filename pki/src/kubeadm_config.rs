//! Reading the PKI-relevant fields of a kubeadm `ClusterConfiguration`, `InitConfiguration` and
//! `JoinConfiguration` (kubeadm.k8s.io/v1beta3 and v1beta4) from a possibly multi-document YAML
//! file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;
use crate::version::KubernetesVersion;

const V1BETA3: &str = "kubeadm.k8s.io/v1beta3";
const V1BETA4: &str = "kubeadm.k8s.io/v1beta4";

/// Kinds that may share a file with the ClusterConfiguration and are ignored.
const KNOWN_OTHER_KINDS: &[(&str, &str)] = &[
    ("kubeadm.k8s.io/", "ResetConfiguration"),
    ("kubeadm.k8s.io/", "UpgradeConfiguration"),
    ("kubelet.config.k8s.io/", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/", "KubeProxyConfiguration"),
];

/// The fields of a ClusterConfiguration that shape the PKI. `None` means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// `apiVersion` of the document read.
    pub api_version: String,
    /// `certificatesDir`.
    pub certificates_dir: Option<PathBuf>,
    /// `controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<String>,
    /// `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// `networking.dnsDomain`.
    pub dns_domain: Option<String>,
    /// `apiServer.certSANs`.
    pub apiserver_cert_sans: Vec<String>,
    /// `etcd.local.serverCertSANs`.
    pub etcd_server_cert_sans: Vec<String>,
    /// `etcd.local.peerCertSANs`.
    pub etcd_peer_cert_sans: Vec<String>,
    /// `encryptionAlgorithm` (v1beta4).
    pub encryption_algorithm: Option<KeyAlgorithm>,
    /// `certificateValidityPeriod` (v1beta4).
    pub certificate_validity: Option<Duration>,
    /// `caCertificateValidityPeriod` (v1beta4).
    pub ca_certificate_validity: Option<Duration>,
    /// `kubernetesVersion`.
    pub kubernetes_version: Option<KubernetesVersion>,
    /// `clusterName`.
    pub cluster_name: Option<String>,
    /// True when `etcd.external` is set (no etcd CA or etcd leaves on this node).
    pub etcd_external: bool,
    /// `nodeRegistration.name` of the Init- or JoinConfiguration.
    pub node_name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress` (InitConfiguration) or
    /// `controlPlane.localAPIEndpoint.advertiseAddress` (JoinConfiguration).
    pub advertise_address: Option<std::net::IpAddr>,
    /// The matching `bindPort`.
    pub bind_port: Option<u16>,
    /// True when the file has a JoinConfiguration and no InitConfiguration: a control-plane
    /// node joining an existing cluster.
    pub control_plane_join: bool,
    /// Fields that were present but ignored, for the operator's attention.
    pub warnings: Vec<String>,
}

/// `nodeRegistration` and the local API endpoint of an Init- or JoinConfiguration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NodeDoc {
    node_registration: NodeRegistration,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: Option<ApiEndpoint>,
    control_plane: Option<JoinControlPlane>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NodeRegistration {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ApiEndpoint {
    advertise_address: Option<String>,
    bind_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: Option<ApiEndpoint>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Raw {
    kubernetes_version: Option<String>,
    cluster_name: Option<String>,
    certificates_dir: Option<String>,
    control_plane_endpoint: Option<String>,
    networking: Networking,
    api_server: ApiServer,
    etcd: Etcd,
    encryption_algorithm: Option<String>,
    certificate_validity_period: Option<String>,
    ca_certificate_validity_period: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Networking {
    service_subnet: Option<String>,
    dns_domain: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ApiServer {
    #[serde(rename = "certSANs")]
    cert_sans: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Etcd {
    local: Option<EtcdLocal>,
    external: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EtcdLocal {
    #[serde(rename = "serverCertSANs")]
    server_cert_sans: Vec<String>,
    #[serde(rename = "peerCertSANs")]
    peer_cert_sans: Vec<String>,
}

/// Reads the ClusterConfiguration from a kubeadm config file.
pub fn load(path: &Path) -> Result<ClusterConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// Parses kubeadm config text (one or more YAML documents) and returns its ClusterConfiguration.
/// Unknown kinds or apiVersions are errors; other known kubeadm kinds are ignored.
pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig> {
    let mut found: Option<ClusterConfig> = None;
    let mut init: Option<NodeDoc> = None;
    let mut join: Option<NodeDoc> = None;
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| Error::parse(path, e))?;
        if value.is_null() {
            continue;
        }
        let field = |k: &str| {
            value
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let n = i + 1;
        if kind == "ClusterConfiguration" {
            if api_version != V1BETA3 && api_version != V1BETA4 {
                return Err(Error::Config(format!(
                    "{}: document {n}: ClusterConfiguration apiVersion {api_version:?} is not supported (use {V1BETA3} or {V1BETA4})",
                    path.display()
                )));
            }
            if found.is_some() {
                return Err(Error::Config(format!(
                    "{}: document {n}: more than one ClusterConfiguration",
                    path.display()
                )));
            }
            let raw: Raw = serde_yaml_ng::from_value(value)
                .map_err(|e| Error::parse(path, format!("document {n}: {e}")))?;
            found = Some(convert(raw, api_version)?);
            continue;
        }
        if kind == "InitConfiguration" || kind == "JoinConfiguration" {
            if api_version != V1BETA3 && api_version != V1BETA4 {
                return Err(Error::Config(format!(
                    "{}: document {n}: {kind} apiVersion {api_version:?} is not supported (use {V1BETA3} or {V1BETA4})",
                    path.display()
                )));
            }
            let doc: NodeDoc = serde_yaml_ng::from_value(value)
                .map_err(|e| Error::parse(path, format!("document {n}: {e}")))?;
            let slot = if kind == "InitConfiguration" {
                &mut init
            } else {
                &mut join
            };
            if slot.replace(doc).is_some() {
                return Err(Error::Config(format!(
                    "{}: document {n}: more than one {kind}",
                    path.display()
                )));
            }
            continue;
        }
        let known = KNOWN_OTHER_KINDS
            .iter()
            .any(|(prefix, k)| *k == kind && api_version.starts_with(prefix));
        if !known {
            return Err(Error::Config(format!(
                "{}: document {n}: unknown kind {kind:?} with apiVersion {api_version:?} (expected a kubeadm ClusterConfiguration, {V1BETA3} or {V1BETA4})",
                path.display()
            )));
        }
    }
    let joining = init.is_none() && join.is_some();
    let mut cfg = match found {
        Some(c) => c,
        // A JoinConfiguration alone is complete: kubeadm join reads the rest from the cluster.
        None if joining => ClusterConfig::default(),
        None => {
            return Err(Error::Config(format!(
                "{}: no ClusterConfiguration document",
                path.display()
            )));
        }
    };
    let (node, endpoint) = match (init, join) {
        (Some(i), _) => {
            let ep = i.local_api_endpoint;
            (i.node_registration, ep)
        }
        (None, Some(j)) => {
            let ep = j
                .control_plane
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: the JoinConfiguration has no controlPlane: a worker node needs only `pki kubelet`",
                        path.display()
                    ))
                })?
                .local_api_endpoint;
            (j.node_registration, ep)
        }
        (None, None) => (NodeRegistration::default(), None),
    };
    cfg.control_plane_join = joining;
    cfg.node_name = node.name.filter(|n| !n.is_empty());
    if let Some(ep) = endpoint {
        cfg.advertise_address = ep
            .advertise_address
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse().map_err(|_| {
                    Error::Config(format!(
                        "{}: localAPIEndpoint.advertiseAddress {a:?} is not an IP address",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        cfg.bind_port = ep.bind_port.filter(|p| *p != 0);
    }
    Ok(cfg)
}

fn convert(mut raw: Raw, api_version: String) -> Result<ClusterConfig> {
    let v4 = api_version == V1BETA4;
    let local = raw.etcd.local.take().unwrap_or_default();
    let mut warnings = Vec::new();
    // These three fields exist only from v1beta4 on; a v1beta3 document carrying them gets
    // them ignored, with a warning rather than silently.
    let mut only_v4 = |name: &str, value: Option<String>| -> Option<String> {
        if v4 || value.is_none() {
            return value;
        }
        warnings.push(format!(
            "{name} is a {V1BETA4} field; ignored in {api_version}"
        ));
        None
    };
    let alg = only_v4("encryptionAlgorithm", raw.encryption_algorithm);
    let validity = only_v4("certificateValidityPeriod", raw.certificate_validity_period);
    let ca_validity = only_v4(
        "caCertificateValidityPeriod",
        raw.ca_certificate_validity_period,
    );
    let dur = |s: Option<String>| s.map(|s| parse_duration(&s)).transpose();
    Ok(ClusterConfig {
        kubernetes_version: raw
            .kubernetes_version
            .filter(|s| !s.is_empty())
            .map(|s| s.parse())
            .transpose()?,
        cluster_name: raw.cluster_name.filter(|s| !s.is_empty()),
        etcd_external: raw.etcd.external.is_some_and(|v| !v.is_null()),
        certificates_dir: raw
            .certificates_dir
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        control_plane_endpoint: raw.control_plane_endpoint.filter(|s| !s.is_empty()),
        service_subnet: raw.networking.service_subnet.filter(|s| !s.is_empty()),
        dns_domain: raw.networking.dns_domain.filter(|s| !s.is_empty()),
        apiserver_cert_sans: raw.api_server.cert_sans,
        etcd_server_cert_sans: local.server_cert_sans,
        etcd_peer_cert_sans: local.peer_cert_sans,
        encryption_algorithm: alg.map(|s| s.parse()).transpose()?,
        certificate_validity: dur(validity)?,
        ca_certificate_validity: dur(ca_validity)?,
        warnings,
        api_version,
        ..ClusterConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cluster_configuration() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  serviceSubnet: 10.100.0.0/16\nencryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: 720h0m0s\n";
        let c = parse(text, Path::new("x")).ok();
        assert_eq!(
            c.as_ref().and_then(|c| c.service_subnet.clone()).as_deref(),
            Some("10.100.0.0/16")
        );
        assert_eq!(
            c.as_ref().and_then(|c| c.encryption_algorithm),
            Some(KeyAlgorithm::EcdsaP256)
        );
        assert_eq!(
            c.and_then(|c| c.certificate_validity),
            Some(Duration::from_secs(720 * 3600))
        );
    }

    #[test]
    fn rejects_unknown() {
        let e = parse(
            "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n",
            Path::new("x"),
        );
        assert!(matches!(e, Err(Error::Config(m)) if m.contains("v1beta2")));
        let e = parse("apiVersion: v1\nkind: Pod\n", Path::new("x"));
        assert!(matches!(e, Err(Error::Config(m)) if m.contains("Pod")));
    }
}
