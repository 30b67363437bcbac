//! Building the KMS client: standard credential chain, region, endpoint, timeouts, retries.

use crate::root_key::RootKeyError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use kms_config::AwsBackend;
use std::time::Duration;

/// A KMS client for `config`.
///
/// Credentials come from the SDK's default chain (environment, shared config and credential
/// files, web identity, ECS, IMDS). Every call gets an attempt timeout (which also bounds
/// connecting) and an operation timeout over all attempts; throttling and transient errors are
/// retried with exponential backoff and jitter (the SDK's standard mode) up to `max_attempts`,
/// while access-denied and invalid-ciphertext errors are never retried.
pub async fn build(config: &AwsBackend) -> Result<aws_sdk_kms::Client, RootKeyError> {
    for (field, value) in [
        ("attempt_timeout", config.attempt_timeout.get()),
        ("operation_timeout", config.operation_timeout.get()),
    ] {
        if value.is_zero() {
            return Err(RootKeyError::Backend(format!(
                "backend.aws.{field} must be greater than zero"
            )));
        }
    }
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.attempt_timeout.get())
        .operation_attempt_timeout(config.attempt_timeout.get())
        .operation_timeout(config.operation_timeout.get())
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(config.max_attempts)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(2));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    let sdk_config = loader.load().await;
    if sdk_config.region().is_none() {
        return Err(RootKeyError::Backend(
            "no AWS region: set backend.aws.region or AWS_REGION".into(),
        ));
    }
    Ok(aws_sdk_kms::Client::new(&sdk_config))
}
