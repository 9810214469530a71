//! RFC 2198 redundant audio (`audio/red`): Chromium and livekit-client publish Opus
//! wrapped in RED, each packet carrying the previous frame again. Subscribers that
//! negotiated RED get the packets as they are; to the others the engine forwards
//! only the primary (newest) block, plain Opus, as the reference's
//! redprimaryreceiver does; when a packet was lost on the way in, the next one's
//! redundant blocks give it back to them (`Received`, `recover`), as the reference
//! recovers it too. Subscribers with RED recover it themselves.
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

/// How far back the redundancy can reach that `Received` remembers.
pub const HISTORY: u64 = 8;

/// Which of a RED track's last packets arrived (by extended sequence number), so
/// that a lost one can be recovered from the redundancy of a later one.
#[derive(Debug, Default)]
pub struct Received {
    newest: Option<u64>,
    /// Bit k-1: packet `newest - k` arrived (k = 1..=8).
    before: u8,
}

impl Received {
    /// Note packet `seq`. Returns the packets before it that never arrived, as bit
    /// k-1 for packet `seq - k`: those its redundant blocks may give back. A packet
    /// older than the newest (reordered, or a copy) only counts as arrived: the
    /// newer packet's recovery has already run.
    pub fn note(&mut self, seq: u64) -> u8 {
        let Some(newest) = self.newest else {
            // Nothing before the first packet is ours to recover.
            self.newest = Some(seq);
            self.before = u8::MAX;
            return 0;
        };
        if seq <= newest {
            let back = newest - seq;
            if (1..=HISTORY).contains(&back) {
                self.before |= 1 << (back - 1);
            }
            return 0;
        }
        let ahead = seq - newest;
        self.newest = Some(seq);
        self.before = if ahead > HISTORY {
            0
        } else {
            // Shift the window by `ahead`: the old newest is packet `seq - ahead`.
            let shifted = u16::from(self.before) << ahead;
            (shifted | 1 << (ahead - 1)) as u8
        };
        !self.before
    }
}

/// One lost packet given back by a later packet's redundant block.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    /// How many packets before the carrying one it was.
    pub back: u64,
    /// Its RTP timestamp's distance back from the carrying packet's.
    pub timestamp_offset: u32,
    /// The block's payload type (the publisher's Opus).
    pub pt: u8,
    pub payload: Arc<[u8]>,
}

/// The redundant blocks of a RED payload that carry the packets `missing` names
/// (as `Received::note` returns it), oldest first. Blocks are taken to be the
/// packets right before the carrying one, the last block the closest, as the
/// encoders (libwebrtc's, and the reference's reading) lay them out. Empty for a
/// malformed payload.
pub fn recover(payload: &[u8], missing: u8) -> Vec<Recovered> {
    if missing == 0 {
        return Vec::new();
    }
    let Ok(blocks) = RedDecoder::decode(payload) else { return Vec::new() };
    let redundant: Vec<_> = blocks.iter().filter(|b| !b.is_primary).collect();
    let count = redundant.len() as u64;
    redundant
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let back = count - i as u64;
            let lost = back <= HISTORY && missing & (1 << (back - 1)) != 0;
            (lost && !b.payload.is_empty() && b.timestamp_offset > 0).then(|| Recovered {
                back,
                timestamp_offset: b.timestamp_offset,
                pt: b.pt,
                payload: Arc::from(b.payload),
            })
        })
        .collect()
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

    #[test]
    fn received_names_the_packets_that_never_arrived() {
        let mut r = Received::default();
        assert_eq!(r.note(100), 0, "nothing before the first packet");
        assert_eq!(r.note(101), 0, "in order: nothing missing");
        // 102 and 103 lost: 104's redundancy may carry them (distances 1 and 2).
        assert_eq!(r.note(104) & 0b11, 0b11);
        assert_eq!(r.note(104), 0, "a copy");
        assert_eq!(r.note(103), 0, "late: counted, nothing to recover");
        assert_eq!(r.note(105) & 0b111, 0b100, "only 102 (distance 3) is still missing");
        // A jump past the history: everything the redundancy can reach is missing.
        assert_eq!(r.note(200), u8::MAX);
    }

    #[test]
    fn recover_gives_back_the_blocks_of_lost_packets_oldest_first() {
        let block = |n: u8| RedundantBlock { pt: 111, timestamp_offset: 960 * u32::from(n), payload: vec![n; 3] };
        // Packet S carries S-2 (offset 1920) and S-1 (offset 960).
        let red = RedEncoder::encode(111, b"primary", &[block(2), block(1)]);
        let got = recover(&red, 0b11);
        let want = [(2, 1920, vec![2u8; 3]), (1, 960, vec![1u8; 3])];
        assert_eq!(got.len(), 2);
        for (g, (back, off, payload)) in got.iter().zip(want) {
            assert_eq!((g.back, g.timestamp_offset, g.pt, &g.payload[..]), (back, off, 111, &payload[..]));
        }
        assert_eq!(recover(&red, 0b10).iter().map(|r| r.back).collect::<Vec<_>>(), [2]);
        assert!(recover(&red, 0).is_empty(), "nothing lost");
        assert!(recover(&[0x80 | 111, 0, 4], 0b1).is_empty(), "malformed");
        assert!(recover(&RedEncoder::encode(111, b"p", &[]), 0b1).is_empty(), "no redundancy");
    }
}
