//! The cluster parameters that shape the PKI (node name, addresses, service CIDR, SANs,
//! algorithm, validity), and helpers to derive values from them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;
use crate::version::KubernetesVersion;

/// kubeadm's default CA validity (10 years).
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// kubeadm's default leaf validity (1 year).
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// How far notBefore is backdated to absorb clock skew (kubeadm: 5 minutes).
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Everything `init` needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSpec {
    /// Node name (etcd CN, apiserver SAN, kubelet.conf identity).
    pub node_name: String,
    /// The API server advertise address.
    pub advertise_address: IpAddr,
    /// The API server port.
    pub bind_port: u16,
    /// `host[:port]` of the control-plane endpoint (load balancer), if any.
    pub control_plane_endpoint: Option<String>,
    /// First IP of each service CIDR (one per family when dual-stack).
    pub service_ips: Vec<IpAddr>,
    /// Service DNS domain (`cluster.local`).
    pub dns_domain: String,
    /// Extra apiserver SANs.
    pub apiserver_extra_sans: Vec<String>,
    /// Extra etcd server SANs.
    pub etcd_server_extra_sans: Vec<String>,
    /// Extra etcd peer SANs.
    pub etcd_peer_extra_sans: Vec<String>,
    /// Key algorithm for new keys.
    pub key_algorithm: KeyAlgorithm,
    /// Validity of new CAs.
    pub ca_validity: Duration,
    /// Validity of new leaves.
    pub leaf_validity: Duration,
    /// The Kubernetes version whose kubeadm subjects and file set are reproduced.
    pub kubernetes_version: KubernetesVersion,
    /// `clusterName`: the kubeconfig cluster name (and context suffix).
    pub cluster_name: String,
    /// A control-plane node joining an existing cluster (no `super-admin.conf`).
    pub control_plane_join: bool,
    /// `etcd.external`: no etcd CA and no etcd certificates are created here (the API server's
    /// etcd client certificate comes from the external etcd's operator).
    pub etcd_external: bool,
}

impl ClusterSpec {
    /// A spec with kubeadm's defaults for the given node and address.
    pub fn new(node_name: impl Into<String>, advertise_address: IpAddr) -> Self {
        ClusterSpec {
            node_name: node_name.into(),
            advertise_address,
            bind_port: 6443,
            control_plane_endpoint: None,
            service_ips: vec![IpAddr::from([10, 96, 0, 1])],
            dns_domain: "cluster.local".to_owned(),
            apiserver_extra_sans: Vec::new(),
            etcd_server_extra_sans: Vec::new(),
            etcd_peer_extra_sans: Vec::new(),
            key_algorithm: KeyAlgorithm::default(),
            ca_validity: DEFAULT_CA_VALIDITY,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            kubernetes_version: KubernetesVersion::default(),
            cluster_name: crate::kubeconfig::CLUSTER_NAME.to_owned(),
            control_plane_join: false,
            etcd_external: false,
        }
    }

    /// The API server URL of this node: `https://<advertise address>:<bind port>` (what
    /// controller-manager.conf and scheduler.conf use).
    pub fn local_server_url(&self) -> String {
        format!(
            "https://{}:{}",
            bracket(&self.advertise_address.to_string()),
            self.bind_port
        )
    }

    /// The host part of the control-plane endpoint.
    pub fn control_plane_host(&self) -> Option<String> {
        self.control_plane_endpoint
            .as_deref()
            .map(|e| split_host_port(e).0)
    }

    /// The cluster-wide API server URL (admin.conf, super-admin.conf, kubelet.conf):
    /// `https://<controlPlaneEndpoint or advertise address>:<port>`.
    pub fn server_url(&self) -> String {
        match &self.control_plane_endpoint {
            Some(ep) => {
                let (host, port) = split_host_port(ep);
                format!(
                    "https://{}:{}",
                    bracket(&host),
                    port.unwrap_or(self.bind_port)
                )
            }
            None => self.local_server_url(),
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Splits `host[:port]`, `[v6]:port` or a bare IPv6 address.
pub fn split_host_port(ep: &str) -> (String, Option<u16>) {
    if let Some(rest) = ep.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (
            host.to_owned(),
            tail.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    if ep.parse::<Ipv6Addr>().is_ok() {
        return (ep.to_owned(), None);
    }
    match ep.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h.to_owned(), Some(port)),
            Err(_) => (ep.to_owned(), None),
        },
        None => (ep.to_owned(), None),
    }
}

/// First usable IP of each CIDR in a comma-separated list (`10.96.0.0/12,fd00::/108`).
pub fn service_ips(cidrs: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for cidr in cidrs.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let bad = || Error::Config(format!("invalid service CIDR {cidr:?}"));
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        let ip = match addr.parse::<IpAddr>().map_err(|_| bad())? {
            IpAddr::V4(v4) => {
                if len > 30 {
                    return Err(bad());
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from((u32::from(v4) & mask) + 1))
            }
            IpAddr::V6(v6) => {
                if len > 126 {
                    return Err(bad());
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from((u128::from(v6) & mask) + 1))
            }
        };
        out.push(ip);
    }
    if out.is_empty() {
        return Err(Error::Config("empty service CIDR".to_owned()));
    }
    Ok(out)
}

/// The host name of this machine, lower-cased, as kubeadm's default node name.
pub fn default_node_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

/// The source address of the default route (what kubeadm picks as advertise address).
/// No packet is sent: connecting a UDP socket only selects a route.
pub fn default_advertise_address() -> Option<IpAddr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ips() {
        let v6 = IpAddr::from(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 1));
        assert_eq!(
            service_ips("10.96.0.0/12,fd00:10:96::/108").ok(),
            Some(vec![IpAddr::from([10, 96, 0, 1]), v6])
        );
        // Host bits in the CIDR are ignored, as kubeadm does.
        assert_eq!(
            service_ips(" 10.100.7.9/16 ").ok(),
            Some(vec![IpAddr::from([10, 100, 0, 1])])
        );
        assert!(service_ips("10.96.0.0").is_err());
        assert!(service_ips("10.96.0.0/31").is_err());
        assert!(service_ips("").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            split_host_port("lb.example:443"),
            ("lb.example".to_owned(), Some(443))
        );
        assert_eq!(
            split_host_port("[fd00::1]:6443"),
            ("fd00::1".to_owned(), Some(6443))
        );
        assert_eq!(split_host_port("fd00::1"), ("fd00::1".to_owned(), None));
        let mut s = ClusterSpec::new("n", IpAddr::from([10, 0, 0, 1]));
        assert_eq!(s.server_url(), "https://10.0.0.1:6443");
        s.control_plane_endpoint = Some("lb:8443".into());
        assert_eq!(s.server_url(), "https://lb:8443");
    }
}
