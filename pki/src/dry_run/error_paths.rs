//! An error of a command run on the scratch copy, told in terms of the real files: every path
//! and every message in it has the scratch paths replaced, so it reads exactly as the error of
//! the same command on the real directories.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// `e` with `path` applied to each path it holds and `text` to each message.
pub(super) fn map_error(
    e: Error,
    path: &dyn Fn(&Path) -> PathBuf,
    text: &dyn Fn(&str) -> String,
) -> Error {
    match e {
        Error::Io { path: p, source } => Error::Io {
            path: path(&p),
            source,
        },
        Error::Invalid { path: p, reason } => Error::Invalid {
            path: path(&p),
            reason: text(&reason),
        },
        Error::Parse { path: p, reason } => Error::Parse {
            path: path(&p),
            reason: text(&reason),
        },
        Error::Crypto(m) => Error::Crypto(text(&m)),
        Error::ExternalCa { path: p, ca } => Error::ExternalCa {
            path: path(&p),
            ca: path(&ca),
        },
        Error::ExternalSaKey { path: p } => Error::ExternalSaKey { path: path(&p) },
        Error::CaKeyMissing { ca, key } => Error::CaKeyMissing {
            ca: path(&ca),
            key: path(&key),
        },
        Error::Config(m) => Error::Config(text(&m)),
        Error::CsrRefused(m) => Error::CsrRefused(text(&m)),
        Error::Cluster(m) => Error::Cluster(text(&m)),
        Error::ClusterRefused {
            object,
            gate,
            reason,
        } => Error::ClusterRefused {
            object,
            gate,
            reason: text(&reason),
        },
        Error::Render { what, reason } => Error::Render {
            what,
            reason: text(&reason),
        },
        Error::UnknownName(n) => Error::UnknownName(n),
        Error::RotationRefused { state, reason } => Error::RotationRefused {
            state: path(&state),
            reason: text(&reason),
        },
        Error::PendingCommit { journal, message } => Error::PendingCommit {
            journal: path(&journal),
            message: text(&message),
        },
        Error::TokensStillValid {
            state,
            until,
            lifetime_secs,
        } => Error::TokensStillValid {
            state: path(&state),
            until,
            lifetime_secs,
        },
    }
}
