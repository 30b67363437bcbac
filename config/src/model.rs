//! The configuration model and its loader.

use crate::{ConfigError, FileMode, HumanDuration, MetricsAddress, SocketAddress};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `kms-plugin serve` needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Where the KMS v2 service listens. Absent when the plugin only serves the JWT signer.
    #[serde(default)]
    pub socket: Option<SocketAddress>,
    /// Permission bits of the socket file (default 0600).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: FileMode,
    /// Numeric owner of the socket file (default: the plugin's user).
    #[serde(default)]
    pub socket_uid: Option<u32>,
    /// Numeric group of the socket file (default: the plugin's group).
    #[serde(default)]
    pub socket_gid: Option<u32>,
    /// How long in-flight calls may run after SIGTERM before the plugin exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Interval of the background root-key round trip that drives `Status.healthz`.
    #[serde(default = "default_probe_interval")]
    pub health_probe_interval: HumanDuration,
    /// Deadline of a single root-key backend call.
    #[serde(default = "default_backend_timeout")]
    pub backend_timeout: HumanDuration,
    /// When the local key-encrypting key is replaced.
    #[serde(default)]
    pub local_kek: LocalKekPolicy,
    /// Cache of unwrapped local KEKs used by Decrypt.
    #[serde(default)]
    pub decrypt_cache: DecryptCacheConfig,
    /// Address of the HTTP listener for `/metrics`, `/healthz`, `/livez` and `/readyz`
    /// (`host:port`, or a bare port for 127.0.0.1). Off when absent.
    #[serde(default)]
    pub metrics_address: Option<MetricsAddress>,
    /// Log line format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `kms_plugin=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The root key backend of the KMS v2 service (required with `socket`).
    #[serde(default)]
    pub backend: Option<BackendConfig>,
    /// The external service-account token signer, served on its own socket when configured.
    #[serde(default)]
    pub jwt_signer: Option<JwtSignerConfig>,
}

/// kube-apiserver's external service-account token signer (`ExternalJWTSigner`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSignerConfig {
    /// Where the signer listens (`--service-account-signing-endpoint`).
    pub socket: SocketAddress,
    /// Permission bits of the socket file (default 0600).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: FileMode,
    /// Numeric owner of the socket file.
    #[serde(default)]
    pub socket_uid: Option<u32>,
    /// Numeric group of the socket file.
    #[serde(default)]
    pub socket_gid: Option<u32>,
    /// Longest token lifetime kube-apiserver may request (at least 10 minutes).
    pub max_token_expiration: HumanDuration,
    /// The signing key.
    pub key: JwtKeyConfig,
    /// Public keys published for verification only (PEM files; several keys per file allowed).
    #[serde(default)]
    pub verify_only_keys: Vec<VerifyOnlyKey>,
    /// `refresh_hint_seconds` sent with FetchKeys.
    #[serde(default = "default_refresh_hint")]
    pub refresh_hint: HumanDuration,
    /// How often key files are checked for changes (a rotation by `pki rotate sa`).
    #[serde(default = "default_local_poll")]
    pub poll_interval: HumanDuration,
}

/// Where the service-account signing key lives; the same kinds as the KMS root key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key store in use.
    pub kind: BackendKind,
    /// A PEM private key file (kubeadm's `sa.key`): RSA (RS256) or ECDSA P-256/P-384 (ES256/ES384).
    #[serde(default)]
    pub local: Option<JwtLocalKey>,
    /// An EC private key in an HSM, found by `key_label`.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Backend>,
    /// An asymmetric ECC_NIST_P256 key in AWS KMS.
    #[serde(default)]
    pub aws: Option<AwsBackend>,
}

/// A signing key held in a local PEM file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtLocalKey {
    /// The private key file, e.g. `/etc/kubernetes/pki/sa.key`.
    pub key_file: PathBuf,
}

/// A verify-only public key file, optionally hidden from OIDC discovery.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum VerifyOnlyKey {
    /// A PEM file whose keys are published like the signing key.
    Path(PathBuf),
    /// A PEM file with options.
    Detailed {
        /// The PEM file.
        path: PathBuf,
        /// Publish with `exclude_from_oidc_discovery` (legacy keys that only verify old tokens).
        #[serde(default)]
        exclude_from_oidc_discovery: bool,
    },
}

