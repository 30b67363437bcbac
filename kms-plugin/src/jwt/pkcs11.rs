//! A service-account signing key held in a PKCS#11 token: an EC P-256 private key (ES256).
//!
//! - The connection is the `keystore` crate's [`Token`]: found by its label, the user PIN read
//!   from `pin_file` or `pin_env` and held zeroized, pooled sessions and recovery: a session or
//!   login the token dropped is reopened, the key handle found again here, and the call retried
//!   once; a token no longer listed makes the module re-initialise (at most once a second).
//!   Its [`KeyStoreError`]s map into [`SigningKeyError`]; token calls log one `debug` line each
//!   with target `kms_plugin::jwt::remote`.
//! - The private key is the one `CKO_PRIVATE_KEY` / `CKK_EC` object labelled `key_label`; it must
//!   be sensitive and non-extractable. Its public point comes from the public key object with
//!   the same label and `CKA_ID` (or from the private key, where the token keeps it there).
//! - Sign hashes the JWS signing input with SHA-256 here and has the token run `CKM_ECDSA` over
//!   the digest, which yields `r || s`, the JWS ES256 signature as it is.
//! - At startup one signature is made and checked against the public key read, so a public
//!   key object that does not belong to the private key is caught before anything is published.
//! - Every token call runs on a worker thread, at most `max_sessions` at once.
//!
//! Create the key with `kms-plugin jwt-signer init-key --config FILE` ([`generate_signing_key`]).

use super::der;
use super::key::{JwsAlgorithm, SigningKey, SigningKeyError, kid_for};
use async_trait::async_trait;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keystore::pkcs11::{Token, Workers, blocking};
use keystore::{ErrorKind, KeyStoreError};
use kms_config::Pkcs11Backend;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};

/// Message signed at startup to check that the public key belongs to the private key.
const SELF_TEST_MESSAGE: &[u8] = b"kms-plugin jwt signer pkcs11 self-test";
/// Length of the `CKA_ID` given to key pairs created by [`generate_signing_key`].
const GENERATED_ID_LEN: usize = 16;

/// Maps a key store failure to [`SigningKeyError`]: lost or absent tokens are `Unavailable`; a
/// key that is missing or not the one required is `Load`; other failures are `other` (load or
/// sign).
fn signing_error(error: KeyStoreError, other: fn(String) -> SigningKeyError) -> SigningKeyError {
    let kind = error.kind();
    let text = error.into_message();
    match kind {
        ErrorKind::Transient => SigningKeyError::Unavailable(text),
        ErrorKind::NotFound | ErrorKind::Integrity => SigningKeyError::Load(text),
        _ => other(text),
    }
}

/// The EC private key found by label, with its public key.
struct FoundKey {
    handle: ObjectHandle,
    id: Vec<u8>,
    public_der: Vec<u8>,
}

fn remote_call(op: &'static str, label: &str) {
    tracing::debug!(target: "kms_plugin::jwt::remote", backend = "pkcs11", op, label, "remote call");
}

/// The `CKA_EC_POINT` of the public key object matching the private key (same label and
/// `CKA_ID`), or of the private key itself.
fn read_point(
    session: &Session,
    label: &str,
    id: &[u8],
    private: ObjectHandle,
) -> Result<Vec<u8>, KeyStoreError> {
    let template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let publics = session.find_objects(&template)?;
    let holders = publics.iter().copied().chain(std::iter::once(private));
    for handle in holders {
        // A token that keeps no CKA_EC_POINT on an object answers "attribute type invalid".
        let Ok(attributes) = session.get_attributes(handle, &[AttributeType::EcPoint]) else {
            continue;
        };
        for attribute in attributes {
            if let Attribute::EcPoint(value) = attribute {
                let point = der::unwrap_ec_point(&value).map_err(KeyStoreError::integrity)?;
                return Ok(point.to_vec());
            }
        }
    }
    Err(KeyStoreError::not_found(format!(
        "no CKA_EC_POINT for the EC key labelled {label:?}: the token holds no matching public key object (same label and CKA_ID)"
    )))
}

