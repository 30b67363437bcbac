//! The kubeadm PKI table as data: which CAs, leaves and kubeconfigs exist, where they live,
//! their subjects, usages and SAN rules, and which components read them.

use std::net::IpAddr;

use crate::spec::ClusterSpec;

/// The three certificate authorities of a kubeadm control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CaId {
    /// `ca.crt` — the cluster CA (API server, kubelets, kubeconfigs).
    Ca,
    /// `front-proxy-ca.crt` — the aggregation-layer CA.
    FrontProxyCa,
    /// `etcd/ca.crt` — the etcd CA.
    EtcdCa,
}

/// A CA in the kubeadm layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaProfile {
    /// Which CA.
    pub id: CaId,
    /// Name as `kubeadm certs check-expiration` prints it.
    pub name: &'static str,
    /// Path of `.crt`/`.key` relative to the cert dir, without extension.
    pub base: &'static str,
    /// Subject CN.
    pub common_name: &'static str,
    /// DNS SANs: kubeadm gives every CA one DNS SAN equal to its CN.
    pub dns_names: &'static [&'static str],
}

/// Extended key usages of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Usage {
    /// serverAuth only.
    Server,
    /// clientAuth only.
    Client,
    /// serverAuth and clientAuth.
    ServerClient,
}

impl Usage {
    /// Whether serverAuth is present.
    pub fn server(self) -> bool {
        matches!(self, Usage::Server | Usage::ServerClient)
    }
    /// Whether clientAuth is present.
    pub fn client(self) -> bool {
        matches!(self, Usage::Client | Usage::ServerClient)
    }
}

/// How a subject CN is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommonName {
    /// A fixed string.
    Fixed(&'static str),
    /// The node name.
    NodeName,
    /// `system:node:<node name>`.
    SystemNode,
}

impl CommonName {
    /// Resolves the CN for a node.
    pub fn resolve(self, node_name: &str) -> String {
        match self {
            CommonName::Fixed(s) => s.to_owned(),
            CommonName::NodeName => node_name.to_owned(),
            CommonName::SystemNode => format!("system:node:{node_name}"),
        }
    }
}

/// Which SANs a leaf must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SanRule {
    /// No SANs.
    None,
    /// The kube-apiserver serving certificate SANs.
    ApiServer,
    /// etcd server SANs (+ etcd.local.serverCertSANs).
    EtcdServer,
    /// etcd peer SANs (+ etcd.local.peerCertSANs).
    EtcdPeer,
}

/// A leaf certificate under the cert dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafProfile {
    /// Name as kubeadm prints it (`apiserver`, `etcd-server`, ...), also the `renew` name.
    pub name: &'static str,
    /// Path of `.crt`/`.key` relative to the cert dir, without extension.
    pub base: &'static str,
    /// Signing CA.
    pub ca: CaId,
    /// Subject CN.
    pub common_name: CommonName,
    /// Subject O values (of the newest version; see [`crate::version`]).
    pub organizations: &'static [&'static str],
    /// Extended key usages.
    pub usage: Usage,
    /// SAN rule.
    pub sans: SanRule,
    /// Components that must restart to pick up a new version of this file.
    pub restart: &'static [&'static str],
}

/// Which API server address a kubeconfig points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `controlPlaneEndpoint` when set, else this node's advertise address and bind port.
    ControlPlane,
    /// This node's advertise address and bind port (controller-manager, scheduler).
    Local,
}

/// A kubeconfig with an embedded client certificate signed by the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeconfigProfile {
    /// File name in the kubeconfig dir, also the `renew` name.
    pub file: &'static str,
    /// Subject CN (also the kubeconfig user name).
    pub common_name: CommonName,
    /// Subject O values (of the newest version; see [`crate::version`]).
    pub organizations: &'static [&'static str],
    /// The API server it points at.
    pub endpoint: Endpoint,
    /// Components that must restart to pick up a new version of this file.
    pub restart: &'static [&'static str],
    /// Whether `renew` handles it (kubeadm leaves kubelet.conf to the kubelet's own rotation).
    pub renewable: bool,
}

/// The CAs, in kubeadm's order.
pub const CAS: &[CaProfile] = &[
    CaProfile {
        id: CaId::Ca,
        name: "ca",
        base: "ca",
        common_name: "kubernetes",
        dns_names: &["kubernetes"],
    },
    CaProfile {
        id: CaId::EtcdCa,
        name: "etcd-ca",
        base: "etcd/ca",
        common_name: "etcd-ca",
        dns_names: &["etcd-ca"],
    },
    CaProfile {
        id: CaId::FrontProxyCa,
        name: "front-proxy-ca",
        base: "front-proxy-ca",
        common_name: "front-proxy-ca",
        dns_names: &["front-proxy-ca"],
    },
];

