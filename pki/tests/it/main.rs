//! pki's integration tests, one test binary (linked once) with a module per subject.
//!
//! Harnesses: [`common`] (the real binary, openssl, an independent x509-parser view),
//! [`etcd_support`] (a real etcd member) and
//! [`rotate_support`] (what the `rotate_*` modules share).

mod common;
mod etcd_support;
mod rotate_support;
mod static_pod;

mod autopilot;
mod autopilot_etcd;
mod crash_renames;
mod csr;
mod expiry;
mod external_ca;
mod generate_csr;
mod init;
mod kubeadm_config;
mod kubeadm_versions;
mod kubelet;
mod renew;
mod rotate_crash;
mod rotate_dry_run;
mod rotate_etcd;
mod rotate_ha;
mod rotate_phases;
mod rotate_tls;
mod validation;