/// Finds the one EC P-256 private key labelled `label` and reads its public key.
fn find_key(session: &Session, label: &str) -> Result<Option<FoundKey>, KeyStoreError> {
    remote_call("find_signing_key", label);
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let handles = session.find_objects(&template)?;
    let handle = match handles.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        more => {
            return Err(KeyStoreError::configuration(format!(
                "{} EC private keys are labelled {label:?}; the signing key's label must be unique",
                more.len()
            )));
        }
    };
    let wanted = [
        AttributeType::Id,
        AttributeType::EcParams,
        AttributeType::Sensitive,
        AttributeType::Extractable,
    ];
    let (mut id, mut params, mut sensitive, mut extractable) =
        (Vec::new(), Vec::new(), false, true);
    for attribute in session.get_attributes(handle, &wanted)? {
        match attribute {
            Attribute::Id(value) => id = value,
            Attribute::EcParams(value) => params = value,
            Attribute::Sensitive(value) => sensitive = value,
            Attribute::Extractable(value) => extractable = value,
            _ => {}
        }
    }
    if params != der::P256_CURVE_OID {
        return Err(KeyStoreError::configuration(format!(
            "the EC key labelled {label:?} is not on P-256 (CKA_EC_PARAMS {}); ES256 needs prime256v1",
            hex::encode(&params)
        )));
    }
    if !sensitive || extractable {
        return Err(KeyStoreError::configuration(format!(
            "the EC key labelled {label:?} must be CKA_SENSITIVE=true and CKA_EXTRACTABLE=false"
        )));
    }
    let point = read_point(session, label, &id, handle)?;
    let public_der = der::p256_spki(&point).map_err(KeyStoreError::integrity)?;
    Ok(Some(FoundKey {
        handle,
        id,
        public_der,
    }))
}

/// `CKM_ECDSA` over the SHA-256 of `message`: `r || s`, 64 bytes.
fn sign_digest(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
    message: &[u8],
) -> Result<Vec<u8>, KeyStoreError> {
    let digest = Sha256::digest(message);
    remote_call("sign", label);
    let signature = session.sign(&Mechanism::Ecdsa, handle, &digest)?;
    if signature.len() != 2 * der::P256_FIELD_LEN {
        return Err(KeyStoreError::integrity(format!(
            "C_Sign with CKM_ECDSA returned {} bytes, expected 64",
            signature.len()
        )));
    }
    Ok(signature)
}

struct Inner {
    token: Token,
    key_label: String,
    public_der: Vec<u8>,
    handle: RwLock<ObjectHandle>,
}

impl Inner {
    fn handle(&self) -> ObjectHandle {
        match self.handle.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Finds the key again after a re-login (handles may change) and checks it is still the
    /// key whose public key is published.
    fn refind(&self, session: &Session) -> Result<ObjectHandle, KeyStoreError> {
        let found = find_key(session, &self.key_label)?.ok_or_else(|| {
            KeyStoreError::not_found(format!(
                "the EC key labelled {:?} is gone from the token",
                self.key_label
            ))
        })?;
        if found.public_der != self.public_der {
            return Err(KeyStoreError::integrity(format!(
                "the EC key labelled {:?} is no longer the published one; reload (SIGHUP) to publish and use the new key",
                self.key_label
            )));
        }
        let mut guard = match self.handle.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = found.handle;
        Ok(found.handle)
    }

    /// Signs on a pooled session; when the token dropped the session or the login, finds the
    /// key again before the one retry.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        self.token.with_session(
            |session| sign_digest(session, self.handle(), &self.key_label, message),
            |session| self.refind(session).map(drop),
        )
    }
}

/// An ES256 signing key in a PKCS#11 token.
pub struct Pkcs11SigningKey {
    inner: Arc<Inner>,
    workers: Workers,
}

