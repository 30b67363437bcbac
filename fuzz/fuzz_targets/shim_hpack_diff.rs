//! Differential: every header list the shim hands to h2 must equal what an independent HPACK
//! decoder (`loona-hpack`) decodes from the client's original blocks, except an `:authority`
//! that does not parse, which becomes `localhost`. A request h2 would reset as malformed may
//! instead reach h2 as the shim's marker (a trailing `connection` field, which h2 also resets):
//! then the original must be malformed by this target's own reading of RFC 9113 §8.2–8.3.
#![no_main]

use authority_shim::{Limits, REPLACEMENT_AUTHORITY, Rewrite};
use kms_fuzz::{header_blocks, run_shim};
use libfuzzer_sys::fuzz_target;

type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_all(blocks: &[Vec<u8>]) -> Vec<Result<HeaderList, String>> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut out = Vec::new();
    for block in blocks {
        match decoder.decode(block) {
            Ok(list) => out.push(Ok(list)),
            Err(e) => {
                // The decoder's state is undefined after an error: stop here.
                out.push(Err(format!("{e:?}")));
                break;
            }
        }
    }
    out
}

fn same_modulo_authority(original: &HeaderList, forwarded: &HeaderList) -> bool {
    original.len() == forwarded.len()
        && original.iter().zip(forwarded).all(|((n, v), (fn_, fv))| {
            n == fn_
                && (v == fv
                    || (n.as_slice() == b":authority"
                        && fv.as_slice() == REPLACEMENT_AUTHORITY
                        && http::uri::Authority::try_from(v.as_slice()).is_err()))
        })
}

/// Whether h2 resets this request as malformed: a pseudo-header after a regular field, an
/// unknown or repeated pseudo-header, or a connection-specific field (RFC 9113 §8.2.2, §8.3).
fn h2_resets(list: &HeaderList) -> bool {
    const PSEUDO: [&[u8]; 6] = [
        b":authority",
        b":method",
        b":scheme",
        b":path",
        b":protocol",
        b":status",
    ];
    const CONNECTION: [&[u8]; 5] = [
        b"connection",
        b"transfer-encoding",
        b"upgrade",
        b"keep-alive",
        b"proxy-connection",
    ];
    let mut regular_seen = false;
    let mut pseudo_seen: Vec<&[u8]> = Vec::new();
    for (name, value) in list {
        let name = name.as_slice();
        if name.starts_with(b":") {
            if regular_seen || !PSEUDO.contains(&name) || pseudo_seen.contains(&name) {
                return true;
            }
            pseudo_seen.push(name);
        } else {
            regular_seen = true;
            if CONNECTION.contains(&name) || (name == b"te" && value.as_slice() != b"trailers") {
                return true;
            }
        }
    }
    false
}

/// The shim's stand-in for a malformed request: its list ends in an empty `connection` field.
fn is_marker(list: &HeaderList) -> bool {
    list.last()
        .is_some_and(|(n, v)| n.as_slice() == b"connection" && v.is_empty())
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, stream)) = data.split_first() else {
        return;
    };
    let run = run_shim(
        stream,
        usize::from(c) * 16 + 1,
        Limits::DEFAULT,
        Rewrite::EveryBlock,
    );
    if run.refused {
        // The output ends in the refusal h2 is made to answer; nothing to compare.
        return;
    }
    let (Some(original), Some(forwarded)) = (header_blocks(stream), header_blocks(&run.output))
    else {
        return;
    };
    let original = decode_all(&original);
    let forwarded = decode_all(&forwarded);
    for (i, (o, f)) in original.iter().zip(&forwarded).enumerate() {
        match (o, f) {
            (Ok(o), Ok(f)) if is_marker(f) && !same_modulo_authority(o, f) => assert!(
                h2_resets(o),
                "block {i}: a request h2 accepts became the malformed marker: original {o:?}"
            ),
            (Ok(o), Ok(f)) => assert!(
                same_modulo_authority(o, f),
                "block {i}: original {o:?} forwarded {f:?}"
            ),
            (Ok(o), Err(e)) => {
                panic!("block {i}: forwarded block undecodable ({e}); original {o:?}")
            }
            // loona-hpack refuses a block that ends in a table size update; h2 takes it as an
            // empty header list (and resets the request for its missing pseudo-headers).
            (Err(e), Ok(f)) if e.contains("SizeUpdateAtEnd") && f.is_empty() => break,
            (Err(e), Ok(f)) => panic!("block {i}: original undecodable ({e}) yet forwarded {f:?}"),
            (Err(_), Err(_)) => break,
        }
    }
    if original.iter().all(Result::is_ok) {
        assert_eq!(
            original.len(),
            forwarded.len(),
            "every complete block is forwarded"
        );
    }
});
