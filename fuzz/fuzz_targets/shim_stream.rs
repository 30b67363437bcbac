//! Arbitrary client byte streams through the `:authority` shim, split into reads of a size the
//! input chooses, under limits the input chooses, in both rewrite modes. The shim must not
//! panic, must hold no more than its bounds allow, and a connection it passes through must
//! reach h2 byte for byte.
#![no_main]

use authority_shim::Rewrite;
use kms_fuzz::{limits_from, run_shim};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, c, flags, stream @ ..] = data else {
        return;
    };
    let limits = limits_from(*a, *b);
    let chunk = usize::from(*c) * 64 + 1;
    let rewrite = if flags & 1 == 0 {
        Rewrite::WhenNeeded
    } else {
        Rewrite::EveryBlock
    };
    let run = run_shim(stream, chunk, limits, rewrite);
    if run.passed_through {
        assert_eq!(
            run.output, stream,
            "a passed-through connection reaches h2 unchanged"
        );
    }
    // One frame being assembled, one read chunk, and the re-encoded block: nothing grows
    // with the stream.
    let frame = limits.max_frame_size() as usize + 9;
    let bound = 4 * frame + 4 * limits.max_header_list_size() as usize + 64 * 1024;
    assert!(
        run.peak_buffered <= bound,
        "shim held {} bytes (bound {bound})",
        run.peak_buffered
    );
});
