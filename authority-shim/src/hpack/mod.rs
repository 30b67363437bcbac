//! HPACK (RFC 7541) header block decoding with the connection's dynamic table, one frame's
//! fragment at a time, plus the few encodings the shim writes.
//!
//! [`HpackDecoder::decode_some`] decodes the complete representations at the front of its input
//! and leaves an incomplete one for the next fragment, as h2 does, so a block never has to be
//! held whole before its size is known.

mod encode;
mod huffman;
mod static_table;

pub(crate) use encode::{encode_field, encode_integer};

use static_table::STATIC_TABLE;
use std::collections::VecDeque;
use std::ops::ControlFlow;

/// Why a header block could not be decoded. Any of these is a connection error in HTTP/2.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HpackError {
    /// The block ended inside a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer does not fit the bounds HPACK allows here.
    #[error("integer overflow")]
    IntegerOverflow,
    /// An index names no static or dynamic table entry.
    #[error("header index {0} out of range")]
    BadIndex(usize),
    /// A Huffman string is malformed (EOS inside, bad padding).
    #[error("invalid Huffman string")]
    BadHuffman,
    /// A dynamic table size update exceeds what the server granted, or comes after a header.
    #[error("invalid dynamic table size update")]
    BadSizeUpdate,
}

/// One decoded header field.
pub(crate) struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Sent as "never indexed"; an intermediary must forward it the same way (RFC 7541 §6.2.3).
    pub never_indexed: bool,
    /// A reference to a table entry, already seen (and checked) when it was added.
    pub indexed: bool,
}

/// How far one call of [`HpackDecoder::decode_some`] got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of complete representations consumed.
    pub consumed: usize,
    /// The callback asked to stop.
    pub stopped: bool,
}

/// Reads an HPACK integer with an `prefix_bits`-bit prefix; returns it and the bytes consumed.
fn read_integer(input: &[u8], prefix_bits: u32) -> Result<(usize, usize), HpackError> {
    let first = *input.first().ok_or(HpackError::Truncated)?;
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &byte) in input.iter().enumerate().skip(1) {
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    Err(HpackError::Truncated)
}

/// Reads a string literal (raw or Huffman) into `out`; returns the bytes consumed. The length is
/// checked against the input before anything is decoded.
fn read_string(input: &[u8], out: &mut Vec<u8>) -> Result<usize, HpackError> {
    let huffman = input.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = read_integer(input, 7)?;
    let body = input.get(used..used + len).ok_or(HpackError::Truncated)?;
    out.clear();
    if huffman {
        huffman::decode(body, out)?;
    } else {
        out.extend_from_slice(body);
    }
    Ok(used + len)
}

/// The decoding side of one connection's HPACK state.
pub(crate) struct HpackDecoder {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    allowed_max: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl HpackDecoder {
    /// A decoder whose peer may grow the dynamic table up to `allowed_max` bytes.
    pub(crate) fn new(allowed_max: usize) -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: allowed_max,
            allowed_max,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        self.dynamic
            .get(index - 1 - STATIC_TABLE.len())
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .ok_or(HpackError::BadIndex(index))
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.dynamic.pop_back() {
                Some((name, value)) => self.size -= name.len() + value.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.dynamic.push_front((name, value));
    }

