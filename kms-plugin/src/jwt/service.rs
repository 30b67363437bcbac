//! The `ExternalJWTSigner` gRPC service, for both the `v1` and `v1alpha1` packages.

use super::key::{SigningKey, SigningKeyError};
use super::keyset::{KeySet, watched_state};
use super::local::FileSigningKey;
use super::metrics::SignerMetrics;
use base64::Engine;
use kms_config::{JwtKeyConfig, JwtSignerConfig};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Longest `claims` accepted in Sign (kube-apiserver's tokens are a few KiB).
const MAX_CLAIMS_LEN: usize = 64 * 1024;
/// Deadline of one signature by the key store.
const SIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the signing key `config` selects. The one place that maps key kinds to key stores.
pub async fn build_signing_key(
    config: &JwtSignerConfig,
) -> Result<Arc<dyn SigningKey>, SigningKeyError> {
    match &config.key {
        JwtKeyConfig::Local(local) => Ok(Arc::new(FileSigningKey::load(&local.key_file)?)),
        #[cfg(feature = "pkcs11")]
        JwtKeyConfig::Pkcs11(pkcs11) => Ok(Arc::new(
            super::pkcs11::Pkcs11SigningKey::open(pkcs11).await?,
        )),
        #[cfg(feature = "aws")]
        JwtKeyConfig::Aws(aws) => Ok(Arc::new(super::aws::AwsSigningKey::connect(aws).await?)),
        #[allow(unreachable_patterns)]
        other => Err(SigningKeyError::Load(format!(
            "signing keys of kind {:?} are not available in this build",
            other.kind()
        ))),
    }
}

/// The signer's state shared by both protocol packages.
pub struct JwtSigner {
    config: JwtSignerConfig,
    keys: RwLock<Arc<KeySet>>,
    metrics: Arc<SignerMetrics>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl JwtSigner {
    /// Loads the signing key and the verify-only keys.
    pub async fn new(config: JwtSignerConfig) -> Result<Self, SigningKeyError> {
        let signer = build_signing_key(&config).await?;
        let keys = KeySet::assemble(signer, &config.verify_only_keys)?;
        tracing::info!(kid = %keys.signer_kid, alg = keys.signer.algorithm().name(), published = keys.keys.len(), "service-account signing key ready");
        let metrics = Arc::new(SignerMetrics::new());
        metrics.key_set(keys.loaded_at, keys.keys.len());
        Ok(Self {
            config,
            keys: RwLock::new(Arc::new(keys)),
            metrics,
        })
    }

    /// The signer's metrics.
    pub fn metrics(&self) -> Arc<SignerMetrics> {
        self.metrics.clone()
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .config
            .verify_only_keys
            .iter()
            .map(|k| k.path().to_owned())
            .collect();
        if let JwtKeyConfig::Local(local) = &self.config.key {
            files.push(local.key_file.clone());
        }
        files
    }

    /// Re-reads the keys; keeps the current set when the files are mid-change or broken.
    pub async fn reload(&self) {
        let signer = match build_signing_key(&self.config).await {
            Ok(signer) => signer,
            Err(error) => {
                tracing::warn!(%error, "keeping the current signing key");
                return;
            }
        };
        match KeySet::assemble(signer, &self.config.verify_only_keys) {
            Ok(fresh) => {
                let current = self.keys();
                if fresh.signer_kid != current.signer_kid || fresh.keys != current.keys {
                    tracing::info!(old_kid = %current.signer_kid, new_kid = %fresh.signer_kid, published = fresh.keys.len(), "service-account keys changed");
                    self.metrics.key_set(fresh.loaded_at, fresh.keys.len());
                    let mut guard = match self.keys.write() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    *guard = Arc::new(fresh);
                }
            }
            Err(error) => tracing::warn!(%error, "keeping the current published keys"),
        }
    }

    /// Polls the key files and reloads on change or on `reload` (SIGHUP) until `stop`.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        mut reload: watch::Receiver<u64>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let signer = self.clone();
        tokio::spawn(async move {
            let files = signer.watched_files();
            let mut last = watched_state(&files);
            let mut tick = tokio::time::interval(signer.config.poll_interval.get());
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = watched_state(&files);
                        if now != last {
                            last = now;
                            signer.reload().await;
                        }
                    }
                    changed = reload.changed() => {
                        if changed.is_err() { break; }
                        signer.reload().await;
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    }

    /// Signs `claims` (already base64url) and returns the header and signature segments.
    pub async fn sign(&self, claims: &str) -> Result<(String, String), Status> {
        let started = Instant::now();
        let result = self.sign_inner(claims).await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe("Sign", code, started.elapsed());
        let duration_us = started.elapsed().as_micros() as u64;
        match &result {
            Ok(_) => tracing::info!(method = "Sign", outcome = "ok", duration_us, "rpc"),
            Err(status) => tracing::warn!(
                method = "Sign",
                outcome = "error",
                duration_us,
                reason = status.message(),
                "rpc"
            ),
        }
        result
    }

    async fn sign_inner(&self, claims: &str) -> Result<(String, String), Status> {
        if claims.is_empty() || claims.len() > MAX_CLAIMS_LEN {
            return Err(Status::invalid_argument(format!(
                "claims must be 1 to {MAX_CLAIMS_LEN} bytes"
            )));
        }
        if !claims
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Status::invalid_argument(
                "claims must be unpadded base64url",
            ));
        }
        super::claims::check(claims, self.config.max_token_expiration.get(), unix_now())
            .map_err(|refused| Status::invalid_argument(refused.to_string()))?;
        let keys = self.keys();
        let header = format!(
            r#"{{"alg":"{}","kid":"{}","typ":"JWT"}}"#,
            keys.signer.algorithm().name(),
            keys.signer_kid
        );
        let header = b64(header.as_bytes());
        let message = format!("{header}.{claims}");
        let signature = tokio::time::timeout(SIGN_TIMEOUT, keys.signer.sign(message.as_bytes()))
            .await
            .map_err(|_| {
                tracing::warn!("signing key did not answer within {SIGN_TIMEOUT:?}");
                Status::unavailable("signing key unavailable")
            })?
            .map_err(|error| {
                tracing::warn!(%error, "signing failed");
                match error {
                    SigningKeyError::Unavailable(_) => {
                        Status::unavailable("signing key unavailable")
                    }
                    _ => Status::internal("signing failed"),
                }
            })?;
        Ok((header, b64(&signature)))
    }

    /// The published keys, their timestamp and the refresh hint.
    pub fn fetch_keys(&self) -> (Vec<super::PublishedKey>, prost_types::Timestamp, i64) {
        let started = Instant::now();
        let keys = self.keys();
        let timestamp = prost_types::Timestamp::from(keys.loaded_at);
        tracing::info!(
            method = "FetchKeys",
            outcome = "ok",
            keys = keys.keys.len(),
            "rpc"
        );
        self.metrics
            .observe("FetchKeys", tonic::Code::Ok, started.elapsed());
        (
            keys.keys.clone(),
            timestamp,
            self.config.refresh_hint.get().as_secs() as i64,
        )
    }

    /// The longest token lifetime kube-apiserver may issue.
    pub fn max_token_expiration_seconds(&self) -> i64 {
        let started = Instant::now();
        tracing::info!(method = "Metadata", outcome = "ok", "rpc");
        self.metrics
            .observe("Metadata", tonic::Code::Ok, started.elapsed());
        self.config.max_token_expiration.get().as_secs() as i64
    }
}

/// Implements one protocol package's service over [`JwtSigner`].
macro_rules! signer_service {
    ($service:ident, $pkg:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $service(pub Arc<JwtSigner>);

        #[tonic::async_trait]
        impl kms_proto::$pkg::external_jwt_signer_server::ExternalJwtSigner for $service {
            async fn sign(
                &self,
                request: Request<kms_proto::$pkg::SignJwtRequest>,
            ) -> Result<Response<kms_proto::$pkg::SignJwtResponse>, Status> {
                let (header, signature) = self.0.sign(&request.into_inner().claims).await?;
                Ok(Response::new(kms_proto::$pkg::SignJwtResponse {
                    header,
                    signature,
                }))
            }

            async fn fetch_keys(
                &self,
                _request: Request<kms_proto::$pkg::FetchKeysRequest>,
            ) -> Result<Response<kms_proto::$pkg::FetchKeysResponse>, Status> {
                let (keys, data_timestamp, refresh_hint_seconds) = self.0.fetch_keys();
                Ok(Response::new(kms_proto::$pkg::FetchKeysResponse {
                    keys: keys
                        .into_iter()
                        .map(|k| kms_proto::$pkg::Key {
                            key_id: k.kid,
                            key: k.der,
                            exclude_from_oidc_discovery: k.exclude_from_oidc_discovery,
                        })
                        .collect(),
                    data_timestamp: Some(data_timestamp),
                    refresh_hint_seconds,
                }))
            }

            async fn metadata(
                &self,
                _request: Request<kms_proto::$pkg::MetadataRequest>,
            ) -> Result<Response<kms_proto::$pkg::MetadataResponse>, Status> {
                Ok(Response::new(kms_proto::$pkg::MetadataResponse {
                    max_token_expiration_seconds: self.0.max_token_expiration_seconds(),
                }))
            }
        }
    };
}

signer_service!(
    SignerV1,
    externaljwt_v1,
    "`v1.ExternalJWTSigner` (kube-apiserver ≥ 1.36)."
);
signer_service!(
    SignerV1Alpha1,
    externaljwt_v1alpha1,
    "`v1alpha1.ExternalJWTSigner` (kube-apiserver 1.32–1.35)."
);

/// The signer's clock as Unix seconds (0 for a clock before 1970, which refuses every token).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
