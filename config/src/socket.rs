//! Where the plugin listens and with which file permissions.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A Unix socket address: a filesystem path, or a Linux abstract name written `@name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketAddress {
    /// A socket file on disk.
    Path(PathBuf),
    /// A Linux abstract socket (no file; the name without the leading `@`).
    Abstract(String),
}

impl FromStr for SocketAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.strip_prefix("unix://").unwrap_or(text);
        if text.is_empty() {
            return Err("socket address is empty".into());
        }
        // kube-apiserver writes abstract sockets as `unix:///@name`.
        let abstract_name = text.strip_prefix('@').or_else(|| text.strip_prefix("/@"));
        if let Some(name) = abstract_name {
            if name.is_empty() || name.len() > 107 {
                return Err("abstract socket name must be 1 to 107 bytes".into());
            }
            return Ok(Self::Abstract(name.to_owned()));
        }
        if text.len() > 107 {
            return Err(format!(
                "socket path {text:?} is longer than the 107 bytes a Unix socket address allows"
            ));
        }
        Ok(Self::Path(PathBuf::from(text)))
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl<'de> Deserialize<'de> for SocketAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The TCP address of the metrics and health listener; a bare port means 127.0.0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub std::net::SocketAddr);

impl FromStr for MetricsAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = text.parse::<u16>() {
            return Ok(Self(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
        }
        text.parse()
            .map(Self)
            .map_err(|_| format!("invalid metrics address {text:?}: expected host:port or a port"))
    }
}

impl<'de> Deserialize<'de> for MetricsAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Port(u16),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Raw::Port(port) => Ok(Self(std::net::SocketAddr::from(([127, 0, 0, 1], port)))),
        }
    }
}

/// A Unix permission mode written in octal, e.g. `"0600"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FromStr for FileMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // One optional `0o`, then octal digits only (`from_str_radix` alone would take a `+`).
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let invalid = || format!("invalid file mode {text:?}: expected octal such as 0600");
        if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(invalid());
        }
        let mode = u32::from_str_radix(digits, 8).map_err(|_| invalid())?;
        if mode > 0o777 {
            return Err(format!(
                "invalid file mode {text:?}: only permission bits (at most 0777)"
            ));
        }
        if mode & 0o002 != 0 {
            return Err(format!(
                "refusing world-writable socket mode {text:?}: anyone on the node could call the plugin"
            ));
        }
        Ok(Self(mode))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FileModeVisitor)
    }
}

/// Accepts a string of octal digits; refuses a number, whose written digits YAML has lost
/// (`0o644` reads as 420, `644` as six hundred forty-four), so none is guessed at.
struct FileModeVisitor;

impl FileModeVisitor {
    fn number<E: serde::de::Error>(number: impl fmt::Display) -> E {
        E::custom(format!(
            "socket mode must be a quoted string of octal digits such as '0600'; \
             YAML read this unquoted value as the number {number}: quote it"
        ))
    }
}

impl serde::de::Visitor<'_> for FileModeVisitor {
    type Value = FileMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string of octal digits such as '0600'")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileMode, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<FileMode, E> {
        Err(Self::number(number))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<FileMode, E> {
        Err(Self::number(number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_forms() {
        assert_eq!(
            "/run/k.sock".parse(),
            Ok(SocketAddress::Path("/run/k.sock".into()))
        );
        assert_eq!(
            "unix:///run/k.sock".parse(),
            Ok(SocketAddress::Path("/run/k.sock".into()))
        );
        assert_eq!("@kms".parse(), Ok(SocketAddress::Abstract("kms".into())));
        assert_eq!(
            "unix:///@kms".parse(),
            Ok(SocketAddress::Abstract("kms".into()))
        );
        assert!("".parse::<SocketAddress>().is_err());
        assert!("x".repeat(200).parse::<SocketAddress>().is_err());
    }

    #[test]
    fn modes() {
        assert_eq!("0600".parse(), Ok(FileMode(0o600)));
        assert_eq!("660".parse(), Ok(FileMode(0o660)));
        assert!("0666".parse::<FileMode>().is_err());
        assert!("0800".parse::<FileMode>().is_err());
        assert!("rw".parse::<FileMode>().is_err());
        assert_eq!("0o660".parse(), Ok(FileMode(0o660)));
        for bad in ["0o0o660", "+660", "0o", "", "0o+660", " 660"] {
            assert!(bad.parse::<FileMode>().is_err(), "{bad:?}");
        }
    }
}
