//! HTTP/2 frame heads and the parts of a HEADERS frame (RFC 9113 §4.1, §6.2).

use bytes::BufMut;
use std::ops::Range;

/// The client connection preface every HTTP/2 connection starts with.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEAD_LEN: usize = 9;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY: u8 = 0x20;

/// A parsed frame head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    pub length: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub bytes: [u8; HEAD_LEN],
}

impl Head {
    /// Parses the first nine bytes of `bytes`.
    pub(crate) fn parse(bytes: &[u8]) -> Head {
        let mut head = [0u8; HEAD_LEN];
        head.copy_from_slice(&bytes[..HEAD_LEN]);
        Head {
            length: (usize::from(head[0]) << 16)
                | (usize::from(head[1]) << 8)
                | usize::from(head[2]),
            kind: head[3],
            flags: head[4],
            stream_id: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            bytes: head,
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Writes one frame.
pub(crate) fn put_frame(
    out: &mut impl BufMut,
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: &[u8],
) {
    let length = payload.len() as u32;
    out.put_slice(&length.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
    out.put_slice(payload);
}

/// The priority fields and header block fragment of a HEADERS frame.
pub(crate) struct HeadersParts {
    pub priority: Option<[u8; 5]>,
    pub fragment: Range<usize>,
}

/// A HEADERS frame h2 refuses before decoding its header block (h2 `Headers::load`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadersRefusal {
    /// Stream 0, bad padding or truncated priority fields: a connection error (GOAWAY
    /// PROTOCOL_ERROR).
    Connection,
    /// A stream depending on itself: h2 resets the stream and never decodes the block. The
    /// frame's priority fields.
    SelfDependency([u8; 5]),
}

/// Splits a HEADERS payload into its priority fields and header block fragment.
pub(crate) fn headers_parts(head: &Head, payload: &[u8]) -> Result<HeadersParts, HeadersRefusal> {
    use HeadersRefusal::Connection;
    if head.stream_id == 0 {
        return Err(Connection);
    }
    let mut start = 0;
    let mut padding = 0;
    if head.has(PADDED) {
        padding = usize::from(*payload.first().ok_or(Connection)?);
        start = 1;
    }
    let mut priority = None;
    if head.has(PRIORITY) {
        let fields: [u8; 5] = payload
            .get(start..start + 5)
            .and_then(|f| f.try_into().ok())
            .ok_or(Connection)?;
        let dependency =
            u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & 0x7fff_ffff;
        if dependency == head.stream_id {
            return Err(HeadersRefusal::SelfDependency(fields));
        }
        priority = Some(fields);
        start += 5;
    }
    let end = payload.len().checked_sub(padding).ok_or(Connection)?;
    if end < start {
        return Err(Connection);
    }
    Ok(HeadersParts {
        priority,
        fragment: start..end,
    })
}
