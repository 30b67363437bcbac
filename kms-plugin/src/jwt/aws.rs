//! A service-account signing key in AWS KMS: an asymmetric `ECC_NIST_P256` `SIGN_VERIFY` key
//! (ES256).
//!
//! - At startup GetPublicKey returns the DER `SubjectPublicKeyInfo` FetchKeys publishes, and
//!   the key ARN the configured `key_id` (key id, ARN, alias or alias ARN) resolves to. An
//!   unreachable KMS is retried for `startup_timeout`; a key of another spec or usage is refused.
//! - Sign uses that ARN (not the alias, so a re-pointed alias never signs with a key whose public
//!   key is not published; SIGHUP re-resolves it), `ECDSA_SHA_256`, and `MessageType=RAW`: KMS
//!   hashes the signing input itself (RAW accepts up to 4096 bytes; longer inputs are refused).
//!   KMS answers a DER `ECDSA-Sig-Value`, converted here to JWS `r || s`.
//! - The client, its timeouts and retries (`attempt_timeout`, `operation_timeout`,
//!   `max_attempts`), the startup retry and the classification of SDK errors are the `keystore`
//!   crate's; this module maps its [`KeyStoreError`]s into [`SigningKeyError`] and logs each
//!   request with target `kms_plugin::jwt::remote`. `encryption_context` and
//!   `key_refresh_interval` do not apply to signing.
//!
//! The plugin's identity needs `kms:GetPublicKey` and `kms:Sign` on the key.
//!
//! Rotating to a new KMS key follows the three phases of the rotation guide: publish the new
//! key's public PEM in `verify_only_keys` (SIGHUP), point the alias at it and SIGHUP (it now
//! signs), keep the old key's public PEM in `verify_only_keys` until the longest token lifetime
//! has passed.

use super::der;
use super::key::{JwsAlgorithm, SigningKey, SigningKeyError};
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use keystore::aws::{build, map_sdk_error, retry_at_startup};
use keystore::{ErrorKind, KeyStoreError};
use kms_config::AwsBackend;

/// Longest message KMS signs with `MessageType=RAW`.
pub const MAX_RAW_MESSAGE_LEN: usize = 4096;

/// An ES256 signing key in AWS KMS.
pub struct AwsSigningKey {
    client: aws_sdk_kms::Client,
    key_arn: String,
    public_der: Vec<u8>,
}

fn remote_call(op: &'static str, key: &str) {
    tracing::debug!(target: "kms_plugin::jwt::remote", backend = "aws", op, key, "remote call");
}

/// Maps a failure of a call about `key`: transient failures are `Unavailable`, a key KMS does
/// not know is `other("KMS key <key> not found")`, the rest `other` with the key store's detail.
fn to_signing_error(
    key: &str,
    error: KeyStoreError,
    other: fn(String) -> SigningKeyError,
) -> SigningKeyError {
    match error.kind() {
        ErrorKind::Transient => SigningKeyError::Unavailable(error.into_message()),
        ErrorKind::NotFound => other(format!("KMS key {key} not found")),
        _ => other(error.into_message()),
    }
}

