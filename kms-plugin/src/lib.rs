//! A Kubernetes KMS v2 plugin.
//!
//! kube-apiserver asks the plugin to seal and open the seeds behind etcd Secret encryption. The
//! plugin keeps a two-tier envelope: a root key that never leaves its [`root_key`] backend wraps
//! local key-encrypting keys, and those seal the seeds ([`envelope`]). The [`server`] serves the
//! gRPC contract on a Unix socket; [`health`] probes the root key in the background.
#![deny(unsafe_code)]

pub mod client;
pub mod envelope;
pub mod health;
pub mod jwt;
pub mod metrics;
pub mod root_key;
pub mod secret;
pub mod server;
pub mod telemetry;