impl Pkcs11SigningKey {
    /// Opens the token, logs in, finds the key labelled `key_label`, reads its public key and
    /// checks one signature against it.
    pub async fn open(config: &Pkcs11Backend) -> Result<Self, SigningKeyError> {
        let workers = Workers::new(config.max_sessions);
        let config = config.clone();
        let inner = blocking(move || {
            let token = Token::open_for(&config, &[(MechanismType::ECDSA, "CKM_ECDSA")])?;
            let session = token.take()?;
            let found = find_key(&session, &config.key_label);
            token.give_back(session);
            let found = found?.ok_or_else(|| {
                KeyStoreError::not_found(format!(
                    "no EC private key labelled {:?} in token {:?}; create it with `kms-plugin jwt-signer init-key`",
                    config.key_label, config.token_label
                ))
            })?;
            Ok::<_, KeyStoreError>(Inner {
                token,
                key_label: config.key_label.clone(),
                public_der: found.public_der,
                handle: RwLock::new(found.handle),
            })
        })
        .await
        .map_err(|e| signing_error(e, SigningKeyError::Load))?;
        let key = Self {
            inner: Arc::new(inner),
            workers,
        };
        key.self_test().await?;
        Ok(key)
    }

    /// Signs a fixed message and verifies it with the public key read from the token.
    async fn self_test(&self) -> Result<(), SigningKeyError> {
        let signature = self.sign(SELF_TEST_MESSAGE).await?;
        let spki = &self.inner.public_der;
        let point = spki
            .len()
            .checked_sub(der::P256_POINT_LEN)
            .map_or(&[][..], |start| &spki[start..]);
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(SELF_TEST_MESSAGE, &signature)
            .map_err(|_| {
                SigningKeyError::Load(format!(
                    "the public key found for the EC key labelled {:?} does not verify its signatures: check the public key object's CKA_ID",
                    self.inner.key_label
                ))
            })
    }
}

#[async_trait]
impl SigningKey for Pkcs11SigningKey {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::Es256
    }

    fn public_key_der(&self) -> &[u8] {
        &self.inner.public_der
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        let inner = self.inner.clone();
        let message = message.to_vec();
        self.workers
            .run(move || inner.sign(&message))
            .await
            .map_err(|e| signing_error(e, SigningKeyError::Sign))
    }
}

/// What [`generate_signing_key`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitKeyOutcome {
    /// A key pair was created; this is its key id.
    Created(String),
    /// The token already held the key; nothing was changed. This is its key id.
    Existing(String),
}

impl InitKeyOutcome {
    /// The signing key's key id (kube-apiserver's computation over its public key).
    pub fn kid(&self) -> &str {
        match self {
            Self::Created(kid) | Self::Existing(kid) => kid,
        }
    }
}

/// Creates the EC P-256 signing key pair labelled `key_label` in the token named by `config`
/// (`C_GenerateKeyPair` with `CKM_EC_KEY_PAIR_GEN`; the private key is a token object,
/// private, sensitive, never extractable, usable only to sign; both halves share a random
/// 16-byte `CKA_ID`), unless one exists. Idempotent. Returns the key id FetchKeys will publish.
pub async fn generate_signing_key(
    config: &Pkcs11Backend,
) -> Result<InitKeyOutcome, SigningKeyError> {
    let config = config.clone();
    blocking(move || {
        let token = Token::open_for(
            &config,
            &[
                (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
                (MechanismType::ECDSA, "CKM_ECDSA"),
            ],
        )?;
        let session = token.take()?;
        let label = &config.key_label;
        if let Some(found) = find_key(&session, label)? {
            return Ok(InitKeyOutcome::Existing(kid_for(&found.public_der)));
        }
        let mut id = vec![0u8; GENERATED_ID_LEN];
        getrandom::fill(&mut id)
            .map_err(|e| KeyStoreError::configuration(format!("no randomness: {e}")))?;
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(der::P256_CURVE_OID.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        remote_call("generate_signing_key", label);
        session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
        let found = find_key(&session, label)?
            .ok_or_else(|| KeyStoreError::not_found(format!("the key pair labelled {label:?} was created but is not found")))?;
        let kid = kid_for(&found.public_der);
        tracing::info!(%kid, label = %label, id = %hex::encode(&found.id), "created the PKCS#11 service-account signing key");
        Ok(InitKeyOutcome::Created(kid))
    })
    .await
    .map_err(|e: KeyStoreError| signing_error(e, SigningKeyError::Load))
}
