//! Building the KMS client (standard credential chain, region, endpoint, timeouts, retries) and
//! retrying an unreachable KMS at startup.

use crate::KeyStoreError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use kms_config::AwsBackend;
use std::future::Future;
use std::time::{Duration, Instant};

/// A KMS client for `config`.
///
/// Credentials come from the SDK's default chain (environment, shared config and credential
/// files, web identity, ECS, IMDS). Every call gets an attempt timeout (which also bounds
/// connecting) and an operation timeout over all attempts; throttling and transient errors are
/// retried with exponential backoff and jitter (the SDK's standard mode) up to `max_attempts`,
/// while access-denied and invalid-ciphertext errors are never retried.
pub async fn build(config: &AwsBackend) -> Result<aws_sdk_kms::Client, KeyStoreError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.attempt_timeout.get())
        .operation_attempt_timeout(config.attempt_timeout.get())
        .operation_timeout(config.operation_timeout.get())
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(config.max_attempts.get())
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
        return Err(KeyStoreError::configuration(
            "no AWS region: set the aws section's region or AWS_REGION",
        ));
    }
    Ok(aws_sdk_kms::Client::new(&sdk_config))
}

/// Longest pause between startup attempts.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(5);

/// A pause of `base` scaled by a random factor in [0.5, 1.0].
pub fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let scale = match getrandom::fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 510.0,
        Err(_) => 0.75,
    };
    base.mul_f64(scale)
}

/// Runs `call` until it succeeds or fails for good, retrying transient failures (KMS
/// unreachable) with jittered backoff for at most `budget`; `setting` names the configuration
/// key of the budget in the final error.
pub async fn retry_at_startup<T, F, Fut>(
    budget: Duration,
    setting: &str,
    mut call: F,
) -> Result<T, KeyStoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KeyStoreError>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() => {
                let pause = jittered(backoff);
                if started.elapsed() + pause >= budget {
                    return Err(KeyStoreError::transient(format!(
                        "AWS KMS still unreachable after {:?} at startup ({setting}): {error}",
                        started.elapsed()
                    )));
                }
                tracing::warn!(%error, retry_in = ?pause, "AWS KMS unreachable at startup; retrying");
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_STARTUP_BACKOFF);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..100 {
            let pause = jittered(Duration::from_secs(2));
            assert!(
                pause >= Duration::from_secs(1) && pause <= Duration::from_secs(2),
                "{pause:?}"
            );
        }
    }
}
