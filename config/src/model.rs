//! The configuration model and its loader.

use crate::backend::{MIN_POLL_INTERVAL, default_local_poll};
use crate::{
    AllowedPeers, BackendConfig, ConfigError, FileMode, HeaderListSize, HumanDuration,
    JwtKeyConfig, LocalBackend, MetricsAddress, SocketAddress,
};
use serde::Deserialize;
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
    /// Who may connect to the KMS socket (checked with `SO_PEERCRED`); anyone the file mode
    /// admits when absent. Required for an abstract socket, which has no file mode.
    #[serde(default)]
    pub allowed_peers: Option<AllowedPeers>,
    /// Serve on an abstract socket (`@name`) although nothing authenticates the server: a
    /// process that binds the name first receives kube-apiserver's plaintext. Refused unless
    /// set.
    #[serde(default)]
    pub allow_abstract_socket: bool,
    /// Largest decoded HTTP/2 header list a client may send on either socket, in bytes
    /// (name + value + 32 per field); 4096 to 1048576, default 16384 as h2's.
    #[serde(default)]
    pub max_header_list_size: HeaderListSize,
    /// How long in-flight calls may run after SIGTERM before the plugin exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Interval of the background root-key round trip that drives `Status.healthz`.
    #[serde(default = "default_probe_interval")]
    pub health_probe_interval: HumanDuration,
    /// What Status reports while the root key's backend is unreachable (see [`HealthPolicy`]).
    #[serde(default)]
    pub health: HealthPolicy,
    /// What a revoked root key does (the backend says the key is disabled, deleted or access is
    /// denied, unlike an outage): `true` (default) stops Encrypt under it, drops its cached
    /// unwraps and refuses Decrypts under it until a probe succeeds again; `false` keeps the
    /// old behaviour (Status unhealthy, the current KEK and the cache keep serving).
    #[serde(default = "default_true")]
    pub revoked_key_stops_encrypt: bool,
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
    /// Who may connect to the signer socket (checked with `SO_PEERCRED`); anyone the file mode
    /// admits when absent. Required for an abstract socket, which has no file mode.
    #[serde(default)]
    pub allowed_peers: Option<AllowedPeers>,
    /// Serve the signer on an abstract socket (`@name`) although nothing authenticates the
    /// server: a process that binds the name first receives the signing requests and can answer
    /// them with tokens of its own. Refused unless set.
    #[serde(default)]
    pub allow_abstract_socket: bool,
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

/// What Status reports while the root key's backend is unreachable (a timeout, a refused or
/// failed call; not a revoked key, which the backend reports and which never gets a grace).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    /// `serve` (default): Status stays "ok" while the plugin can still serve, for at most
    /// `outage_grace`; `report`: Status reports the failed probe at once.
    #[serde(default)]
    pub backend_outage: BackendOutage,
    /// Longest time Status stays "ok" through an outage (default 24h); never past the local
    /// KEK's `max_age`.
    #[serde(default = "default_outage_grace")]
    pub outage_grace: HumanDuration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            backend_outage: BackendOutage::default(),
            outage_grace: default_outage_grace(),
        }
    }
}

/// The choice of [`HealthPolicy::backend_outage`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendOutage {
    /// Stay healthy while a usable local KEK serves Encrypt, within the grace.
    #[default]
    Serve,
    /// Report every failed probe (every kube-apiserver turns unready with the backend).
    Report,
}

