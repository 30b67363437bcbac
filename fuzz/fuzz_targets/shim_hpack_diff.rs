//! Differential: every header list the shim hands to h2 must equal what an independent HPACK
//! decoder (`loona-hpack`) decodes from the client's original blocks, except an `:authority`
//! that does not parse, which becomes `localhost`.
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
            (Ok(o), Ok(f)) => assert!(
                same_modulo_authority(o, f),
                "block {i}: original {o:?} forwarded {f:?}"
            ),
            (Ok(o), Err(e)) => {
                panic!("block {i}: forwarded block undecodable ({e}); original {o:?}")
            }
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