impl VerifyOnlyKey {
    /// The PEM file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Path(path) | Self::Detailed { path, .. } => path,
        }
    }

    /// Whether these keys are hidden from OIDC discovery.
    pub fn excluded_from_discovery(&self) -> bool {
        matches!(
            self,
            Self::Detailed {
                exclude_from_oidc_discovery: true,
                ..
            }
        )
    }
}

fn default_refresh_hint() -> HumanDuration {
    Duration::from_secs(60).into()
}

/// Limits after which a fresh local KEK is generated and wrapped by the root key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalKekPolicy {
    /// Encryptions under one local KEK; a hard limit far below the 2^32 random-nonce bound of GCM.
    pub max_uses: u64,
    /// Age after which the KEK is replaced (a soft limit: kept while the root key is unreachable).
    pub max_age: HumanDuration,
}

impl Default for LocalKekPolicy {
    fn default() -> Self {
        Self {
            max_uses: 1 << 24,
            max_age: Duration::from_secs(7 * 86_400).into(),
        }
    }
}

/// Bounds of the Decrypt-side cache of unwrapped local KEKs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecryptCacheConfig {
    /// Most local KEKs held unwrapped at once.
    pub max_entries: u64,
    /// How long an unwrapped local KEK stays cached.
    pub ttl: HumanDuration,
}

impl Default for DecryptCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            ttl: Duration::from_secs(24 * 3600).into(),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Which root key backend to use, with the settings of each kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The backend in use.
    pub kind: BackendKind,
    /// Settings of the local key file backend.
    #[serde(default)]
    pub local: Option<LocalBackend>,
    /// Settings of the PKCS#11 (HSM) backend.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Backend>,
    /// Settings of the AWS KMS backend.
    #[serde(default)]
    pub aws: Option<AwsBackend>,
}

/// The kinds of root key backend.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Versioned AES-256 root keys in a local state directory.
    Local,
    /// A non-extractable AES key in an HSM reached over PKCS#11.
    Pkcs11,
    /// A symmetric key in AWS KMS.
    Aws,
}

/// The local key file backend.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBackend {
    /// Directory holding the versioned root keys (created 0700 if absent).
    pub state_dir: PathBuf,
    /// How often the state directory is checked for a rotated primary key.
    #[serde(default = "default_local_poll")]
    pub poll_interval: HumanDuration,
}

/// Where a secret such as an HSM PIN comes from. It is never written in the configuration itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trailing newline removed) is the secret.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

/// The PKCS#11 backend.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Backend {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token (slot ids are not stable, labels are).
    pub token_label: String,
    /// File holding the user PIN.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
    /// Label of the root key objects (each version carries its own CKA_ID).
    pub key_label: String,
    /// Sessions kept open for concurrent operations.
    #[serde(default = "default_pkcs11_sessions")]
    pub max_sessions: usize,
    /// How often the token is re-listed for a root key version created by another process.
    #[serde(default = "default_pkcs11_refresh")]
    pub refresh_interval: HumanDuration,
}

impl Pkcs11Backend {
    /// Where the PIN comes from.
    pub fn pin_source(&self) -> Option<SecretSource> {
        match (&self.pin_file, &self.pin_env) {
            (Some(file), _) => Some(SecretSource::File(file.clone())),
            (None, Some(var)) => Some(SecretSource::Env(var.clone())),
            (None, None) => None,
        }
    }
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only where the PIN lives is shown, never the PIN.
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin_file", &self.pin_file)
            .field("pin_env", &self.pin_env)
            .field("key_label", &self.key_label)
            .field("max_sessions", &self.max_sessions)
            .field("refresh_interval", &self.refresh_interval)
            .finish()
    }
}

