//! The one place that turns configuration into a root key backend.

use super::{RootKey, RootKeyError, local::LocalRootKey};
use kms_config::{BackendConfig, BackendKind};
use std::sync::Arc;

/// Builds the backend `config` selects.
pub async fn build(config: &BackendConfig) -> Result<Arc<dyn RootKey>, RootKeyError> {
    match config.kind {
        BackendKind::Local => {
            let local = config
                .local
                .as_ref()
                .ok_or_else(|| RootKeyError::Backend("backend.local is not configured".into()))?;
            Ok(Arc::new(LocalRootKey::open_or_init(&local.state_dir, local.poll_interval.get())?))
        }
        BackendKind::Pkcs11 | BackendKind::Aws => Err(RootKeyError::Unsupported(format!(
            "backend kind {:?} is not available in this build",
            config.kind
        ))),
    }
}
