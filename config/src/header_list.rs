//! The HTTP/2 header list limit of the plugin's sockets.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// Largest decoded header list (name + value + 32 bytes per field, RFC 7541) a client may send,
/// advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced by the `:authority` shim while it
/// decodes. Between [`HeaderListSize::MIN`] and [`HeaderListSize::MAX`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderListSize(u32);

impl HeaderListSize {
    /// h2's default, 16 KiB: kube-apiserver's calls use a few hundred bytes.
    pub const DEFAULT: HeaderListSize = HeaderListSize(16 * 1024);
    /// The smallest limit accepted: a gRPC request's headers need a few hundred bytes.
    pub const MIN: u32 = 4 * 1024;
    /// The largest limit accepted: the shim's re-encoded blocks must fit its frames.
    pub const MAX: u32 = 1024 * 1024;

    /// The limit in bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }
}

impl Default for HeaderListSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for HeaderListSize {
    type Error = String;

    fn try_from(bytes: u32) -> Result<Self, Self::Error> {
        if (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(out_of_range(bytes))
        }
    }
}

impl<'de> Deserialize<'de> for HeaderListSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u32(HeaderListSizeVisitor)
    }
}

/// Checks the range while the value is read, so the error carries the value's line.
struct HeaderListSizeVisitor;

impl serde::de::Visitor<'_> for HeaderListSizeVisitor {
    type Value = HeaderListSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_header_list_size as a number of bytes from {} to {}",
            HeaderListSize::MIN,
            HeaderListSize::MAX
        )
    }

    fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<HeaderListSize, E> {
        u32::try_from(bytes)
            .ok()
            .and_then(|bytes| HeaderListSize::try_from(bytes).ok())
            .ok_or_else(|| E::custom(out_of_range(bytes)))
    }

    fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<HeaderListSize, E> {
        match u64::try_from(bytes) {
            Ok(bytes) => self.visit_u64(bytes),
            Err(_) => Err(E::custom(out_of_range(bytes))),
        }
    }
}

fn out_of_range(bytes: impl fmt::Display) -> String {
    format!(
        "max_header_list_size must be {} to {} bytes, got {bytes}",
        HeaderListSize::MIN,
        HeaderListSize::MAX
    )
}

impl fmt::Display for HeaderListSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}
