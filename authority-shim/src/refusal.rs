//! What the client gets when it oversteps a bound: the shim hands h2 a few bytes that make h2
//! detect the same violation itself, so the answer is h2's own (its GOAWAY code, debug data and
//! last stream id) and h2 closes the connection as it always does. The shim then stops reading.
//!
//! These inputs rely on h2's dynamic table being empty, which holds whenever one is sent: on a
//! connection the shim decodes, it never forwards a representation that adds to h2's table.

use crate::frame::{CONTINUATION, END_HEADERS, HEAD_LEN, HEADERS, put_frame};
use crate::hpack::{encode_field, encode_integer};
use crate::limits::Limits;
use bytes::BytesMut;

/// A bound the client overstepped, named after h2's answer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A connection error h2 answers with GOAWAY PROTOCOL_ERROR (bad HPACK, a header block
    /// interrupted by another frame, PUSH_PROMISE from a client, a field h2 cannot decode).
    Protocol,
    /// A header frame longer than SETTINGS_MAX_FRAME_SIZE (GOAWAY FRAME_SIZE_ERROR); its head.
    FrameTooLarge([u8; HEAD_LEN]),
    /// More CONTINUATION frames than h2 accepts (GOAWAY ENHANCE_YOUR_CALM
    /// "too_many_continuations").
    TooManyContinuations,
    /// A decoded header list over four times the limit (GOAWAY ENHANCE_YOUR_CALM
    /// "header_list_way_too_large").
    HeaderListWayTooLarge,
    /// A malformed field in a frame that does not end its block: h2 resets the stream at once
    /// and, having dropped the block, refuses the next CONTINUATION (GOAWAY PROTOCOL_ERROR).
    MalformedMidBlock,
    /// A block already over the limit whose undecoded remainder keeps growing past it
    /// (GOAWAY COMPRESSION_ERROR).
    OversizedBlockKeepsGrowing,
}

/// One literal with incremental indexing of 4,033 bytes (name `x`, 4,000-byte value): the
/// largest entry that fits h2's 4,096-byte table, so references to it count 4,033 bytes each.
const ENTRY_SIZE: usize = 1 + 4000 + 32;

fn big_entry(block: &mut Vec<u8>) {
    block.extend_from_slice(&[0x40, 0x01, b'x']);
    encode_integer(block, 0x00, 7, 4000);
    block.resize(block.len() + 4000, b'x');
}

/// `count` references to the entry [`big_entry`] added (dynamic index 62).
fn references(block: &mut Vec<u8>, count: usize) {
    block.resize(block.len() + count, 0x80 | 62);
}

impl Violation {
    /// The bytes that make h2 answer this violation on stream `stream_id` (never 0).
    pub(crate) fn provocation(self, stream_id: u32, limits: Limits) -> BytesMut {
        let mut out = BytesMut::new();
        match self {
            Violation::Protocol => {
                // A CONTINUATION while h2 has no header block open.
                put_frame(&mut out, CONTINUATION, END_HEADERS, stream_id, &[]);
            }
            Violation::FrameTooLarge(head) => out.extend_from_slice(&head),
            Violation::MalformedMidBlock => {
                let mut block = Vec::new();
                encode_field(&mut block, b"connection", b"", false);
                put_frame(&mut out, HEADERS, END_HEADERS, stream_id, &block);
                put_frame(&mut out, CONTINUATION, END_HEADERS, stream_id, &[]);
            }
            Violation::TooManyContinuations => {
                put_frame(&mut out, HEADERS, 0, stream_id, &[]);
                for _ in 0..=limits.continuation_frames() {
                    put_frame(&mut out, CONTINUATION, 0, stream_id, &[]);
                }
            }
            Violation::HeaderListWayTooLarge => {
                let mut block = Vec::new();
                big_entry(&mut block);
                references(&mut block, limits.abuse() / ENTRY_SIZE + 1);
                put_frame(&mut out, HEADERS, END_HEADERS, stream_id, &block);
            }
            Violation::OversizedBlockKeepsGrowing => {
                // Over the limit (but not four times over), then a field whose value is still
                // to come: h2 holds the remainder and refuses to hold more than the limit.
                let mut block = Vec::new();
                big_entry(&mut block);
                references(&mut block, limits.header_list() / ENTRY_SIZE + 1);
                let start = block.len();
                block.extend_from_slice(&[0x00, 0x01, b'y']);
                encode_integer(&mut block, 0x00, 7, limits.abuse());
                let mut pending = block.len() - start;
                put_frame(&mut out, HEADERS, 0, stream_id, &block);
                let filler = vec![0u8; limits.frame()];
                loop {
                    put_frame(&mut out, CONTINUATION, 0, stream_id, &filler);
                    if pending + HEAD_LEN + filler.len() > limits.header_list() {
                        break;
                    }
                    pending += filler.len();
                }
            }
        }
        out
    }
}
