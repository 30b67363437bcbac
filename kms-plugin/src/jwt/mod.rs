//! kube-apiserver's external service-account token signer (`ExternalJWTSigner`).
//!
//! The signing key lives behind [`SigningKey`] (a local PEM file, an HSM, or AWS KMS), so the
//! service-account key need never touch disk. [`KeySet`] is what FetchKeys publishes: the signing
//! key plus the public keys kept for a rotation overlap or for legacy tokens, reloaded when their
//! files change. [`service`] serves both the `v1` and `v1alpha1` packages.

#[cfg(feature = "aws")]
pub mod aws;
pub mod claims;
#[cfg(any(feature = "pkcs11", feature = "aws"))]
pub mod der;
pub mod key;
pub mod keyset;
pub mod local;
pub mod metrics;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod service;

pub use key::{JwsAlgorithm, SigningKey, SigningKeyError, kid_for};
pub use keyset::{KeySet, PublishedKey};
