//! A Kubernetes KMS v2 plugin.
//!
//! kube-apiserver asks the plugin to seal and open the seeds behind etcd Secret encryption. The
//! plugin keeps a two-tier envelope: a root key that never leaves its [`root_key`] backend wraps
//! local key-encrypting keys, and those seal the seeds ([`envelope`]). The [`server`] serves the
//! gRPC contract on a Unix socket; [`health`] probes the root key in the background. The
//! optional [`jwt`] signer keeps kube-apiserver's service-account signing key in the same kinds
//! of store. Both reach an HSM or AWS KMS through the `keystore` crate, which owns the
//! connection; their `pkcs11` and `aws` modules only add their algorithms and map its errors.

pub mod client;
pub mod envelope;
pub mod exposition;
pub mod health;
pub mod jwt;
pub mod log_text;
pub mod metrics;
pub mod process_metrics;
pub mod root_key;
pub mod secret;
pub mod server;
pub mod status_detail;
pub mod telemetry;
pub mod time_text;
