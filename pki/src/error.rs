//! The error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong while issuing, loading or checking the PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, written, synced or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what it must be (wrong CA, missing SAN, not a CA ...).
    #[error("{path}: {reason}")]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be parsed (not PEM, not a certificate, not a key, not YAML ...).
    #[error("{path}: cannot parse: {reason}")]
    Parse {
        /// The offending file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// Key generation or certificate signing failed inside the crypto library.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// A certificate cannot be issued because its CA's private key is absent (external CA mode).
    #[error(
        "{path}: missing, and cannot be issued because CA {ca} has no private key (external CA)"
    )]
    ExternalCa {
        /// The file that would have been written.
        path: PathBuf,
        /// The CA certificate that lacks its key.
        ca: PathBuf,
    },
    /// The service-account key pair is absent in external CA mode, where kubeadm expects the
    /// operator to supply it and generates none.
    #[error(
        "{path}: missing: in external CA mode the service-account key pair (sa.key, sa.pub) is supplied by the operator, not generated"
    )]
    ExternalSaKey {
        /// Where `sa.key` is expected.
        path: PathBuf,
    },
    /// A signing operation needs a CA key that is absent (external CA mode).
    #[error(
        "{key}: missing: CA {ca} is externally managed, certificates it signs cannot be issued or renewed here"
    )]
    CaKeyMissing {
        /// The CA certificate.
        ca: PathBuf,
        /// Where its key would be.
        key: PathBuf,
    },
    /// A configuration value (flag or kubeadm config field) is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A certificate signing request was refused.
    #[error("CSR refused: {0}")]
    CsrRefused(String),
    /// Output (JSON, YAML, kubeconfig text) could not be rendered.
    #[error("cannot render {what}: {reason}")]
    Render {
        /// What was being rendered.
        what: &'static str,
        /// The serializer's message.
        reason: String,
    },
    /// An unknown certificate name was given to a command.
    #[error("unknown certificate name {0:?}")]
    UnknownName(String),
    /// A rotation phase was refused: run out of order, or another rotation is in progress.
    /// The message says what to run instead.
    #[error("{state}: {reason}")]
    RotationRefused {
        /// The rotation state file consulted.
        state: PathBuf,
        /// Why, and what to run instead.
        reason: String,
    },
    /// A directory holds a journaled multi-file commit that could not be completed: every
    /// writer of it stops, and readers refuse, until it is.
    #[error("{message}")]
    PendingCommit {
        /// The journal of the unfinished commit.
        journal: PathBuf,
        /// What went wrong and what the operator should do.
        message: String,
    },
    /// The Kubernetes API (`--kubeconfig`) could not be reached or answered unexpectedly.
    #[error("kubernetes API: {0}")]
    Cluster(String),
    /// The cluster's view refuses a rotation command: a gate that reads every node's state
    /// (`--force` overrides it, and says so).
    #[error("{object}: refused by the gate `{gate}`: {reason}")]
    ClusterRefused {
        /// The object holding the cluster's state (`kube-system/ConfigMap/...`).
        object: String,
        /// The gate's name, as `--force` reports it.
        gate: &'static str,
        /// Which nodes stand in the way, and what to run.
        reason: String,
    },
    /// `rotate sa finish` was run before the maximum token lifetime had passed since `switch`.
    #[error(
        "{state}: refusing to drop the old service-account key: tokens it signed may be valid until {until} ({lifetime_secs}s after switch); wait, or pass --force"
    )]
    TokensStillValid {
        /// The rotation state file that recorded the switch time.
        state: PathBuf,
        /// RFC 3339 time after which no token signed by the old key can still be valid.
        until: String,
        /// The recorded maximum token lifetime, in seconds.
        lifetime_secs: u64,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Invalid`] for `path`.
    pub fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Parse {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn crypto(e: impl std::fmt::Display) -> Self {
        Error::Crypto(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
