//! The one place that turns configuration into a root key backend.

use super::{RootKey, RootKeyError, local::LocalRootKey};
use kms_config::{BackendConfig, BackendKind};
use std::sync::Arc;

/// Builds the backend `config` selects.
pub async fn build(config: &BackendConfig) -> Result<Arc<dyn RootKey>, RootKeyError> {
    let missing =
        |section: &str| RootKeyError::Backend(format!("backend.{section} is not configured"));
    match config.kind {
        BackendKind::Local => {
            let local = config.local.as_ref().ok_or_else(|| missing("local"))?;
            Ok(Arc::new(LocalRootKey::open_or_init(
                &local.state_dir,
                local.poll_interval.get(),
            )?))
        }
        #[cfg(feature = "pkcs11")]
        BackendKind::Pkcs11 => {
            let pkcs11 = config.pkcs11.as_ref().ok_or_else(|| missing("pkcs11"))?;
            Ok(Arc::new(super::pkcs11::Pkcs11RootKey::open(pkcs11).await?))
        }
        #[cfg(feature = "aws")]
        BackendKind::Aws => {
            let aws = config.aws.as_ref().ok_or_else(|| missing("aws"))?;
            Ok(Arc::new(super::aws::AwsRootKey::connect(aws).await?))
        }
        #[allow(unreachable_patterns)]
        kind => Err(RootKeyError::Unsupported(format!(
            "backend kind {kind:?} is not available in this build (cargo feature {:?} is off)",
            format!("{kind:?}").to_lowercase()
        ))),
    }
}
