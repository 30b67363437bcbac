//! kubeadm-compatible cluster PKI manager.
//!
//! Issues and checks the control-plane PKI in the layout kubeadm uses (`/etc/kubernetes/pki`
//! and the kubeconfigs in `/etc/kubernetes`), so it can take over an existing kubeadm cluster or
//! bootstrap a new one. The `pki` binary is a thin front end over these modules:
//!
//! | module | job |
//! |---|---|
//! | [`profile`] | the kubeadm table as data: CAs, leaves, kubeconfigs, subjects, usages, SAN rules, restarts |
//! | [`spec`] | cluster parameters (node, addresses, service CIDRs, algorithm, validity) |
//! | [`key`] | key generation/loading; [`key::PrivateKey`] zeroizes on drop and never prints itself |
//! | [`issue`] | self-signed CAs and leaves from a [`issue::CertSpec`] |
//! | [`inspect`] | parsing certificates and bundles, signature and key-match checks |
//! | [`layout`] | file locations and loading CAs/leaves with their checks |
//! | [`store`] | crash-safe writes and the directory lock ([`durable`]), naming the file in errors |
//! | [`kubeconfig`] | rendering and reading kubeconfigs |
//! | [`init`], [`renew`], [`kubelet`], [`csr`], [`expiry`], [`generate_csr`], [`recover`] | the subcommands |
//! | [`dry_run`] | `--dry-run`: a command on a scratch copy, reporting what it would change |
//! | [`autopilot`] | unattended renewal pass: policy, renew, restart static pods one at a time, roll back, metrics |
//! | [`rotate`] | zero-downtime rotation of the CAs and the service-account key |
//! | [`kubeadm_config`] | reading a kubeadm `ClusterConfiguration` (+ Init/JoinConfiguration) |
//! | [`version`] | the Kubernetes versions supported and what of the PKI depends on them |
//! | [`node_state`] | the version and role `init` recorded for this node |
//!
//! The pieces a CA rotation needs are public on purpose: [`layout::load_ca_at`] loads a CA
//! staged anywhere, [`issue::issue`] signs any public key with any CA, [`inspect::pem_bundle`]
//! builds old+new trust bundles, [`kubeconfig::render`] accepts a bundle as CA data, and
//! [`store::write_atomic`] / [`store::write_many_atomic`] replace files without torn states.

pub mod autopilot;
pub mod cluster;
pub mod csr;
pub mod dry_run;
pub mod duration;
pub mod error;
pub mod expiry;
pub mod generate_csr;
pub mod init;
pub mod inspect;
pub mod issue;
pub mod key;
pub mod kubeadm_config;
pub mod kubeconfig;
pub mod kubelet;
pub mod layout;
pub mod node_state;
pub mod profile;
pub mod recover;
pub mod renew;
pub mod rotate;
pub mod spec;
pub mod store;
mod subject;
pub mod version;

pub use error::{Error, Result};