fn default_outage_grace() -> HumanDuration {
    Duration::from_secs(24 * 3600).into()
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

fn default_socket_mode() -> FileMode {
    FileMode(0o600)
}
fn default_shutdown_grace() -> HumanDuration {
    Duration::from_secs(5).into()
}
fn default_probe_interval() -> HumanDuration {
    Duration::from_secs(30).into()
}
fn default_true() -> bool {
    true
}
fn default_backend_timeout() -> HumanDuration {
    Duration::from_secs(2).into()
}
fn default_log_level() -> String {
    "info".into()
}

impl PluginConfig {
    /// The embedded default: the local root key in `state_dir`, serving on `socket`.
    pub fn local(socket: SocketAddress, state_dir: PathBuf) -> Self {
        Self {
            socket: Some(socket),
            socket_mode: default_socket_mode(),
            socket_uid: None,
            socket_gid: None,
            allowed_peers: None,
            allow_abstract_socket: false,
            max_header_list_size: HeaderListSize::DEFAULT,
            shutdown_grace: default_shutdown_grace(),
            health_probe_interval: default_probe_interval(),
            health: HealthPolicy::default(),
            revoked_key_stops_encrypt: true,
            backend_timeout: default_backend_timeout(),
            local_kek: LocalKekPolicy::default(),
            decrypt_cache: DecryptCacheConfig::default(),
            metrics_address: None,
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            backend: Some(BackendConfig::Local(LocalBackend::new(state_dir))),
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
            if let Some(found) = crate::location::locate(text, &error.to_string()) {
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
        if let Some(socket) = &self.socket {
            check_socket_access(
                origin,
                "",
                socket,
                self.allowed_peers.as_ref(),
                self.allow_abstract_socket,
            )?;
        }
        if let Some(signer) = &self.jwt_signer {
            signer.validate(origin)?;
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
        if self.health.outage_grace.get() < Duration::from_secs(1) {
            return Err(invalid(
                "health.outage_grace",
                "must be at least 1s (health.backend_outage: report reports every outage at once)",
            ));
        }
        if self.backend_timeout.get().is_zero() {
            return Err(invalid("backend_timeout", "must be greater than zero"));
        }
        Ok(())
    }
}

fn invalid_at(origin: &str, field: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// An abstract socket has no file permissions, so only an allowlist restricts who connects,
/// and nothing restricts who binds the name first: it is refused unless `allow_abstract` says
/// the operator accepts that. An allowlist that admits nobody is a mistake. `prefix` is `""` or
/// `"jwt_signer."`.
fn check_socket_access(
    origin: &str,
    prefix: &str,
    socket: &SocketAddress,
    allowed_peers: Option<&AllowedPeers>,
    allow_abstract: bool,
) -> Result<(), ConfigError> {
    if matches!(socket, SocketAddress::Abstract(_)) && !allow_abstract {
        return Err(invalid_at(
            origin,
            &format!("{prefix}socket"),
            &format!(
                "abstract socket {socket}: nothing authenticates the server of an abstract \
                 socket, so a local process that binds {socket} first would receive what \
                 kube-apiserver sends (plaintext seeds; on the signer socket, the claims it then \
                 answers with tokens of its own); use a socket path in a root-owned 0750 \
                 directory, or set {prefix}allow_abstract_socket: true (with \
                 {prefix}allowed_peers) to accept that risk"
            ),
        ));
    }
    match allowed_peers {
        Some(peers) if peers.is_empty() => Err(invalid_at(
            origin,
            &format!("{prefix}allowed_peers"),
            "lists no uid and no gid, so nobody could connect; list at least one, or remove the key",
        )),
        None if matches!(socket, SocketAddress::Abstract(_)) => Err(invalid_at(
            origin,
            &format!("{prefix}socket"),
            &format!(
                "abstract socket {socket} has no file permissions: any process in the network \
                 namespace could connect; set {prefix}allowed_peers (uids/gids), or use a socket path"
            ),
        )),
        _ => Ok(()),
    }
}

impl JwtSignerConfig {
    /// Checks the signer's settings.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        check_socket_access(
            origin,
            "jwt_signer.",
            &self.socket,
            self.allowed_peers.as_ref(),
            self.allow_abstract_socket,
        )?;
        if self.max_token_expiration.get() < Duration::from_secs(600) {
            return Err(invalid_at(
                origin,
                "jwt_signer.max_token_expiration",
                "must be at least 10m (kube-apiserver rejects shorter)",
            ));
        }
        if self.poll_interval.get() < MIN_POLL_INTERVAL {
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
        Ok(())
    }
}