    /// Decodes the complete representations at the front of `input` (one frame's share of a
    /// header block, after what earlier fragments left over), calling `emit` for each field in
    /// order until it breaks. An incomplete representation at the end is left unconsumed. As in
    /// h2, a dynamic table size update is accepted before the first field of each call.
    pub(crate) fn decode_some(
        &mut self,
        input: &[u8],
        mut emit: impl FnMut(Field<'_>) -> ControlFlow<()>,
    ) -> Result<Progress, HpackError> {
        let mut consumed = 0;
        let mut seen_header = false;
        while consumed < input.len() {
            let rest = &input[consumed..];
            let step = match self.representation(rest, &mut seen_header, &mut emit) {
                Ok(step) => step,
                Err(HpackError::Truncated) => break,
                Err(error) => return Err(error),
            };
            consumed += step.0;
            if step.1.is_break() {
                return Ok(Progress {
                    consumed,
                    stopped: true,
                });
            }
        }
        Ok(Progress {
            consumed,
            stopped: false,
        })
    }

    /// Decodes the representation at the start of `rest`; returns its length and what `emit` said.
    fn representation(
        &mut self,
        rest: &[u8],
        seen_header: &mut bool,
        emit: &mut impl FnMut(Field<'_>) -> ControlFlow<()>,
    ) -> Result<(usize, ControlFlow<()>), HpackError> {
        let first = rest[0];
        if first & 0x80 != 0 {
            let (index, used) = read_integer(rest, 7)?;
            let (name, value) = self.entry(index)?;
            *seen_header = true;
            let flow = emit(Field {
                name,
                value,
                never_indexed: false,
                indexed: true,
            });
            return Ok((used, flow));
        }
        if first & 0xe0 == 0x20 {
            let (size, used) = read_integer(rest, 5)?;
            if *seen_header || size > self.allowed_max {
                return Err(HpackError::BadSizeUpdate);
            }
            self.max_size = size;
            self.evict_to(size);
            return Ok((used, ControlFlow::Continue(())));
        }
        let (indexing, prefix) = if first & 0xc0 == 0x40 {
            (true, 6)
        } else {
            (false, 4)
        };
        let never_indexed = first & 0xf0 == 0x10;
        let (name_index, mut used) = read_integer(rest, prefix)?;
        let mut name = std::mem::take(&mut self.name);
        let mut value = std::mem::take(&mut self.value);
        let decoded = (|| {
            if name_index == 0 {
                used += read_string(&rest[used..], &mut name)?;
            } else {
                name.clear();
                name.extend_from_slice(self.entry(name_index)?.0);
            }
            used += read_string(&rest[used..], &mut value)?;
            Ok(())
        })();
        let flow = decoded.map(|()| {
            *seen_header = true;
            let flow = emit(Field {
                name: &name,
                value: &value,
                never_indexed,
                indexed: false,
            });
            if indexing {
                self.insert(name.clone(), value.clone());
            }
            flow
        });
        self.name = name;
        self.value = value;
        Ok((used, flow?))
    }

    /// Decodes one complete header block (tests and simple callers).
    #[cfg(test)]
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let progress = self.decode_some(block, |field| {
            emit(field.name, field.value);
            ControlFlow::Continue(())
        })?;
        if progress.consumed < block.len() {
            return Err(HpackError::Truncated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_matches_an_independent_decoder() {
        let mut reference = loona_hpack::Decoder::new();
        let mut ours = HpackDecoder::new(4096);
        for index in 1..=61u8 {
            let block = [0x80 | index];
            let expected = reference.decode(&block).expect("loona");
            let mut got = Vec::new();
            ours.decode(&block, |n, v| got.push((n.to_vec(), v.to_vec())))
                .expect("ours");
            assert_eq!(got, expected, "static index {index}");
        }
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        let mut decoder = HpackDecoder::new(4096);
        let blocks = [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        ];
        let mut last = Vec::new();
        for block in blocks {
            last.clear();
            decoder
                .decode(&hex::decode(block).expect("hex"), |n, v| {
                    last.push((
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ))
                })
                .expect("decode");
        }
        let expected = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(last, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
        assert_eq!(decoder.size, 164, "table size after C.3.3");
    }

    #[test]
    fn eviction_and_size_updates() {
        let mut decoder = HpackDecoder::new(4096);
        // A size update to 60 bytes, then an entry of 32 + 10 + 15 = 57 bytes.
        let mut block = vec![0x3f, 0x1d]; // 31 + 29 = 60
        block.extend(hex::decode("410f7777772e6578616d706c652e636f6d").expect("hex"));
        decoder.decode(&block, |_, _| {}).expect("decode");
        assert_eq!(decoder.dynamic.len(), 1);
        // A second entry evicts the first.
        decoder
            .decode(
                &hex::decode("410f7777772e6578616d706c652e636f6e").expect("hex"),
                |_, _| {},
            )
            .expect("decode");
        assert_eq!(decoder.dynamic.len(), 1);
        assert_eq!(decoder.dynamic[0].1, b"www.example.con");
        // Beyond what the server granted, or after a header: rejected.
        assert_eq!(
            decoder.decode(&[0x3f, 0xe2, 0x1f], |_, _| {}),
            Err(HpackError::BadSizeUpdate)
        );
        assert_eq!(
            decoder.decode(&[0x82, 0x20], |_, _| {}),
            Err(HpackError::BadSizeUpdate)
        );
        assert_eq!(
            decoder.decode(&[0x80 | 70], |_, _| {}),
            Err(HpackError::BadIndex(70))
        );
        assert_eq!(
            decoder.decode(&[0x41, 0x05, b'a'], |_, _| {}),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decoder.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], |_, _| {}),
            Err(HpackError::IntegerOverflow)
        );
    }

    #[test]
    fn fragments_decode_like_the_whole_block() {
        let block = hex::decode("828684410f7777772e6578616d706c652e636f6d").expect("hex");
        let mut whole = Vec::new();
        HpackDecoder::new(4096)
            .decode(&block, |n, v| whole.push((n.to_vec(), v.to_vec())))
            .expect("whole");
        for split in 0..block.len() {
            let mut decoder = HpackDecoder::new(4096);
            let mut got = Vec::new();
            let mut collect = |field: Field<'_>| {
                got.push((field.name.to_vec(), field.value.to_vec()));
                ControlFlow::Continue(())
            };
            let first = decoder
                .decode_some(&block[..split], &mut collect)
                .expect("first");
            let mut tail = block[first.consumed..split].to_vec();
            tail.extend_from_slice(&block[split..]);
            let second = decoder.decode_some(&tail, &mut collect).expect("second");
            assert_eq!(second.consumed, tail.len(), "split at {split}");
            assert_eq!(got, whole, "split at {split}");
        }
    }
}
