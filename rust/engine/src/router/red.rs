//! RFC 2198 redundant audio (`audio/red`): Chromium and livekit-client publish Opus
//! wrapped in RED, each packet carrying the previous frame again. Subscribers that
//! negotiated RED get the packets as they are; to the others the engine forwards
//! only the primary (newest) block, plain Opus, as the reference's
//! redprimaryreceiver does.
use std::sync::Arc;

use str0m::rtp::RedDecoder;

/// The primary block of a RED payload, or None when the payload is malformed (it
/// comes from a remote peer) or carries no primary audio.
pub fn primary(payload: &[u8]) -> Option<&[u8]> {
    let blocks = RedDecoder::decode(payload).ok()?;
    blocks.into_iter().find(|b| b.is_primary).map(|b| b.payload).filter(|p| !p.is_empty())
}

/// `primary`, computed at most once per incoming packet however many subscribers
/// need it.
#[derive(Default)]
pub struct Primary(Option<Option<Arc<[u8]>>>);

impl Primary {
    pub fn of(&mut self, payload: &[u8]) -> Option<Arc<[u8]>> {
        self.0.get_or_insert_with(|| primary(payload).map(Arc::from)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::rtp::{RedEncoder, RedundantBlock};

    #[test]
    fn the_primary_block_is_the_newest_frame() {
        let red = RedEncoder::encode(
            111,
            b"frame 2",
            &[RedundantBlock { pt: 111, timestamp_offset: 960, payload: b"frame 1".to_vec() }],
        );
        assert_eq!(primary(&red), Some(&b"frame 2"[..]));
        // No redundancy yet (the first packet): one primary header byte.
        assert_eq!(primary(&[111, 1, 2, 3]), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn malformed_or_empty_payloads_have_no_primary() {
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[111]), None, "an empty primary (DTX) carries no audio");
        // A redundant header announcing more bytes than there are.
        assert_eq!(primary(&[0x80 | 111, 0, 4, 200, 111, 1]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 4]), None);
    }
}