/// The AWS KMS backend. Credentials come from the SDK's standard chain, never from here.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsBackend {
    /// Key ARN, key id, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    /// AWS region (default: the SDK's region chain).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (VPC endpoints, tests).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Encryption context bound to every wrapped key (e.g. the cluster name). Default:
    /// `{"kubernetes.io/kms-plugin": "kms-plugin"}`; set it per cluster so one cluster's wrapped
    /// keys never decrypt in another that shares the KMS key. Changing it makes existing data
    /// undecryptable.
    #[serde(default = "default_aws_encryption_context")]
    pub encryption_context: BTreeMap<String, String>,
    /// How often an alias is re-resolved to its key ARN.
    #[serde(default = "default_aws_resolve")]
    pub key_refresh_interval: HumanDuration,
    /// Attempts per call for throttling and transient errors.
    #[serde(default = "default_aws_attempts")]
    pub max_attempts: u32,
    /// Deadline of one attempt of a KMS call (connect included).
    #[serde(default = "default_aws_attempt_timeout")]
    pub attempt_timeout: HumanDuration,
    /// Deadline of a whole KMS call, retries included.
    #[serde(default = "default_aws_operation_timeout")]
    pub operation_timeout: HumanDuration,
    /// How long startup keeps retrying an unreachable KMS before giving up.
    #[serde(default = "default_aws_startup_timeout")]
    pub startup_timeout: HumanDuration,
}

fn default_socket_mode() -> FileMode {
    FileMode(0o600)
}
fn default_shutdown_grace() -> HumanDuration {
    Duration::from_secs(5).into()
}
fn default_probe_interval() -> HumanDuration {
    Duration::from_secs(30).into()
}
fn default_backend_timeout() -> HumanDuration {
    Duration::from_secs(2).into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_local_poll() -> HumanDuration {
    Duration::from_secs(2).into()
}
fn default_pkcs11_sessions() -> usize {
    4
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
fn default_pkcs11_refresh() -> HumanDuration {
    Duration::from_secs(30).into()
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

impl PluginConfig {
    /// The embedded default: the local root key in `state_dir`, serving on `socket`.
    pub fn local(socket: SocketAddress, state_dir: PathBuf) -> Self {
        Self {
            socket: Some(socket),
            socket_mode: default_socket_mode(),
            socket_uid: None,
            socket_gid: None,
            shutdown_grace: default_shutdown_grace(),
            health_probe_interval: default_probe_interval(),
            backend_timeout: default_backend_timeout(),
            local_kek: LocalKekPolicy::default(),
            decrypt_cache: DecryptCacheConfig::default(),
            metrics_address: None,
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            backend: Some(BackendConfig {
                kind: BackendKind::Local,
                local: Some(LocalBackend {
                    state_dir,
                    poll_interval: default_local_poll(),
                }),
                pkcs11: None,
                aws: None,
            }),
            jwt_signer: None,
        }
    }

    /// Reads and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Parses YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|error| {
            let (mut line, mut column) = error
                .location()
                .map(|at| (at.line(), at.column()))
                .unwrap_or((0, 0));
            // A value rejected by its own parser is reported at the start of the enclosing
            // mapping; point at the line that holds the quoted offending value instead.
            if let Some(found) = line_of_quoted_value(text, &error.to_string()) {
                (line, column) = found;
            }
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                reason: error.to_string(),
            }
        })
    }

    /// Checks the rules that span several fields. `origin` names the source in errors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        match (&self.socket, &self.backend, &self.jwt_signer) {
            (None, None, None) => {
                return Err(invalid(
                    "socket",
                    "set socket and backend (KMS v2), jwt_signer, or both",
                ));
            }
            (Some(_), None, _) => return Err(invalid("backend", "required when socket is set")),
            (None, Some(_), _) => return Err(invalid("socket", "required when backend is set")),
            _ => {}
        }
        if let Some(signer) = &self.jwt_signer {
            signer.validate(origin)?;
        }
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        match backend.kind {
            BackendKind::Local if backend.local.is_none() => {
                return Err(invalid(
                    "backend.local",
                    "required when backend.kind is local",
                ));
            }
            BackendKind::Pkcs11 => {
                validate_pkcs11(backend.pkcs11.as_ref(), "backend.pkcs11", origin)?
            }
            BackendKind::Aws => validate_aws(backend.aws.as_ref(), "backend.aws", origin)?,
            BackendKind::Local => {}
        }
        if let Some(local) = &backend.local
            && local.poll_interval.get() < MIN_INTERVAL
        {
            return Err(invalid(
                "backend.local.poll_interval",
                "must be at least 100ms",
            ));
        }
        if self.local_kek.max_uses == 0 || self.local_kek.max_uses > 1 << 32 {
            return Err(invalid(
                "local_kek.max_uses",
                "must be between 1 and 2^32 (the AES-GCM random-nonce bound)",
            ));
        }
        if self.decrypt_cache.max_entries == 0 {
            return Err(invalid("decrypt_cache.max_entries", "must be at least 1"));
        }
        if self.health_probe_interval.get() < Duration::from_secs(1) {
            return Err(invalid("health_probe_interval", "must be at least 1s"));
        }
        if self.backend_timeout.get().is_zero() {
            return Err(invalid("backend_timeout", "must be greater than zero"));
        }
        Ok(())
    }
}

