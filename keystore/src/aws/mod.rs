//! AWS KMS: the client, retries and timeouts, startup retry, and SDK error mapping.
//!
//! [`build`] makes a client from an [`kms_config::AwsBackend`]: credentials from the SDK's
//! standard chain, the region and endpoint, an attempt and an operation timeout, and the SDK's
//! standard retry mode for `max_attempts`. [`retry_at_startup`] keeps retrying a KMS that is
//! unreachable for `startup_timeout`. [`map_sdk_error`] turns any failed call into a
//! [`KeyStoreError`](crate::KeyStoreError). The calls themselves (Encrypt, Decrypt, Sign, ...)
//! stay with the users, who know what they ask of their key.

mod client;
mod error;

pub use client::{build, jittered, retry_at_startup};
pub use error::{HttpStatus, map_sdk_error};
