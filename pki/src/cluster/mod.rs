//! The cluster's shared view, through the Kubernetes API (`--kubeconfig`): where every node's
//! rotation stands, kept in the cluster's own replicated store rather than in files an operator
//! copies between hosts.
//!
//! | module | job |
//! |---|---|
//! | [`client`] | the API connection from a kubeconfig, and the reads the gates need (Nodes, kubelet CSRs) |
//! | [`record`] | one ConfigMap per rotation in `kube-system`, one entry per node, changed only with its `resourceVersion` |
//! | [`handout`] | what the cluster hands out of the CA: `kube-root-ca.crt`, the serving ClusterTrustBundle, `cluster-info`, the pods that read them |
//! | [`serving`] | the certificate chain a server presents (the kubelets' serving certificates), read without trusting it |
//! | [`gate`] | what every node's state admits: switch, finish, abort, a second rotation |
//! | [`lease`] | `pki autopilot`'s cluster-wide restart permission, the Lease `kube-system/pki-autopilot` |
//! | [`coordinator`] | [`crate::rotate::Coordinator`] over the three: check the gate and record the step in one compare-and-swap |
//! | [`status`] | the whole cluster for `pki rotate <target> status --kubeconfig` |

pub mod client;
pub mod coordinator;
pub mod gate;
pub mod handout;
pub mod lease;
pub mod record;
pub mod serving;
pub mod status;

pub use client::{Cluster, NodeInfo, default_node_name};
pub use coordinator::ClusterCoordinator;
