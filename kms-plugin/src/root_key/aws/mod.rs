//! The AWS KMS backend: a symmetric KMS key wraps local KEKs.
//!
//! - The configured `key_id` may be a key ARN, a key id, an alias name (`alias/...`) or an
//!   alias ARN. It is resolved with DescribeKey to the key ARN, which is the key id reported to
//!   kube-apiserver; [`RootKey::refresh`] re-resolves it every `key_refresh_interval` (and on
//!   SIGHUP), so pointing an alias at a new key is a rotation the apiserver sees.
//! - Wrap is KMS Encrypt of the 32-byte KEK under the resolved key ARN (not the alias), so the
//!   key id Encrypt reports always equals the one Status reports, as kube-apiserver requires;
//!   an alias change takes effect for new data at the next refresh.
//! - Unwrap is KMS Decrypt with `KeyId` = that ARN, only for a key this plugin knows: the
//!   resolved current key, every key the configured `key_id` resolved to since the start, and
//!   `previous_key_ids`. A ciphertext naming any other key (another account's, say) is refused
//!   locally, without a KMS call: the plugin never spends its credentials on a foreign key.
//!   After pointing the alias at a new key, add the old key's ARN to `previous_key_ids` so its
//!   data still decrypts after a restart.
//! - [`RootKey::key_state`] reads the current key's `KeyState` with DescribeKey, so the health
//!   probe sees a disabled key even where Encrypt would still answer.
//! - Both bind `encryption_context` (default `{"kubernetes.io/kms-plugin": "kms-plugin"}`).
//! - At startup an unreachable KMS is retried with jittered backoff for `startup_timeout`; then
//!   startup fails with the last error. Access denied, unknown or disabled keys fail at once.
//! - Each KMS request logs one `debug` line with target `kms_plugin::root_key::remote`.
//! - The client, its retries and timeouts, the startup retry and the classification of SDK
//!   errors are the `keystore` crate's; this module maps them into [`RootKeyError`].
//!
//! The KEK travels inside the SDK's request and response bodies, which the SDK does not zeroize;
//! the plugin zeroizes its own copies.
//!
//! # Configuration
//!
//! ```yaml
//! backend_timeout: 2s              # the envelope's deadline; keep operation_timeout within it
//! backend:
//!   kind: aws
//!   aws:
//!     key_id: alias/kms-plugin     # rotate by pointing the alias at a new key
//!     region: eu-west-1
//!     encryption_context: {kubernetes.io/cluster: prod-1}
//!     key_refresh_interval: 5m
//!     max_attempts: 3
//!     attempt_timeout: 800ms
//!     operation_timeout: 2s
//!     startup_timeout: 30s
//!     previous_key_ids: [arn:aws:kms:eu-west-1:111122223333:key/1234abcd-...]
//! ```
//!
//! The plugin's identity needs `kms:DescribeKey`, `kms:Encrypt` and `kms:Decrypt` on the key
//! (and on every earlier key whose wrapped KEKs are still stored); the encryption context can be
//! pinned in the key policy with `kms:EncryptionContext:<key>` conditions.

mod error;

use super::{KeyId, RootKey, RootKeyError, WrappedKey};
use crate::secret::AesKey;
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};
use error::root_key_error;
use keystore::KeyStoreError;
use keystore::aws::{build, map_sdk_error, retry_at_startup};
use kms_config::AwsBackend;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;
use zeroize::Zeroizing;

/// A symmetric key in AWS KMS.
pub struct AwsRootKey {
    client: aws_sdk_kms::Client,
    configured: String,
    context: HashMap<String, String>,
    current: RwLock<KeyId>,
    /// Key ARNs Decrypt may ask KMS about: `previous_key_ids` and every resolved current key.
    known: RwLock<HashSet<String>>,
    refresh_interval: Duration,
}

fn remote_call(op: &'static str, key: &str) {
    tracing::debug!(target: "kms_plugin::root_key::remote", backend = "aws", op, key, "remote call");
}

use kms_config::is_kms_key_arn as is_key_arn;

/// Resolves `key` to the ARN of an enabled symmetric encryption key.
async fn describe(client: &aws_sdk_kms::Client, key: &str) -> Result<KeyId, KeyStoreError> {
    remote_call("describe_key", key);
    let out = client
        .describe_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| map_sdk_error("DescribeKey", key, e))?;
    let meta = out.key_metadata().ok_or_else(|| {
        KeyStoreError::configuration(format!("DescribeKey {key}: no key metadata in the answer"))
    })?;
    let arn = meta.arn().and_then(KeyId::new).ok_or_else(|| {
        KeyStoreError::configuration(format!(
            "DescribeKey {key}: no usable key ARN in the answer"
        ))
    })?;
    if meta.key_state() != Some(&KeyState::Enabled) {
        return Err(KeyStoreError::denied(format!(
            "KMS key {arn} is {:?}, not Enabled",
            meta.key_state()
        )));
    }
    // Fields missing from the answer (moto omits KeyUsage) are not held against the key.
    if meta
        .key_usage()
        .is_some_and(|usage| usage != &KeyUsageType::EncryptDecrypt)
        || meta
            .key_spec()
            .is_some_and(|spec| spec != &KeySpec::SymmetricDefault)
    {
        return Err(KeyStoreError::configuration(format!(
            "KMS key {arn} is not a symmetric ENCRYPT_DECRYPT key (SYMMETRIC_DEFAULT): usage {:?}, spec {:?}",
            meta.key_usage(),
            meta.key_spec()
        )));
    }
    Ok(arn)
}

