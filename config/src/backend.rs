//! The key stores a key can live in, and their settings: the KMS root key ([`BackendConfig`])
//! and the service-account signing key ([`JwtKeyConfig`]).
//!
//! The YAML names a `kind` and carries one section per kind (`local`, `pkcs11`, `aws`); the
//! section of the selected kind is required and checked, the others are parsed for their shape
//! and ignored. Both are read through a raw mirror of that YAML (`serde(try_from)`) into an
//! enum that holds exactly the selected, checked section, so a value of these types is valid by
//! construction and no user checks it again.

use crate::{HumanDuration, SecretSource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest polling interval accepted anywhere (a zero interval would spin).
pub(crate) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest refresh interval of a remote key store (a zero interval would stop the timer).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The kinds of key store.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Files on the local disk.
    Local,
    /// A PKCS#11 token (HSM).
    Pkcs11,
    /// AWS KMS.
    Aws,
}

/// The root key backend of the KMS v2 service, with the settings of its kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawBackendConfig")]
pub enum BackendConfig {
    /// Versioned AES-256 root keys in a local state directory.
    Local(LocalBackend),
    /// A non-extractable AES key in an HSM reached over PKCS#11.
    Pkcs11(Pkcs11Backend),
    /// A symmetric key in AWS KMS.
    Aws(AwsBackend),
}

impl BackendConfig {
    /// The kind of backend.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Local(_) => BackendKind::Local,
            Self::Pkcs11(_) => BackendKind::Pkcs11,
            Self::Aws(_) => BackendKind::Aws,
        }
    }
}

/// Where the service-account signing key lives; the same kinds as the KMS root key.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawJwtKeyConfig")]
pub enum JwtKeyConfig {
    /// A PEM private key file (kubeadm's `sa.key`): RSA (RS256) or ECDSA P-256/P-384.
    Local(JwtLocalKey),
    /// An EC private key in an HSM, found by `key_label`.
    Pkcs11(Pkcs11Backend),
    /// An asymmetric ECC_NIST_P256 key in AWS KMS.
    Aws(AwsBackend),
}

impl JwtKeyConfig {
    /// The kind of key store.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Local(_) => BackendKind::Local,
            Self::Pkcs11(_) => BackendKind::Pkcs11,
            Self::Aws(_) => BackendKind::Aws,
        }
    }
}

/// A signing key held in a local PEM file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtLocalKey {
    /// The private key file, e.g. `/etc/kubernetes/pki/sa.key`.
    pub key_file: PathBuf,
}

/// The local key file backend.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    /// Directory holding the versioned root keys; `kms-plugin init` creates it and the first key.
    pub state_dir: PathBuf,
    /// How often the state directory is checked for a rotated primary key (at least 100ms).
    pub poll_interval: HumanDuration,
    /// Whether `serve` may create the directory and a first key when none exists: only the
    /// zero-configuration development command sets it, never a configuration file.
    pub create_if_missing: bool,
}

impl LocalBackend {
    /// A local backend in `state_dir` with the default polling interval.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            poll_interval: default_local_poll(),
            create_if_missing: false,
        }
    }
}

/// A PKCS#11 token (HSM).
#[derive(Clone, Debug)]
pub struct Pkcs11Backend {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token (slot ids are not stable, labels are); never empty.
    pub token_label: String,
    /// Where the user PIN comes from (YAML `pin_file` or `pin_env`).
    pub pin: SecretSource,
    /// Label of the key objects; never empty.
    pub key_label: String,
    /// Sessions kept open for concurrent operations.
    pub max_sessions: NonZeroUsize,
    /// How often the token is re-listed for a key version created by another process (at
    /// least 1s).
    pub refresh_interval: HumanDuration,
}

/// AWS KMS. Credentials come from the SDK's standard chain, never from here.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    /// Key ARN, key id, alias name (`alias/...`) or alias ARN; never empty.
    pub key_id: String,
    /// AWS region (default: the SDK's region chain).
    pub region: Option<String>,
    /// Endpoint override (VPC endpoints, tests).
    pub endpoint: Option<String>,
    /// Encryption context bound to every wrapped key (e.g. the cluster name). Default:
    /// `{"kubernetes.io/kms-plugin": "kms-plugin"}`; set it per cluster so one cluster's wrapped
    /// keys never decrypt in another that shares the KMS key. Changing it makes existing data
    /// undecryptable.
    pub encryption_context: BTreeMap<String, String>,
    /// How often an alias is re-resolved to its key ARN (at least 1s).
    pub key_refresh_interval: HumanDuration,
    /// Attempts per call for throttling and transient errors.
    pub max_attempts: NonZeroU32,
    /// Deadline of one attempt of a KMS call (connect included); greater than zero.
    pub attempt_timeout: HumanDuration,
    /// Deadline of a whole KMS call, retries included; greater than zero.
    pub operation_timeout: HumanDuration,
    /// How long startup keeps retrying an unreachable KMS before giving up.
    pub startup_timeout: HumanDuration,
    /// Key ARNs of earlier root keys whose wrapped KEKs are still stored (KMS root key only).
    /// Decrypt calls KMS only for these, the resolved current key and keys the configured
    /// `key_id` resolved to while the process runs; every entry is a key ARN (checked at parse).
    pub previous_key_ids: Vec<String>,
}

