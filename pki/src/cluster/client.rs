//! The connection to the Kubernetes API: a kube-rs client built from a kubeconfig file, driven
//! from the synchronous commands on a runtime of its own, every call bounded in time.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};
use crate::inspect::Cert;

/// How long one API call may take before the command gives up (and changes nothing more).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The label kubeadm puts on control-plane Nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// The annotation kubeadm puts on each kube-apiserver static pod (its mirror pod in the API):
/// where that API server serves, `host:port`.
pub const APISERVER_ENDPOINT_ANNOTATION: &str =
    "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint";

/// The signer of kubelets' client certificates.
const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A registered Node, as the gates need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node's name (the kubelet's `--hostname-override` or host name).
    pub name: String,
    /// Labelled `node-role.kubernetes.io/control-plane`.
    pub control_plane: bool,
    /// Where its kubelet serves (`host:port`), from the Node's status: the first address of
    /// kubeadm's `--kubelet-preferred-address-types` (InternalIP, ExternalIP, Hostname) and the
    /// kubelet's port; `None` when the kubelet has not reported them.
    pub kubelet_endpoint: Option<String>,
}

/// The newest issued kubelet client certificate of a node, from its CSRs.
#[derive(Debug, Clone)]
pub struct KubeletClientCsr {
    /// The CSR's name.
    pub csr: String,
    /// The certificate the signer issued.
    pub cert: Cert,
}

/// An API connection.
pub struct Cluster {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects with the current context of `kubeconfig` (nothing is sent yet).
    pub fn connect(kubeconfig: &Path) -> Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Cluster(format!("cannot start the API client's runtime: {e}")))?;
        let kc = Kubeconfig::read_from(kubeconfig)
            .map_err(|e| Error::parse(kubeconfig, format!("not a usable kubeconfig: {e}")))?;
        let client = runtime.block_on(async {
            let mut config =
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| {
                        Error::parse(kubeconfig, format!("not a usable kubeconfig: {e}"))
                    })?;
            config.connect_timeout = Some(Duration::from_secs(10));
            config.read_timeout = Some(CALL_TIMEOUT);
            config.write_timeout = Some(CALL_TIMEOUT);
            kube::Client::try_from(config).map_err(|e| api_error("connect", e))
        })?;
        Ok(Cluster { runtime, client })
    }

    /// Runs one API exchange to completion, bounded by [`CALL_TIMEOUT`].
    pub(crate) fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<T> {
        self.runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
            .map_err(|_| Error::Cluster(format!("{what}: no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| api_error(what, e))
    }

    /// Like [`Cluster::call`], but hands the API's refusal back to the caller to decide on.
    pub(crate) fn try_call<T>(
        &self,
        what: &str,
        f: impl Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<std::result::Result<T, kube::Error>> {
        self.runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
            .map_err(|_| Error::Cluster(format!("{what}: no answer within {CALL_TIMEOUT:?}")))
    }

    /// The client, for typed [`Api`]s.
    pub(crate) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Every registered Node.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let api: Api<Node> = Api::all(self.client());
        let list = self.call("list nodes", api.list(&ListParams::default()))?;
        let mut nodes: Vec<NodeInfo> = list
            .items
            .into_iter()
            .filter_map(|n| {
                let kubelet_endpoint = kubelet_endpoint(&n);
                let name = n.metadata.name?;
                let control_plane = n
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL));
                Some(NodeInfo {
                    name,
                    control_plane,
                    kubelet_endpoint,
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// Per node name, where its kube-apiserver serves: kubeadm's endpoint annotation on the
    /// mirror pods `kube-system/kube-apiserver-<node>` (label `component=kube-apiserver`), as
    /// kubeadm itself finds the API servers of a cluster.
    pub fn apiserver_endpoints(&self) -> Result<BTreeMap<String, String>> {
        let api: Api<Pod> = Api::namespaced(self.client(), "kube-system");
        let lp = ListParams::default().labels("component=kube-apiserver");
        let list = self.call("list kube-system pods", api.list(&lp))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| {
                let node = p.spec?.node_name?;
                let at = p
                    .metadata
                    .annotations?
                    .remove(APISERVER_ENDPOINT_ANNOTATION)?;
                Some((node, at))
            })
            .collect())
    }

    /// Per node name, the newest kubelet client certificate issued through a CSR (signer
    /// `kubernetes.io/kube-apiserver-client-kubelet`, requested as `system:node:<name>`).
    pub fn kubelet_client_csrs(&self) -> Result<BTreeMap<String, KubeletClientCsr>> {
        let api: Api<CertificateSigningRequest> = Api::all(self.client());
        let list = self.call(
            "list certificatesigningrequests",
            api.list(&ListParams::default()),
        )?;
        let mut newest: BTreeMap<String, (Option<_>, KubeletClientCsr)> = BTreeMap::new();
        for csr in list.items {
            if csr.spec.signer_name != KUBELET_CLIENT_SIGNER {
                continue;
            }
            let Some(node) = csr
                .spec
                .username
                .as_deref()
                .and_then(|u| u.strip_prefix("system:node:"))
            else {
                continue;
            };
            let Some(bytes) = csr.status.as_ref().and_then(|s| s.certificate.as_ref()) else {
                continue;
            };
            let name = csr.metadata.name.clone().unwrap_or_default();
            let origin = Path::new("CertificateSigningRequest").join(&name);
            let Ok(text) = std::str::from_utf8(&bytes.0) else {
                continue;
            };
            let Ok(cert) = Cert::from_pem(text, &origin) else {
                continue;
            };
            let created = csr.metadata.creation_timestamp.clone();
            let newer = newest.get(node).is_none_or(|(t, seen)| {
                (t, seen.cert.info().not_before) < (&created, cert.info().not_before)
            });
            if newer {
                newest.insert(
                    node.to_owned(),
                    (created, KubeletClientCsr { csr: name, cert }),
                );
            }
        }
        Ok(newest.into_iter().map(|(k, (_, v))| (k, v)).collect())
    }
}

/// The order kubeadm gives kube-apiserver's `--kubelet-preferred-address-types`.
const PREFERRED_ADDRESS_TYPES: [&str; 3] = ["InternalIP", "ExternalIP", "Hostname"];

/// Where the Node's kubelet serves, as kube-apiserver would reach it.
fn kubelet_endpoint(n: &Node) -> Option<String> {
    let status = n.status.as_ref()?;
    let port = status
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    if port <= 0 {
        return None;
    }
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let host = PREFERRED_ADDRESS_TYPES
        .iter()
        .find_map(|t| addresses.iter().find(|a| a.type_ == *t))?
        .address
        .clone();
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// An API failure, told without the body of what was sent.
pub(crate) fn api_error(what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => Error::Cluster(format!("{what}: {} ({})", s.message, s.code)),
        e => Error::Cluster(format!("{what}: {e}")),
    }
}

/// This host's name as kubeadm names its Node by default: the kernel's host name, lower case.
pub fn default_node_name() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/hostname");
    let name = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(Error::Config(
            "this host has no name: give --node-name".into(),
        ));
    }
    Ok(name)
}
