//! The only encodings the shim writes: representations that never touch h2's dynamic table.

use super::static_table::static_index;

/// HPACK integer with a `prefix_bits`-bit prefix whose high bits are `first`.
pub(crate) fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Encodes one field without touching the dynamic table: fully indexed when the static table
/// holds the exact pair, otherwise a literal without indexing (or never indexed, when the client
/// sent it so), with an indexed name when the static table has the name. Strings are not
/// Huffman-coded.
pub(crate) fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let literal = if never_indexed { 0x10 } else { 0x00 };
    match static_index(name, value) {
        (Some(index), true) if !never_indexed => encode_integer(out, 0x80, 7, index),
        (Some(index), _) => {
            encode_integer(out, literal, 4, index);
            encode_integer(out, 0x00, 7, value.len());
            out.extend_from_slice(value);
        }
        (None, _) => {
            out.push(literal);
            encode_integer(out, 0x00, 7, name.len());
            out.extend_from_slice(name);
            encode_integer(out, 0x00, 7, value.len());
            out.extend_from_slice(value);
        }
    }
}