/// The leaves under the cert dir.
pub const LEAVES: &[LeafProfile] = &[
    LeafProfile {
        name: "apiserver",
        base: "apiserver",
        ca: CaId::Ca,
        common_name: CommonName::Fixed("kube-apiserver"),
        organizations: &[],
        usage: Usage::Server,
        sans: SanRule::ApiServer,
        restart: &["kube-apiserver"],
    },
    LeafProfile {
        name: "apiserver-kubelet-client",
        base: "apiserver-kubelet-client",
        ca: CaId::Ca,
        common_name: CommonName::Fixed("kube-apiserver-kubelet-client"),
        organizations: &[],
        usage: Usage::Client,
        sans: SanRule::None,
        restart: &["kube-apiserver"],
    },
    LeafProfile {
        name: "front-proxy-client",
        base: "front-proxy-client",
        ca: CaId::FrontProxyCa,
        common_name: CommonName::Fixed("front-proxy-client"),
        organizations: &[],
        usage: Usage::Client,
        sans: SanRule::None,
        restart: &["kube-apiserver"],
    },
    LeafProfile {
        name: "etcd-server",
        base: "etcd/server",
        ca: CaId::EtcdCa,
        common_name: CommonName::NodeName,
        organizations: &[],
        usage: Usage::ServerClient,
        sans: SanRule::EtcdServer,
        restart: &["etcd"],
    },
    LeafProfile {
        name: "etcd-peer",
        base: "etcd/peer",
        ca: CaId::EtcdCa,
        common_name: CommonName::NodeName,
        organizations: &[],
        usage: Usage::ServerClient,
        sans: SanRule::EtcdPeer,
        restart: &["etcd"],
    },
    LeafProfile {
        name: "etcd-healthcheck-client",
        base: "etcd/healthcheck-client",
        ca: CaId::EtcdCa,
        common_name: CommonName::Fixed("kube-etcd-healthcheck-client"),
        organizations: &[],
        usage: Usage::Client,
        sans: SanRule::None,
        // Read by each run of the etcd liveness probe / etcdctl; nothing long-running holds it.
        restart: &[],
    },
    LeafProfile {
        name: "apiserver-etcd-client",
        base: "apiserver-etcd-client",
        ca: CaId::EtcdCa,
        common_name: CommonName::Fixed("kube-apiserver-etcd-client"),
        organizations: &[],
        usage: Usage::Client,
        sans: SanRule::None,
        restart: &["kube-apiserver"],
    },
];

/// The kubeconfigs in the kubeconfig dir.
pub const KUBECONFIGS: &[KubeconfigProfile] = &[
    KubeconfigProfile {
        file: "admin.conf",
        common_name: CommonName::Fixed("kubernetes-admin"),
        organizations: &["kubeadm:cluster-admins"],
        endpoint: Endpoint::ControlPlane,
        restart: &[],
        renewable: true,
    },
    KubeconfigProfile {
        file: "super-admin.conf",
        common_name: CommonName::Fixed("kubernetes-super-admin"),
        organizations: &["system:masters"],
        endpoint: Endpoint::ControlPlane,
        restart: &[],
        renewable: true,
    },
    KubeconfigProfile {
        file: "controller-manager.conf",
        common_name: CommonName::Fixed("system:kube-controller-manager"),
        organizations: &[],
        endpoint: Endpoint::Local,
        restart: &["kube-controller-manager"],
        renewable: true,
    },
    KubeconfigProfile {
        file: "scheduler.conf",
        common_name: CommonName::Fixed("system:kube-scheduler"),
        organizations: &[],
        endpoint: Endpoint::Local,
        restart: &["kube-scheduler"],
        renewable: true,
    },
    KubeconfigProfile {
        file: "kubelet.conf",
        common_name: CommonName::SystemNode,
        organizations: &["system:nodes"],
        endpoint: Endpoint::ControlPlane,
        restart: &["kubelet"],
        renewable: false,
    },
];

/// The CA profile for an id.
pub fn ca_profile(id: CaId) -> &'static CaProfile {
    match id {
        CaId::Ca => &CAS[0],
        CaId::EtcdCa => &CAS[1],
        CaId::FrontProxyCa => &CAS[2],
    }
}