/// GetPublicKey: the key ARN and its DER public key, refused unless ECC_NIST_P256 / SIGN_VERIFY.
async fn public_key(
    client: &aws_sdk_kms::Client,
    key: &str,
) -> Result<(String, Vec<u8>), KeyStoreError> {
    remote_call("get_public_key", key);
    let out = client
        .get_public_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| map_sdk_error("GetPublicKey", key, e))?;
    // moto leaves KeySpec out of the answer; the DER check below then decides the curve.
    if out
        .key_spec()
        .is_some_and(|spec| spec != &KeySpec::EccNistP256)
        || out.key_usage() != Some(&KeyUsageType::SignVerify)
    {
        return Err(KeyStoreError::configuration(format!(
            "KMS key {key} must be an asymmetric ECC_NIST_P256 key with key usage SIGN_VERIFY for ES256 signing; it is {:?} / {:?}",
            out.key_spec().map(KeySpec::as_str),
            out.key_usage().map(KeyUsageType::as_str)
        )));
    }
    let arn = out
        .key_id()
        .filter(|arn| !arn.is_empty())
        .ok_or_else(|| {
            KeyStoreError::configuration(format!("GetPublicKey {key}: no key ARN in the answer"))
        })?
        .to_owned();
    let der = out.public_key.map(Blob::into_inner).unwrap_or_default();
    // The answer must be the canonical P-256 SubjectPublicKeyInfo: the kid is a hash of it.
    let canonical = der
        .len()
        .checked_sub(der::P256_POINT_LEN)
        .and_then(|start| der::p256_spki(&der[start..]).ok());
    if canonical.as_deref() != Some(der.as_slice()) {
        return Err(KeyStoreError::configuration(format!(
            "GetPublicKey {key}: the public key is not a P-256 SubjectPublicKeyInfo ({} bytes)",
            der.len()
        )));
    }
    Ok((arn, der))
}

impl AwsSigningKey {
    /// Builds the client and fetches the public key, retrying an unreachable KMS for
    /// `startup_timeout`.
    pub async fn connect(config: &AwsBackend) -> Result<Self, SigningKeyError> {
        let client = build(config)
            .await
            .map_err(|e| to_signing_error(&config.key_id, e, SigningKeyError::Load))?;
        let (key_arn, public_der) = retry_at_startup(
            config.startup_timeout.get(),
            "jwt_signer.key.aws.startup_timeout",
            || public_key(&client, &config.key_id),
        )
        .await
        .map_err(|e| to_signing_error(&config.key_id, e, SigningKeyError::Load))?;
        tracing::info!(key = %config.key_id, key_arn = %key_arn, "resolved the AWS KMS signing key");
        Ok(Self {
            client,
            key_arn,
            public_der,
        })
    }
}

#[async_trait]
impl SigningKey for AwsSigningKey {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::Es256
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        if message.len() > MAX_RAW_MESSAGE_LEN {
            return Err(SigningKeyError::Sign(format!(
                "the JWS signing input is {} bytes; AWS KMS signs at most {MAX_RAW_MESSAGE_LEN} bytes with MessageType=RAW",
                message.len()
            )));
        }
        remote_call("sign", &self.key_arn);
        let out = self
            .client
            .sign()
            .key_id(&self.key_arn)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| {
                to_signing_error(
                    &self.key_arn,
                    map_sdk_error("Sign", &self.key_arn, e),
                    SigningKeyError::Sign,
                )
            })?;
        let signature = out
            .signature
            .ok_or_else(|| SigningKeyError::Sign("KMS Sign answered without a signature".into()))?;
        der::ecdsa_der_to_fixed(signature.as_ref(), der::P256_FIELD_LEN).map_err(|e| {
            SigningKeyError::Sign(format!(
                "KMS Sign answered a malformed ECDSA signature: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_unavailable_and_keep_their_detail() {
        type Wrap = fn(String) -> SigningKeyError;
        let cases: [(&str, KeyStoreError, Wrap, SigningKeyError); 3] = [
            (
                "k",
                KeyStoreError::transient("KMS Sign (k): timeout"),
                SigningKeyError::Sign,
                SigningKeyError::Unavailable("KMS Sign (k): timeout".into()),
            ),
            (
                "k",
                KeyStoreError::denied("KMS Sign (k): AccessDeniedException"),
                SigningKeyError::Sign,
                SigningKeyError::Sign("KMS Sign (k): AccessDeniedException".into()),
            ),
            (
                "alias/x",
                KeyStoreError::not_found("KMS GetPublicKey (alias/x): NotFoundException"),
                SigningKeyError::Load,
                SigningKeyError::Load("KMS key alias/x not found".into()),
            ),
        ];
        for (key, error, other, expected) in cases {
            let got = to_signing_error(key, error, other);
            // The variant and its text, exactly.
            assert_eq!(format!("{got:?}"), format!("{expected:?}"));
        }
    }
}
