//! The bounds the shim enforces. They are the numbers the h2 server behind it advertises, so the
//! shim never holds or decodes more than h2 itself would.

/// h2's and hyper's default SETTINGS_MAX_HEADER_LIST_SIZE for servers: 16 KiB.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which hyper servers advertise unchanged.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Smallest header list limit accepted (a gRPC request needs a few hundred bytes).
pub(crate) const MIN_HEADER_LIST_SIZE: u32 = 4 * 1024;
/// Largest header list limit accepted (the shim's answers to h2 must fit one frame).
pub(crate) const MAX_HEADER_LIST_SIZE: u32 = 1024 * 1024;
/// h2 drops a connection whose decoded header list exceeds this many times the limit.
const ABUSE_MULTIPLIER: usize = 4;
/// The HPACK dynamic table size h2 servers grant clients (SETTINGS_HEADER_TABLE_SIZE unchanged).
pub(crate) const CLIENT_TABLE_SIZE: usize = 4096;

/// Why a [`Limits`] value was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// The header list limit is outside what the shim supports.
    #[error(
        "max header list size {0} is outside {MIN_HEADER_LIST_SIZE}..={MAX_HEADER_LIST_SIZE} bytes"
    )]
    HeaderListSize(u32),
    /// The frame size is outside what HTTP/2 allows (RFC 9113 §6.5.2).
    #[error("max frame size {0} is outside 16384..=16777215 bytes")]
    FrameSize(u32),
}

/// The header list and frame size limits of the server behind the shim. The server must be
/// configured with the same values (for tonic: `http2_max_header_list_size` and
/// `max_frame_size`); the defaults are h2's and hyper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    max_header_list_size: u32,
    max_frame_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Limits {
    /// h2's defaults: a 16 KiB header list, 16 KiB frames.
    pub const DEFAULT: Limits = Limits {
        max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
        max_frame_size: DEFAULT_MAX_FRAME_SIZE,
    };

    /// Limits with a header list cap of `max_header_list_size` bytes (name + value + 32 per
    /// field, RFC 7541) and frames of at most `max_frame_size` bytes.
    pub fn new(max_header_list_size: u32, max_frame_size: u32) -> Result<Self, LimitsError> {
        if !(MIN_HEADER_LIST_SIZE..=MAX_HEADER_LIST_SIZE).contains(&max_header_list_size) {
            return Err(LimitsError::HeaderListSize(max_header_list_size));
        }
        if !(16_384..=16_777_215).contains(&max_frame_size) {
            return Err(LimitsError::FrameSize(max_frame_size));
        }
        Ok(Self {
            max_header_list_size,
            max_frame_size,
        })
    }

    /// The header list cap, to advertise as SETTINGS_MAX_HEADER_LIST_SIZE.
    pub fn max_header_list_size(self) -> u32 {
        self.max_header_list_size
    }

    /// The frame size cap, to advertise as SETTINGS_MAX_FRAME_SIZE.
    pub fn max_frame_size(self) -> u32 {
        self.max_frame_size
    }

    pub(crate) fn header_list(self) -> usize {
        self.max_header_list_size as usize
    }

    pub(crate) fn frame(self) -> usize {
        self.max_frame_size as usize
    }

    /// Decoded header list size beyond which h2 drops the connection.
    pub(crate) fn abuse(self) -> usize {
        self.header_list() * ABUSE_MULTIPLIER
    }

    /// How many CONTINUATION frames without END_HEADERS h2 accepts in one block: enough for a
    /// full header list plus a quarter, at least five (h2 `calc_max_continuation_frames`).
    pub(crate) fn continuation_frames(self) -> usize {
        let needed = (self.header_list() / self.frame()).max(1);
        needed.saturating_add(needed >> 2).max(5)
    }
}

/// Which connections have their header blocks decoded and re-encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rewrite {
    /// Decide on the first header block: when its `:authority` parses (or it has none), hand
    /// the connection to h2 untouched from then on; otherwise rewrite every block.
    #[default]
    WhenNeeded,
    /// Decode and re-encode every block of every connection (for measuring that path).
    EveryBlock,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_allowance_follows_h2() {
        assert_eq!(Limits::DEFAULT.continuation_frames(), 5);
        let wide = Limits::new(1024 * 1024, 16_384).expect("limits");
        assert_eq!(wide.continuation_frames(), 80);
        assert_eq!(
            Limits::new(100, 16_384),
            Err(LimitsError::HeaderListSize(100))
        );
        assert_eq!(Limits::new(16_384, 1000), Err(LimitsError::FrameSize(1000)));
    }
}