impl AwsRootKey {
    /// Builds the client and resolves the configured key to its ARN (see the module docs for
    /// what happens while KMS is unreachable).
    pub async fn connect(config: &AwsBackend) -> Result<Self, RootKeyError> {
        let client = build(config).await?;
        let arn = retry_at_startup(
            config.startup_timeout.get(),
            "backend.aws.startup_timeout",
            || describe(&client, &config.key_id),
        )
        .await
        .map_err(|e| root_key_error(&config.key_id, e))?;
        tracing::info!(key = %config.key_id, key_arn = %arn, "resolved the AWS KMS root key");
        let mut known: HashSet<String> = config.previous_key_ids.iter().cloned().collect();
        known.insert(arn.to_string());
        Ok(Self {
            client,
            configured: config.key_id.clone(),
            context: config
                .encryption_context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            current: RwLock::new(arn),
            known: RwLock::new(known),
            refresh_interval: config.key_refresh_interval.get(),
        })
    }

    fn is_known(&self, key_id: &KeyId) -> bool {
        match self.known.read() {
            Ok(known) => known.contains(key_id.as_str()),
            Err(poisoned) => poisoned.into_inner().contains(key_id.as_str()),
        }
    }

    fn set_current(&self, arn: KeyId) {
        match self.known.write() {
            Ok(mut known) => known.insert(arn.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(arn.to_string()),
        };
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *guard != arn {
            tracing::info!(key = %self.configured, old_key_arn = %*guard, new_key_arn = %arn, "the configured KMS key now resolves to a new key");
            *guard = arn;
        }
    }
}

#[async_trait]
impl RootKey for AwsRootKey {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn primary_key_id(&self) -> KeyId {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn wrap_kek(&self, key: &AesKey) -> Result<WrappedKey, RootKeyError> {
        // Encrypt under the resolved ARN, not the alias: the answer's key id then always equals
        // what Status reports, even between an alias change and the next refresh.
        let arn = self.primary_key_id();
        remote_call("encrypt", arn.as_str());
        let out = self
            .client
            .encrypt()
            .key_id(arn.as_str())
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(Some(self.context.clone()))
            .send()
            .await
            .map_err(|e| root_key_error(arn.as_str(), map_sdk_error("Encrypt", arn.as_str(), e)))?;
        if let Some(answered) = out.key_id().filter(|answered| *answered != arn.as_str()) {
            return Err(RootKeyError::Backend(format!(
                "KMS Encrypt under {arn} answered for another key, {answered}"
            )));
        }
        let ciphertext = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                RootKeyError::Backend("KMS Encrypt answered without a ciphertext".into())
            })?;
        Ok(WrappedKey {
            key_id: arn,
            ciphertext,
        })
    }

    async fn unwrap_kek(&self, key_id: &KeyId, wrapped: &[u8]) -> Result<AesKey, RootKeyError> {
        if !is_key_arn(key_id.as_str()) || !self.is_known(key_id) {
            tracing::debug!(key = %key_id, "refused locally: not a key this plugin knows");
            return Err(RootKeyError::UnknownKey(key_id.to_string()));
        }
        if wrapped.is_empty() {
            return Err(RootKeyError::Integrity(key_id.to_string()));
        }
        remote_call("decrypt", key_id.as_str());
        let out = self
            .client
            .decrypt()
            .key_id(key_id.as_str())
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .set_encryption_context(Some(self.context.clone()))
            .send()
            .await
            .map_err(|e| {
                root_key_error(
                    key_id.as_str(),
                    map_sdk_error("Decrypt", key_id.as_str(), e),
                )
            })?;
        let plaintext = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        AesKey::from_slice(&plaintext).ok_or_else(|| RootKeyError::Integrity(key_id.to_string()))
    }

    async fn refresh(&self) -> Result<(), RootKeyError> {
        let arn = describe(&self.client, &self.configured)
            .await
            .map_err(|e| root_key_error(&self.configured, e))?;
        self.set_current(arn);
        Ok(())
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    async fn key_state(&self) -> Result<(), RootKeyError> {
        self.version_state(&self.primary_key_id()).await
    }

    async fn version_state(&self, key_id: &KeyId) -> Result<(), RootKeyError> {
        remote_call("describe", key_id.as_str());
        describe(&self.client, key_id.as_str())
            .await
            .map(|_| ())
            .map_err(|e| root_key_error(key_id.as_str(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kms_key_arns_are_key_ids() {
        assert!(is_key_arn(
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        ));
        assert!(is_key_arn(
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/k"
        ));
        assert!(!is_key_arn("arn:aws:kms:us-east-1:123456789012:alias/root"));
        assert!(!is_key_arn("arn:aws:kms:us-east-1:123456789012:key/"));
        assert!(!is_key_arn("local:v1:abcd"));
        assert!(!is_key_arn("pkcs11:root:00"));
    }
}
