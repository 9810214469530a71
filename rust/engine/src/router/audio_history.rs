//! The audio packets a down track sent last, so that a subscriber's NACK can be
//! answered with the very packet it missed.
//!
//! Audio has no RTX stream: libwebrtc (browsers, the SDKs) negotiates
//! `a=rtcp-fb:<opus> nack` without an `rtx` payload type for audio, and expects the
//! lost packet again on the original SSRC with its original sequence number (as
//! the reference server resends it). str0m only resends through RTX, so the engine
//! keeps its own short history for audio and writes the packet again itself.
use std::sync::Arc;
use std::time::Instant;

use str0m::media::Pt;
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};

use crate::shard::Incoming;

/// Packets kept per audio down track: 64 × 20 ms frames ≈ 1.3 s, longer than
/// libwebrtc's audio NACK window (its jitter buffer gives up on older packets).
pub const AUDIO_HISTORY_LEN: usize = 64;

/// One forwarded packet as it went out (output numbering).
#[derive(Debug, Clone)]
pub struct SentAudio {
    pub seq: u64,
    pub ts: u32,
    pub pt: Pt,
    pub marker: bool,
    /// When the packet arrived from the publisher (str0m's send-time reference).
    pub received: Instant,
    pub ext: ExtensionValues,
    /// Shared with the packet as received: keeping it costs no copy.
    pub payload: Arc<[u8]>,
}

impl SentAudio {
    /// Incoming `pkt`, as forwarded with these output numbers, extensions and payload.
    pub fn of(pt: Pt, seq: u64, ts: u32, pkt: &Incoming, ext: &ExtensionValues, payload: Arc<[u8]>) -> Self {
        Self {
            seq,
            ts,
            pt,
            marker: pkt.marker,
            received: pkt.received,
            ext: ext.clone(),
            payload,
        }
    }

    /// The packet written again: same sequence number, timestamp and payload.
    pub fn rewrite(&self) -> RtpWrite {
        RtpWrite::new(self.pt, SeqNo::from(self.seq), self.ts, self.received, self.payload.clone())
            .marker(self.marker)
            .ext_vals(self.ext.clone())
    }
}

/// A ring of the last [`AUDIO_HISTORY_LEN`] sent packets, indexed by sequence number.
#[derive(Debug, Default)]
pub struct AudioHistory {
    slots: Vec<Option<SentAudio>>,
    last_seq: Option<u64>,
}

impl AudioHistory {
    /// Remember a packet just written.
    pub fn push(&mut self, sent: SentAudio) {
        if self.slots.is_empty() {
            self.slots.resize_with(AUDIO_HISTORY_LEN, || None);
        }
        if self.last_seq.is_none_or(|last| sent.seq > last) {
            self.last_seq = Some(sent.seq);
        }
        let i = (sent.seq % AUDIO_HISTORY_LEN as u64) as usize;
        self.slots[i] = Some(sent);
    }

    /// The newest sequence number sent: NACKs carry 16-bit numbers, extended near it.
    pub fn last_seq(&self) -> Option<SeqNo> {
        self.last_seq.map(SeqNo::from)
    }

    /// The packet sent with extended sequence number `seq`, if still kept.
    pub fn get(&self, seq: u64) -> Option<&SentAudio> {
        let slot = self.slots.get((seq % AUDIO_HISTORY_LEN as u64) as usize)?;
        slot.as_ref().filter(|s| s.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64) -> SentAudio {
        SentAudio {
            seq,
            ts: seq as u32 * 960,
            pt: Pt::from(111),
            marker: false,
            received: Instant::now(),
            ext: ExtensionValues::default(),
            payload: vec![seq as u8; 10].into(),
        }
    }

    #[test]
    fn keeps_the_last_packets_and_forgets_older_ones() {
        let mut h = AudioHistory::default();
        assert!(h.get(0).is_none());
        for seq in 1000..1100 {
            h.push(sent(seq));
        }
        assert_eq!(h.last_seq(), Some(SeqNo::from(1099)));
        assert_eq!(h.get(1099).map(|s| s.payload[0]), Some(1099u64 as u8));
        assert!(h.get(1099 - AUDIO_HISTORY_LEN as u64 + 1).is_some());
        assert!(h.get(1099 - AUDIO_HISTORY_LEN as u64).is_none(), "overwritten");
        assert!(h.get(1100).is_none(), "never sent");
        // A late (reordered) packet does not move the newest number back.
        h.push(sent(1090));
        assert_eq!(h.last_seq(), Some(SeqNo::from(1099)));
    }
}
