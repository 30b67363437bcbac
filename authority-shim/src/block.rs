//! One header block on its way through the shim: decoded fragment by fragment as its HEADERS
//! and CONTINUATION frames arrive, counted the way h2 counts it, and re-encoded for h2 with an
//! unparsable `:authority` replaced.
//!
//! Memory stays bounded by h2's own limits: fields are re-encoded only until the decoded list
//! reaches the header list limit, the undecoded remainder is at most the frames h2 accepts, and
//! a list four times over the limit ends the connection as soon as it is seen.

use crate::frame::{CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PRIORITY, put_frame};
use crate::h2_view::{self, Count, H2View};
use crate::hpack::{Field, HpackDecoder, encode_field};
use crate::limits::Limits;
use crate::refusal::Violation;
use bytes::BytesMut;
use std::ops::ControlFlow;

/// What replaces an unparsable `:authority`.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// What the block's `:authority` means for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Authority {
    /// Not decoded yet (or absent).
    Unseen,
    /// h2 accepts it as it is.
    Acceptable,
    /// h2 would reset the stream; it is replaced.
    Replaced,
}

pub(crate) struct HeaderBlock {
    pub stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    continuations: usize,
    /// Bytes of an incomplete representation, waiting for the next fragment.
    tail: Vec<u8>,
    /// Re-encoded fields for h2.
    encoded: Vec<u8>,
    view: H2View,
    /// The client's list as h2 counts it.
    list_size: usize,
    /// What is forwarded, as h2 counts it.
    forwarded_size: usize,
    over_size: bool,
    /// A field made the request malformed (h2 resets it); not forwarded, a marker is.
    malformed: bool,
    pub authority: Authority,
    /// The frames as received, kept while the connection's fate is undecided.
    pub originals: Option<BytesMut>,
}

impl HeaderBlock {
    pub(crate) fn new(stream_id: u32, end_stream: bool, priority: Option<[u8; 5]>) -> Self {
        Self {
            stream_id,
            end_stream,
            priority,
            continuations: 0,
            tail: Vec::new(),
            encoded: Vec::new(),
            view: H2View::default(),
            list_size: 0,
            forwarded_size: 0,
            over_size: false,
            malformed: false,
            authority: Authority::Unseen,
            originals: None,
        }
    }

    /// Bytes held for this block.
    pub(crate) fn held(&self) -> usize {
        self.tail.capacity()
            + self.encoded.capacity()
            + self.originals.as_ref().map_or(0, |o| o.capacity())
    }

    /// Checks a CONTINUATION frame of `frame_len` bytes (head included) against h2's bounds
    /// before its fragment is fed, in h2's order.
    pub(crate) fn continuation(
        &mut self,
        frame_len: usize,
        end_headers: bool,
        limits: Limits,
    ) -> Result<(), Violation> {
        if !end_headers {
            self.continuations += 1;
            if self.continuations > limits.continuation_frames() {
                return Err(Violation::TooManyContinuations);
            }
        }
        if self.over_size
            && !self.tail.is_empty()
            && self.tail.len() + frame_len > limits.header_list()
        {
            return Err(Violation::OversizedBlockKeepsGrowing);
        }
        Ok(())
    }

    /// Decodes what `fragment` completes. With `stop_when_acceptable`, decoding stops at an
    /// acceptable `:authority` (the connection is then handed to h2 untouched). Like h2, a
    /// malformed field in a frame that does not end the block ends the block there.
    pub(crate) fn feed(
        &mut self,
        fragment: &[u8],
        end_headers: bool,
        decoder: &mut HpackDecoder,
        limits: Limits,
        stop_when_acceptable: bool,
    ) -> Result<(), Violation> {
        let mut pending = std::mem::take(&mut self.tail);
        pending.extend_from_slice(fragment);
        let mut violation = None;
        let progress = decoder
            .decode_some(&pending, |field| {
                match self.field(field, limits, stop_when_acceptable) {
                    Ok(flow) => flow,
                    Err(error) => {
                        violation = Some(error);
                        ControlFlow::Break(())
                    }
                }
            })
            .map_err(|_| Violation::Protocol)?;
        if let Some(violation) = violation {
            return Err(violation);
        }
        if self.malformed && !end_headers && !progress.stopped {
            return Err(Violation::MalformedMidBlock);
        }
        pending.drain(..progress.consumed);
        self.tail = pending;
        Ok(())
    }

    fn field(
        &mut self,
        field: Field<'_>,
        limits: Limits,
        stop_when_acceptable: bool,
    ) -> Result<ControlFlow<()>, Violation> {
        let Field {
            name,
            value,
            never_indexed,
            indexed,
        } = field;
        // A table entry was checked when it was added (the static table's are all valid).
        if !indexed && h2_view::rejects(name, value) {
            return Err(Violation::Protocol);
        }
        let count = self.view.count(name, value);
        let mut forwarded = value;
        if name == b":authority" && matches!(count, Count::Size(_)) {
            if http::uri::Authority::try_from(value).is_ok() {
                self.authority = Authority::Acceptable;
                if stop_when_acceptable {
                    return Ok(ControlFlow::Break(()));
                }
            } else {
                self.authority = Authority::Replaced;
                forwarded = REPLACEMENT_AUTHORITY;
            }
        }
        match count {
            Count::Size(size) => {
                self.list_size += size;
                if self.list_size > limits.abuse() {
                    return Err(Violation::HeaderListWayTooLarge);
                }
                if self.list_size >= limits.header_list() {
                    self.over_size = true;
                }
                if !self.over_size {
                    encode_field(&mut self.encoded, name, forwarded, never_indexed);
                    self.forwarded_size += name.len() + forwarded.len() + 32;
                }
            }
            // h2 resets a malformed request whatever else it holds; one marker says so.
            Count::Malformed => self.malformed = true,
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The block re-encoded as HEADERS and CONTINUATION frames of at most the frame limit. A
    /// block over the header list limit carries the fields before the limit plus one filler
    /// field that takes h2 over it too, so h2 answers as it does to any oversized block (`431`
    /// and a stream reset). Malformed fields (h2 counts and keeps none of them) are replaced by
    /// one `connection` field, so h2 resets the stream as it would for the original.
    pub(crate) fn finish(mut self, limits: Limits) -> Result<Vec<u8>, Violation> {
        if !self.tail.is_empty() {
            return Err(Violation::Protocol);
        }
        if self.over_size {
            let room = limits
                .header_list()
                .saturating_sub(self.forwarded_size + 1 + 32);
            encode_field(&mut self.encoded, b"x", &vec![b'x'; room], false);
        }
        if self.malformed {
            encode_field(&mut self.encoded, b"connection", b"", false);
        }
        let max = limits.frame();
        let mut first = Vec::with_capacity(self.encoded.len().min(max) + 5);
        let mut flags = 0;
        if self.end_stream {
            flags |= END_STREAM;
        }
        if let Some(priority) = self.priority {
            first.extend_from_slice(&priority);
            flags |= PRIORITY;
        }
        let split = self.encoded.len().min(max - first.len());
        first.extend_from_slice(&self.encoded[..split]);
        let mut rest = &self.encoded[split..];
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let mut out = Vec::with_capacity(self.encoded.len() + 9 * (2 + rest.len() / max) + 5);
        put_frame(&mut out, HEADERS, flags, self.stream_id, &first);
        while !rest.is_empty() {
            let take = rest.len().min(max);
            let flags = if take == rest.len() { END_HEADERS } else { 0 };
            put_frame(&mut out, CONTINUATION, flags, self.stream_id, &rest[..take]);
            rest = &rest[take..];
        }
        Ok(out)
    }
}