/// Whether the etcd CA `id` or a leaf it signs is part of a cluster whose etcd is (not) external.
pub fn etcd_applies(ca: CaId, etcd_external: bool) -> bool {
    !(etcd_external && ca == CaId::EtcdCa)
}

/// Looks a leaf up by its kubeadm name.
pub fn leaf_by_name(name: &str) -> Option<&'static LeafProfile> {
    LEAVES.iter().find(|l| l.name == name)
}

/// Whether `kc` belongs on a node of `version` (super-admin.conf: from 1.29, init node only).
pub fn kubeconfig_expected(
    kc: &KubeconfigProfile,
    version: crate::version::KubernetesVersion,
    control_plane_join: bool,
) -> bool {
    kc.file != "super-admin.conf" || (version.has_super_admin() && !control_plane_join)
}

/// Looks a kubeconfig up by file name.
pub fn kubeconfig_by_name(name: &str) -> Option<&'static KubeconfigProfile> {
    KUBECONFIGS.iter().find(|k| k.file == name)
}

/// SANs a certificate must carry (or carries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
    /// Email addresses (only from CSRs for the kube-apiserver-client signer).
    pub emails: Vec<String>,
    /// URIs (only from CSRs for the kube-apiserver-client signer).
    pub uris: Vec<String>,
}

impl Sans {
    /// Adds a name: an IP address when it parses as one, else a DNS name. Duplicates are skipped.
    pub fn add(&mut self, name: &str) {
        match name.parse::<IpAddr>() {
            Ok(ip) => self.add_ip(ip),
            Err(_) => {
                if !name.is_empty() && !self.dns.iter().any(|d| d == name) {
                    self.dns.push(name.to_owned());
                }
            }
        }
    }

    /// Adds an IP address unless present.
    pub fn add_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// The names of `self` that `other` lacks, formatted for a message.
    pub fn missing_from(&self, dns: &[String], ips: &[IpAddr]) -> Vec<String> {
        let mut out: Vec<String> = self
            .dns
            .iter()
            .filter(|d| !dns.iter().any(|x| x.eq_ignore_ascii_case(d)))
            .map(|d| format!("DNS:{d}"))
            .collect();
        out.extend(
            self.ips
                .iter()
                .filter(|ip| !ips.contains(ip))
                .map(|ip| format!("IP:{ip}")),
        );
        out
    }
}

/// The SANs a leaf must carry for the given cluster.
pub fn required_sans(rule: SanRule, spec: &ClusterSpec) -> Sans {
    let mut s = Sans::default();
    match rule {
        SanRule::None => {}
        SanRule::ApiServer => {
            s.add(&spec.node_name);
            for d in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                s.add(d);
            }
            s.add(&format!("kubernetes.default.svc.{}", spec.dns_domain));
            // kubeadm: the first IP of the first service CIDR only, even when dual-stack.
            if let Some(ip) = spec.service_ips.first() {
                s.add_ip(*ip);
            }
            s.add_ip(spec.advertise_address);
            if let Some(host) = spec.control_plane_host() {
                s.add(&host);
            }
            for extra in &spec.apiserver_extra_sans {
                s.add(extra);
            }
        }
        SanRule::EtcdServer | SanRule::EtcdPeer => {
            s.add(&spec.node_name);
            s.add("localhost");
            s.add_ip(spec.advertise_address);
            s.add_ip(IpAddr::from([127, 0, 0, 1]));
            s.add_ip(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
            let extra = if rule == SanRule::EtcdServer {
                &spec.etcd_server_extra_sans
            } else {
                &spec.etcd_peer_extra_sans
            };
            for e in extra {
                s.add(e);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_lookup_matches_table() {
        for c in CAS {
            assert_eq!(ca_profile(c.id).id, c.id);
        }
    }

    #[test]
    fn apiserver_sans_follow_the_table() {
        let mut spec = ClusterSpec::new("node-a", IpAddr::from([10, 0, 0, 2]));
        spec.control_plane_endpoint = Some("lb.example:6443".into());
        spec.apiserver_extra_sans = vec!["10.0.0.2".into(), "x.example".into()];
        let s = required_sans(SanRule::ApiServer, &spec);
        assert_eq!(
            s.dns,
            [
                "node-a",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "lb.example",
                "x.example"
            ]
        );
        assert_eq!(
            s.ips,
            [IpAddr::from([10, 96, 0, 1]), IpAddr::from([10, 0, 0, 2])]
        );
        assert_eq!(
            s.missing_from(&["NODE-A".into()], &[IpAddr::from([10, 96, 0, 1])])
                .len(),
            s.dns.len() - 1 + 1
        );
    }
}