/// The YAML of [`BackendConfig`]: a kind and a section per kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendConfig {
    kind: BackendKind,
    #[serde(default)]
    local: Option<RawLocalBackend>,
    #[serde(default)]
    pkcs11: Option<RawPkcs11Backend>,
    #[serde(default)]
    aws: Option<RawAwsBackend>,
}

/// The YAML of [`JwtKeyConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtKeyConfig {
    kind: BackendKind,
    #[serde(default)]
    local: Option<JwtLocalKey>,
    #[serde(default)]
    pkcs11: Option<RawPkcs11Backend>,
    #[serde(default)]
    aws: Option<RawAwsBackend>,
}

/// The section `name` of the selected kind, or an error naming `path.name`.
fn selected<T>(section: Option<T>, path: &str, name: &str) -> Result<T, String> {
    section.ok_or_else(|| format!("{path}.{name}: required when {path}.kind is {name}"))
}

impl TryFrom<RawBackendConfig> for BackendConfig {
    type Error = String;

    fn try_from(raw: RawBackendConfig) -> Result<Self, String> {
        const PATH: &str = "backend";
        Ok(match raw.kind {
            BackendKind::Local => Self::Local(selected(raw.local, PATH, "local")?.check(PATH)?),
            BackendKind::Pkcs11 => Self::Pkcs11(selected(raw.pkcs11, PATH, "pkcs11")?.check(PATH)?),
            BackendKind::Aws => Self::Aws(selected(raw.aws, PATH, "aws")?.check(PATH)?),
        })
    }
}

impl TryFrom<RawJwtKeyConfig> for JwtKeyConfig {
    type Error = String;

