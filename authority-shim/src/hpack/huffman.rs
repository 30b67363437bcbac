//! Decoding of HPACK Huffman strings (RFC 7541 Appendix B) with a canonical-code table built
//! once, so a string costs no allocation beyond its decoded bytes.

use super::HpackError;
use std::sync::LazyLock;

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

const EOS: u16 = 256;
pub(super) const MAX_CODE_LEN: usize = 30;

/// Canonical decoding tables: for each length, the first code and where its symbols start.
pub(super) struct Canonical {
    pub(super) first_code: [u32; MAX_CODE_LEN + 1],
    pub(super) count: [u32; MAX_CODE_LEN + 1],
    pub(super) offset: [usize; MAX_CODE_LEN + 1],
    pub(super) symbols: Vec<u16>,
}

pub(super) static CANONICAL: LazyLock<Canonical> = LazyLock::new(|| {
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
pub(crate) fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Our own canonical encoder, only to produce test input.
    pub(crate) fn huffman_encode(input: &[u8]) -> Vec<u8> {
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
        decode(
            &hex::decode("f1e3c2e5f23a6ba0ab90f4ff").expect("hex"),
            &mut out,
        )
        .expect("decode");
        assert_eq!(out, b"www.example.com");
        out.clear();
        decode(&hex::decode("a8eb10649cbf").expect("hex"), &mut out).expect("decode");
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
            decode(&encoded, &mut ours).expect("ours");
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
            decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HpackError::BadHuffman)
        );
        // Padding with a zero bit.
        assert_eq!(decode(&[0x00], &mut out), Err(HpackError::BadHuffman));
    }
}
