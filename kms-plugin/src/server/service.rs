//! The KMS v2 gRPC service: validation, the envelope, one log line per call.

use crate::envelope::{Envelope, EnvelopeError};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::root_key::RootKeyError;
use crate::status_detail;
use kms_proto::kms_v2::key_management_service_server::KeyManagementService;
use kms_proto::kms_v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// The API version reported by Status; kube-apiserver requires it never to change.
pub const API_VERSION: &str = "v2";

/// Serves `v2.KeyManagementService`.
pub struct KmsService {
    envelope: Arc<Envelope>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl KmsService {
    /// A service over `envelope`, reporting `health` in Status.
    pub fn new(envelope: Arc<Envelope>, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        Self {
            envelope,
            health,
            metrics,
        }
    }

    /// Counts and logs a refused `method` call (one warning line); returns its opaque status.
    fn refused(
        &self,
        method: &'static str,
        started: Instant,
        uid: &str,
        duration_us: u64,
        error: &EnvelopeError,
    ) -> Status {
        let (outcome, status) = classify(error);
        self.metrics
            .observe_rpc(method, status.code(), started.elapsed());
        tracing::warn!(method, uid, outcome, duration_us, %error, "rpc");
        status
    }
}

/// A uid safe to log: bounded length (the value is logged with escaping).
fn loggable_uid(uid: &str) -> std::borrow::Cow<'_, str> {
    crate::log_text::untrusted(uid)
}

/// Short outcome label for logs and metrics, and the opaque status for the wire.
fn classify(error: &EnvelopeError) -> (&'static str, Status) {
    match error {
        EnvelopeError::InvalidRequest(reason) => {
            ("invalid_request", Status::invalid_argument(reason.clone()))
        }
        EnvelopeError::Format(_) | EnvelopeError::RootKey(RootKeyError::Integrity(_)) => (
            "invalid_ciphertext",
            Status::invalid_argument("decryption failed"),
        ),
        EnvelopeError::RootKey(RootKeyError::UnknownKey(_)) => (
            "unknown_key_id",
            Status::invalid_argument("decryption failed"),
        ),
        EnvelopeError::RootKey(RootKeyError::Unavailable(_)) | EnvelopeError::Timeout(_) => (
            "backend_unavailable",
            Status::unavailable("root key backend unavailable"),
        ),
        EnvelopeError::RootKey(RootKeyError::Changed(_)) => (
            "keyring_changed",
            Status::unavailable("root key backend unavailable"),
        ),
        EnvelopeError::RootKey(RootKeyError::Denied(_)) => (
            "backend_denied",
            Status::internal("root key operation failed"),
        ),
        EnvelopeError::RootKey(_) => (
            "backend_error",
            Status::internal("root key operation failed"),
        ),
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let started = Instant::now();
        let health = self.envelope.status();
        let key_id = self.envelope.root().primary_key_id();
        self.metrics
            .observe_rpc("Status", tonic::Code::Ok, started.elapsed());
        tracing::info!(method = "Status", healthz = %health.healthz, key_id = %key_id, duration_us = started.elapsed().as_micros() as u64, "rpc");
        let mut response = Response::new(StatusResponse {
            version: API_VERSION.into(),
            healthz: health.healthz.clone(),
            key_id: key_id.to_string(),
        });
        status_detail::insert(
            response.metadata_mut(),
            &health,
            self.health.outage_policy(),
        );
        Ok(response)
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = self
            .envelope
            .decrypt(&request.ciphertext, &request.key_id, &request.annotations)
            .await;
        let uid = loggable_uid(&request.uid);
        let uid: &str = &uid;
        let duration_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(mut plaintext) => {
                self.metrics
                    .observe_rpc("Decrypt", tonic::Code::Ok, started.elapsed());
                tracing::info!(method = "Decrypt", uid, outcome = "ok", duration_us, "rpc");
                // The seed's buffer moves into the response as is (no copy is left behind);
                // tonic encodes and frees it without zeroizing: from here on it owns the seed.
                Ok(Response::new(DecryptResponse {
                    plaintext: std::mem::take(&mut *plaintext),
                }))
            }
            Err(error) => Err(self.refused("Decrypt", started, uid, duration_us, &error)),
        }
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let started = Instant::now();
        let EncryptRequest { plaintext, uid } = request.into_inner();
        // The seed arrives in a buffer tonic decoded and handed over; it is zeroized after sealing.
        let plaintext = Zeroizing::new(plaintext);
        let result = self.envelope.encrypt(&plaintext).await;
        let uid = loggable_uid(&uid);
        let uid: &str = &uid;
        let duration_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(sealed) => {
                self.metrics
                    .observe_rpc("Encrypt", tonic::Code::Ok, started.elapsed());
                tracing::info!(method = "Encrypt", uid, outcome = "ok", duration_us, key_id = %sealed.key_id, "rpc");
                Ok(Response::new(EncryptResponse {
                    ciphertext: sealed.ciphertext,
                    key_id: sealed.key_id.to_string(),
                    annotations: sealed.annotations,
                }))
            }
            Err(error) => Err(self.refused("Encrypt", started, uid, duration_us, &error)),
        }
    }
}