/// Finds the 1-based line and column of the first `"quoted"` value of `reason` within `text`.
fn line_of_quoted_value(text: &str, reason: &str) -> Option<(usize, usize)> {
    let start = reason.find('"')? + 1;
    let len = reason[start..].find('"')?;
    let value = &reason[start..start + len];
    if value.is_empty() {
        return None;
    }
    text.lines()
        .enumerate()
        .find_map(|(index, line)| line.find(value).map(|column| (index + 1, column + 1)))
}

/// Shortest polling interval accepted anywhere (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn invalid_at(origin: &str, field: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn validate_pkcs11(
    pkcs11: Option<&Pkcs11Backend>,
    field: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let Some(pkcs11) = pkcs11 else {
        return Err(invalid_at(origin, field, "required when kind is pkcs11"));
    };
    if pkcs11.pin_source().is_none() {
        return Err(invalid_at(
            origin,
            field,
            "set pin_file or pin_env; a PIN is never written in this file",
        ));
    }
    if pkcs11.pin_file.is_some() && pkcs11.pin_env.is_some() {
        return Err(invalid_at(
            origin,
            field,
            "set only one of pin_file and pin_env",
        ));
    }
    if pkcs11.token_label.is_empty() || pkcs11.key_label.is_empty() {
        return Err(invalid_at(
            origin,
            field,
            "token_label and key_label must not be empty",
        ));
    }
    if pkcs11.max_sessions == 0 {
        return Err(invalid_at(
            origin,
            &format!("{field}.max_sessions"),
            "must be at least 1",
        ));
    }
    Ok(())
}

fn validate_aws(aws: Option<&AwsBackend>, field: &str, origin: &str) -> Result<(), ConfigError> {
    let Some(aws) = aws else {
        return Err(invalid_at(origin, field, "required when kind is aws"));
    };
    if aws.key_id.is_empty() {
        return Err(invalid_at(
            origin,
            &format!("{field}.key_id"),
            "must not be empty",
        ));
    }
    if aws.max_attempts == 0 {
        return Err(invalid_at(
            origin,
            &format!("{field}.max_attempts"),
            "must be at least 1",
        ));
    }
    Ok(())
}

impl JwtSignerConfig {
    /// Checks the signer's settings.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if self.max_token_expiration.get() < Duration::from_secs(600) {
            return Err(invalid_at(
                origin,
                "jwt_signer.max_token_expiration",
                "must be at least 10m (kube-apiserver rejects shorter)",
            ));
        }
        if self.poll_interval.get() < MIN_INTERVAL {
            return Err(invalid_at(
                origin,
                "jwt_signer.poll_interval",
                "must be at least 100ms",
            ));
        }
        if self.refresh_hint.get() < Duration::from_secs(1) {
            return Err(invalid_at(
                origin,
                "jwt_signer.refresh_hint",
                "must be at least 1s",
            ));
        }
        match self.key.kind {
            BackendKind::Local if self.key.local.is_none() => Err(invalid_at(
                origin,
                "jwt_signer.key.local",
                "required when kind is local",
            )),
            BackendKind::Local => Ok(()),
            BackendKind::Pkcs11 => {
                validate_pkcs11(self.key.pkcs11.as_ref(), "jwt_signer.key.pkcs11", origin)
            }
            BackendKind::Aws => validate_aws(self.key.aws.as_ref(), "jwt_signer.key.aws", origin),
        }
    }
}