    fn try_from(raw: RawJwtKeyConfig) -> Result<Self, String> {
        const PATH: &str = "jwt_signer.key";
        Ok(match raw.kind {
            BackendKind::Local => Self::Local(selected(raw.local, PATH, "local")?),
            BackendKind::Pkcs11 => Self::Pkcs11(selected(raw.pkcs11, PATH, "pkcs11")?.check(PATH)?),
            BackendKind::Aws => Self::Aws(selected(raw.aws, PATH, "aws")?.check(PATH)?),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalBackend {
    state_dir: PathBuf,
    #[serde(default = "default_local_poll")]
    poll_interval: HumanDuration,
}

impl RawLocalBackend {
    fn check(self, path: &str) -> Result<LocalBackend, String> {
        at_least(
            self.poll_interval,
            MIN_POLL_INTERVAL,
            &format!("{path}.local.poll_interval"),
            "100ms",
        )?;
        Ok(LocalBackend {
            state_dir: self.state_dir,
            poll_interval: self.poll_interval,
            create_if_missing: false,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11Backend {
    module: PathBuf,
    token_label: String,
    #[serde(default)]
    pin_file: Option<PathBuf>,
    #[serde(default)]
    pin_env: Option<String>,
    key_label: String,
    #[serde(default = "default_pkcs11_sessions")]
    max_sessions: usize,
    #[serde(default = "default_pkcs11_refresh")]
    refresh_interval: HumanDuration,
}

impl RawPkcs11Backend {
    fn check(self, path: &str) -> Result<Pkcs11Backend, String> {
        let pin = SecretSource::from_keys("pin", self.pin_file, self.pin_env)
            .map_err(|reason| format!("{path}.pkcs11: {reason}"))?;
        if self.token_label.is_empty() || self.key_label.is_empty() {
            return Err(format!(
                "{path}.pkcs11: token_label and key_label must not be empty"
            ));
        }
        let max_sessions = NonZeroUsize::new(self.max_sessions)
            .ok_or_else(|| format!("{path}.pkcs11.max_sessions: must be at least 1"))?;
        at_least(
            self.refresh_interval,
            MIN_REFRESH_INTERVAL,
            &format!("{path}.pkcs11.refresh_interval"),
            "1s",
        )?;
        Ok(Pkcs11Backend {
            module: self.module,
            token_label: self.token_label,
            pin,
            key_label: self.key_label,
            max_sessions,
            refresh_interval: self.refresh_interval,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAwsBackend {
    key_id: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default = "default_aws_encryption_context")]
    encryption_context: BTreeMap<String, String>,
    #[serde(default = "default_aws_resolve")]
    key_refresh_interval: HumanDuration,
    #[serde(default = "default_aws_attempts")]
    max_attempts: u32,
    #[serde(default = "default_aws_attempt_timeout")]
    attempt_timeout: HumanDuration,
    #[serde(default = "default_aws_operation_timeout")]
    operation_timeout: HumanDuration,
    #[serde(default = "default_aws_startup_timeout")]
    startup_timeout: HumanDuration,
    #[serde(default)]
    previous_key_ids: Vec<String>,
}

impl RawAwsBackend {
    fn check(self, path: &str) -> Result<AwsBackend, String> {
        if self.key_id.is_empty() {
            return Err(format!("{path}.aws.key_id: must not be empty"));
        }
        let max_attempts = NonZeroU32::new(self.max_attempts)
            .ok_or_else(|| format!("{path}.aws.max_attempts: must be at least 1"))?;
        at_least(
            self.key_refresh_interval,
            MIN_REFRESH_INTERVAL,
            &format!("{path}.aws.key_refresh_interval"),
            "1s",
        )?;
        for (field, value) in [
            ("attempt_timeout", self.attempt_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if value.get().is_zero() {
                return Err(format!("{path}.aws.{field}: must be greater than zero"));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint).map_err(|e| format!("{path}.aws.endpoint: {e}"))?;
        }
        if let Some(bad) = self.previous_key_ids.iter().find(|id| !is_kms_key_arn(id)) {
            return Err(format!(
                "{path}.aws.previous_key_ids: {bad:?} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)"
            ));
        }
        Ok(AwsBackend {
            key_id: self.key_id,
            region: self.region,
            endpoint: self.endpoint,
            encryption_context: self.encryption_context,
            key_refresh_interval: self.key_refresh_interval,
            max_attempts,
            attempt_timeout: self.attempt_timeout,
            operation_timeout: self.operation_timeout,
            startup_timeout: self.startup_timeout,
            previous_key_ids: self.previous_key_ids,
        })
    }
}

/// True for a KMS key ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`), the only form
/// of key id that names one key in one account for good (no alias, no bare key id).
pub fn is_kms_key_arn(key_id: &str) -> bool {
    let mut parts = key_id.splitn(6, ':');
    parts.next() == Some("arn")
        && parts.next().is_some_and(|p| p.starts_with("aws"))
        && parts.next() == Some("kms")
        && parts
            .nth(2)
            .is_some_and(|resource| resource.starts_with("key/") && resource.len() > 4)
}

/// Fails unless `value` is at least `min` (written `min_text` in the error).
fn at_least(
    value: HumanDuration,
    min: Duration,
    field: &str,
    min_text: &str,
) -> Result<(), String> {
    if value.get() < min {
        return Err(format!("{field}: must be at least {min_text}"));
    }
    Ok(())
}

pub(crate) fn default_local_poll() -> HumanDuration {
    Duration::from_secs(2).into()
}
fn default_pkcs11_sessions() -> usize {
    4
}
fn default_pkcs11_refresh() -> HumanDuration {
    Duration::from_secs(30).into()
}
fn default_aws_resolve() -> HumanDuration {
    Duration::from_secs(300).into()
}
fn default_aws_attempts() -> u32 {
    3
}
fn default_aws_encryption_context() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "kubernetes.io/kms-plugin".to_owned(),
        "kms-plugin".to_owned(),
    )])
}
fn default_aws_attempt_timeout() -> HumanDuration {
    Duration::from_millis(800).into()
}
fn default_aws_operation_timeout() -> HumanDuration {
    Duration::from_secs(2).into()
}
fn default_aws_startup_timeout() -> HumanDuration {
    Duration::from_secs(30).into()
}

/// An endpoint override must be `https://`, or `http://` to this host's loopback (a local test
/// server or proxy): in plain HTTP to anywhere else, the KEKs it wraps would cross the network
/// in clear.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return if endpoint.starts_with("https://") {
            Ok(())
        } else {
            Err(format!(
                "{endpoint:?} must start with https:// (or http:// to a loopback address)"
            ))
        };
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{endpoint:?}: plain http:// is accepted only to a loopback address (127.0.0.0/8, ::1, localhost): the wrapped KEKs would cross the network in clear; use https://"
        ))
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::check_endpoint;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://kms.eu-west-1.amazonaws.com",
            "https://vpce-1.kms.eu-west-1.vpce.amazonaws.com:443/",
            "http://127.0.0.1:5000",
            "http://127.8.9.10:5000/x",
            "http://[::1]:5000",
            "http://localhost:5000",
            "http://LOCALHOST",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:5000",
            "http://kms.example.com",
            "http://127.0.0.1.evil.example:80",
            "http://[::2]:5000",
            "http://user@10.0.0.1",
            "ftp://127.0.0.1",
            "127.0.0.1:5000",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
