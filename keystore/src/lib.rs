//! Connections to the external key stores, behind one neutral error type.
//!
//! Two users hold keys in the same stores: the KMS root key (`kms-plugin`'s `root_key`, which
//! wraps KEKs) and the service-account signing key (`kms-plugin`'s `jwt`, which signs tokens).
//! This crate owns what they share, the connection to each store, and nothing about what
//! either does with its key:
//!
//! - [`pkcs11`]: loading the module, finding the token by label, reading the PIN from its
//!   [`kms_config::SecretSource`], logging in, a pool of sessions, at most `max_sessions`
//!   blocking calls at once, and recovery when the token drops a session or goes away.
//! - [`private_file`]: reading a secret (PIN, signing key) from a file only its owner may read.
//! - [`aws`]: building the KMS client (credential chain, region, endpoint, timeouts, retries),
//!   retrying an unreachable KMS at startup, and classifying SDK errors.
//!
//! Every failure is a [`KeyStoreError`] of one [`ErrorKind`] (transient, denied, not found,
//! integrity, configuration) with a message; each user maps it into its own error and logs under
//! its own target. Algorithms stay with their user (AES-GCM wrapping of KEKs, ECDSA signing,
//! DER handling). Adding a key store (GCP KMS, Azure Key Vault, Vault transit) means one module
//! here, behind its own cargo feature, plus one adapter in each user.

mod error;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod private_file;

pub use error::{ErrorKind, KeyStoreError};
