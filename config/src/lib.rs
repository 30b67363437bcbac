//! Typed configuration for `kms-plugin`, loaded from YAML and validated before anything starts.
//!
//! Every value is checked while it is parsed, so an error names the file, the line and the reason.
//! Secrets (HSM PINs, cloud credentials) are never part of this configuration: it only names the
//! file or environment variable that holds them.
#![forbid(unsafe_code)]

mod error;
mod model;
mod socket;

pub use durable::HumanDuration;
pub use error::ConfigError;
pub use model::{
    AwsBackend, BackendConfig, BackendKind, DecryptCacheConfig, JwtKeyConfig, JwtLocalKey,
    JwtSignerConfig, LocalBackend, LocalKekPolicy, LogFormat, Pkcs11Backend, PluginConfig,
    SecretSource, VerifyOnlyKey,
};
pub use socket::{FileMode, MetricsAddress, SocketAddress};
