//! Reading the PKI-relevant fields of a kubeadm `ClusterConfiguration`
//! (kubeadm.k8s.io/v1beta3 and v1beta4) from a possibly multi-document YAML file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;

const V1BETA3: &str = "kubeadm.k8s.io/v1beta3";
const V1BETA4: &str = "kubeadm.k8s.io/v1beta4";

/// Kinds that may share a file with the ClusterConfiguration and are ignored.
const KNOWN_OTHER_KINDS: &[(&str, &str)] = &[
    ("kubeadm.k8s.io/", "InitConfiguration"),
    ("kubeadm.k8s.io/", "JoinConfiguration"),
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
    /// Fields that were present but ignored, for the operator's attention.
    pub warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Raw {
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
    found.ok_or_else(|| {
        Error::Config(format!(
            "{}: no ClusterConfiguration document",
            path.display()
        ))
    })
}

fn convert(raw: Raw, api_version: String) -> Result<ClusterConfig> {
    let v4 = api_version == V1BETA4;
    let local = raw.etcd.local.unwrap_or_default();
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
