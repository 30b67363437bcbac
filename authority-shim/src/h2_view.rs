//! What h2 makes of each decoded header field: whether its HPACK decoder rejects it, how much it
//! counts towards SETTINGS_MAX_HEADER_LIST_SIZE, and whether it makes the request malformed
//! (h2 `hpack::Header::new` and `HeaderBlock::load`).

use http::{HeaderName, HeaderValue, Method, StatusCode};

/// How h2 accounts for one field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Count {
    /// Counted with this size (name + value + 32).
    Size(usize),
    /// Makes the request malformed (a stream error); not counted.
    Malformed,
}

/// Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"transfer-encoding",
    b"upgrade",
    b"keep-alive",
    b"proxy-connection",
];

const PSEUDO: [&[u8]; 6] = [
    b":authority",
    b":method",
    b":scheme",
    b":path",
    b":protocol",
    b":status",
];

/// h2's running view of one header block.
#[derive(Default)]
pub(crate) struct H2View {
    regular_seen: bool,
    pseudo_seen: u8,
}

/// True when h2's HPACK decoder refuses the field, a connection error (GOAWAY PROTOCOL_ERROR).
/// An empty name is refused too: h2 waits for more input after it and fails the block.
pub(crate) fn rejects(name: &[u8], value: &[u8]) -> bool {
    match name {
        [] => true,
        [b':', pseudo @ ..] => match pseudo {
            b"authority" | b"scheme" | b"path" | b"protocol" => std::str::from_utf8(value).is_err(),
            b"method" => Method::from_bytes(value).is_err(),
            b"status" => StatusCode::from_bytes(value).is_err(),
            _ => true,
        },
        _ => HeaderName::from_lowercase(name).is_err() || HeaderValue::from_bytes(value).is_err(),
    }
}

impl H2View {
    /// Accounts for the next field of the block, which [`rejects`] accepted.
    pub(crate) fn count(&mut self, name: &[u8], value: &[u8]) -> Count {
        let size = name.len() + value.len() + 32;
        if let Some(index) = PSEUDO.iter().position(|p| *p == name) {
            let bit = 1u8 << index;
            if self.regular_seen || self.pseudo_seen & bit != 0 {
                return Count::Malformed;
            }
            self.pseudo_seen |= bit;
            return Count::Size(size);
        }
        if CONNECTION_SPECIFIC.contains(&name) || (name == b"te" && value != b"trailers") {
            return Count::Malformed;
        }
        self.regular_seen = true;
        Count::Size(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_h2_rules() {
        assert!(rejects(b"", b"x"));
        assert!(rejects(b":bogus", b"x"));
        assert!(rejects(b":authority", b"\xff"));
        assert!(rejects(b"Upper", b"x"));
        assert!(rejects(b"x", b"a\nb"));
        assert!(!rejects(b":authority", b"/var/run/kms.sock"));
        let mut view = H2View::default();
        assert_eq!(view.count(b":method", b"POST"), Count::Size(7 + 4 + 32));
        assert_eq!(view.count(b":method", b"POST"), Count::Malformed);
        assert_eq!(view.count(b"te", b"trailers"), Count::Size(2 + 8 + 32));
        assert_eq!(view.count(b"te", b"gzip"), Count::Malformed);
        assert_eq!(view.count(b"connection", b""), Count::Malformed);
        assert_eq!(view.count(b":path", b"/"), Count::Malformed);
    }
}
