//! The one place that turns configuration into a root key backend.

use super::{RootKey, RootKeyError, local::LocalRootKey};
use kms_config::BackendConfig;
use std::sync::Arc;

/// Builds the backend `config` selects.
pub async fn build(config: &BackendConfig) -> Result<Arc<dyn RootKey>, RootKeyError> {
    match config {
        BackendConfig::Local(local) if local.create_if_missing => Ok(Arc::new(
            LocalRootKey::open_or_init(&local.state_dir, local.poll_interval.get())?,
        )),
        BackendConfig::Local(local) => Ok(Arc::new(LocalRootKey::open(
            &local.state_dir,
            local.poll_interval.get(),
        )?)),
        #[cfg(feature = "pkcs11")]
        BackendConfig::Pkcs11(pkcs11) => {
            Ok(Arc::new(super::pkcs11::Pkcs11RootKey::open(pkcs11).await?))
        }
        #[cfg(feature = "aws")]
        BackendConfig::Aws(aws) => Ok(Arc::new(super::aws::AwsRootKey::connect(aws).await?)),
        #[allow(unreachable_patterns)]
        other => {
            let kind = other.kind();
            Err(RootKeyError::Unsupported(format!(
                "backend kind {kind:?} is not available in this build (cargo feature {:?} is off)",
                format!("{kind:?}").to_lowercase()
            )))
        }
    }
}
