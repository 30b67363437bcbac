//! kms-plugin's integration tests, one test binary (linked once) with a module per subject.
//!
//! Harnesses: [`common`] (the real binary on a real socket, SoftHSM2, moto) and [`conformance`]
//! (one scenario suite for every root key backend). Modules named after a backend need its
//! feature (`pkcs11`, `aws`) and are compiled out without it.
// Without every backend, the harness parts only the missing backends' modules use are unused.
#![cfg_attr(not(all(feature = "pkcs11", feature = "aws")), allow(dead_code))]

mod common;
mod conformance;

mod backend_aws;
mod backend_outage;
mod backend_pkcs11;
mod conformance_aws;
mod conformance_local;
mod conformance_pkcs11;
mod hostile_h2;
mod jwt_policy;
mod jwt_signer;
mod jwt_signer_aws;
mod jwt_signer_hsm;
mod kek_outage;
mod key_revocation;
mod kms_v2;
mod local_state_dir;
mod metrics_flood;
mod observability;
mod peer_access;
mod prometheus_rules;
mod socket_lifecycle;
mod untrusted_logs;
