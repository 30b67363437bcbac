//! Typed configuration for `kms-plugin`, loaded from YAML and validated before anything starts.
//!
//! Every value is checked while it is parsed, so an error names the file, the line and the reason,
//! and a value of these types is valid by construction: the backends that use it check nothing
//! again. A key store ([`BackendConfig`], [`JwtKeyConfig`]) is an enum holding exactly the
//! section its `kind` selects. Secrets (HSM PINs, cloud credentials) are never part of this
//! configuration: a [`SecretSource`] only names the file or environment variable that holds them.

mod backend;
mod error;
mod header_list;
mod location;
mod model;
mod peers;
mod risks;
mod secret_source;
mod socket;

pub use backend::{
    AwsBackend, BackendConfig, BackendKind, JwtKeyConfig, JwtLocalKey, LocalBackend, Pkcs11Backend,
    is_kms_key_arn,
};
pub use durable::HumanDuration;
pub use error::ConfigError;
pub use header_list::HeaderListSize;
pub use model::{
    BackendOutage, DecryptCacheConfig, HealthPolicy, JwtSignerConfig, LocalKekPolicy, LogFormat,
    PluginConfig, VerifyOnlyKey,
};
pub use peers::AllowedPeers;
pub use risks::{APISERVER_KMS_TIMEOUT, KEK_AGE_WARNING};
pub use secret_source::SecretSource;
pub use socket::{FileMode, MetricsAddress, SocketAddress};
