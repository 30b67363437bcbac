//! Configuration errors that name the file, the line and the reason.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a bad value.
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// 1-based column of the offending value (0 when unknown).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The values parse but do not fit together.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The configuration file, or "command line".
        origin: String,
        /// Dotted path of the field at fault.
        field: String,
        /// What is wrong.
        reason: String,
    },
}
