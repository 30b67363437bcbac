//! HPACK (RFC 7541) header block decoding with the connection's dynamic table.
//!
//! Only decoding is needed here: [`super::authority`] re-encodes what it forwards. Huffman
//! strings are decoded with a canonical-code table built once, so a header costs no allocation
//! beyond its decoded bytes.

use std::collections::VecDeque;
use std::sync::LazyLock;

/// Why a header block could not be decoded. Any of these is a connection error in HTTP/2.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
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

/// The static table of RFC 7541 Appendix A (index 1 first).
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code length in bits of each symbol (0..=255 and EOS = 256) of the canonical Huffman code of
/// RFC 7541 Appendix B. Codes are assigned in order of (length, symbol).
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The static table index for a header: `(Some(i), true)` when entry `i` is exactly
/// `name: value`, `(Some(i), false)` when only the name matches, `(None, false)` otherwise.
pub fn static_index(name: &[u8], value: &[u8]) -> (Option<usize>, bool) {
    let mut name_match = None;
    for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
        if n.len() == name.len() && n.as_bytes() == name {
            if v.as_bytes() == value {
                return (Some(i + 1), true);
            }
            name_match.get_or_insert(i + 1);
        }
    }
    (name_match, false)
}

const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// Canonical decoding tables: for each length, the first code and where its symbols start.
struct Canonical {
    first_code: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    offset: [usize; MAX_CODE_LEN + 1],
    symbols: Vec<u16>,
}

static CANONICAL: LazyLock<Canonical> = LazyLock::new(|| {
    let mut symbols: Vec<u16> = (0..=EOS).collect();
    symbols.sort_by_key(|&s| (HUFFMAN_CODE_LENGTHS[usize::from(s)], s));
    let mut count = [0u32; MAX_CODE_LEN + 1];
    for &len in &HUFFMAN_CODE_LENGTHS {
        count[usize::from(len)] += 1;
    }
    let mut first_code = [0u32; MAX_CODE_LEN + 1];
    let mut offset = [0usize; MAX_CODE_LEN + 1];
    let (mut code, mut index) = (0u32, 0usize);
    for len in 1..=MAX_CODE_LEN {
        code = (code + count[len - 1]) << 1;
        first_code[len] = code;
        offset[len] = index;
        index += count[len] as usize;
    }
    Canonical {
        first_code,
        count,
        offset,
        symbols,
    }
});

/// Decodes a Huffman-coded string into `out`.
pub fn huffman_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &*CANONICAL;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_CODE_LEN {
                return Err(HpackError::BadHuffman);
            }
            let position = code.wrapping_sub(table.first_code[len]);
            if position < table.count[len] {
                let symbol = table.symbols[table.offset[len] + position as usize];
                if symbol == EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(())
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

/// Reads a string literal (raw or Huffman) into `out`; returns the bytes consumed.
fn read_string(input: &[u8], out: &mut Vec<u8>) -> Result<usize, HpackError> {
    let huffman = input.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = read_integer(input, 7)?;
    let body = input.get(used..used + len).ok_or(HpackError::Truncated)?;
    if huffman {
        huffman_decode(body, out)?;
    } else {
        out.extend_from_slice(body);
    }
    Ok(used + len)
}

/// The decoding side of one connection's HPACK state.
pub struct HpackDecoder {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    allowed_max: usize,
}

impl HpackDecoder {
    /// A decoder whose peer may grow the dynamic table up to `allowed_max` bytes.
    pub fn new(allowed_max: usize) -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: allowed_max,
            allowed_max,
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

    /// Decodes one complete header block, calling `emit(name, value)` for each header in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut rest = block;
        let mut seen_header = false;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                let (index, used) = read_integer(rest, 7)?;
                let (name, value) = self.entry(index)?;
                emit(name, value);
                rest = &rest[used..];
                seen_header = true;
            } else if first & 0xe0 == 0x20 {
                let (size, used) = read_integer(rest, 5)?;
                if seen_header || size > self.allowed_max {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict_to(size);
                rest = &rest[used..];
            } else {
                let (indexing, prefix) = if first & 0xc0 == 0x40 {
                    (true, 6)
                } else {
                    (false, 4)
                };
                let (name_index, mut used) = read_integer(rest, prefix)?;
                let mut name = Vec::new();
                if name_index == 0 {
                    used += read_string(&rest[used..], &mut name)?;
                } else {
                    name.extend_from_slice(self.entry(name_index)?.0);
                }
                let mut value = Vec::new();
                used += read_string(&rest[used..], &mut value)?;
                emit(&name, &value);
                if indexing {
                    self.insert(name, value);
                }
                rest = &rest[used..];
                seen_header = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own canonical encoder, only to produce test input.
    fn huffman_encode(input: &[u8]) -> Vec<u8> {
        let table = &*CANONICAL;
        let mut codes = [(0u32, 0u8); 257];
        for len in 1..=MAX_CODE_LEN {
            for i in 0..table.count[len] {
                let symbol = table.symbols[table.offset[len] + i as usize];
                codes[usize::from(symbol)] = (table.first_code[len] + i, len as u8);
            }
        }
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &byte in input {
            let (code, len) = codes[usize::from(byte)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    #[test]
    fn rfc7541_c4_huffman_examples() {
        let mut out = Vec::new();
        huffman_decode(
            &hex::decode("f1e3c2e5f23a6ba0ab90f4ff").expect("hex"),
            &mut out,
        )
        .expect("decode");
        assert_eq!(out, b"www.example.com");
        out.clear();
        huffman_decode(&hex::decode("a8eb10649cbf").expect("hex"), &mut out).expect("decode");
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn huffman_agrees_with_an_independent_decoder_on_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        for chunk in all
            .chunks(7)
            .chain([&b"/var/run/kms-plugin/kms.sock"[..], b""])
        {
            let encoded = huffman_encode(chunk);
            let mut ours = Vec::new();
            huffman_decode(&encoded, &mut ours).expect("ours");
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&encoded)
                .expect("loona");
            assert_eq!(ours, chunk);
            assert_eq!(theirs, chunk);
        }
    }

    #[test]
    fn bad_huffman_is_rejected() {
        let mut out = Vec::new();
        // Thirty 1-bits form EOS.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HpackError::BadHuffman)
        );
        // Padding with a zero bit.
        assert_eq!(
            huffman_decode(&[0x00], &mut out),
            Err(HpackError::BadHuffman)
        );
    }

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
}
