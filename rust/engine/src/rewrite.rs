//! Per-subscriber sequence number and timestamp rewriting.
//!
//! A subscriber sees one continuous RTP stream per track no matter which
//! simulcast layer (or which restart of the source after mute, unsubscribe or a
//! publisher SSRC change) feeds it: each switch rebases the mapping so the output
//! continues from the last packet sent.
//!
//! VP8 numbers its frames in the payload descriptor too (PictureID, TL0PICIDX,
//! KEYIDX), independently per simulcast layer; [`Vp8Rewriter`] keeps that
//! numbering continuous as well, or libwebrtc's frame buffer may take a new
//! layer's frames for old ones and drop them.
use std::time::Instant;

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// Output sequence numbers start below this so the SRTP rollover counter starts at
/// zero (str0m warns about non-zero initial ROC).
const INITIAL_SEQ_MAX: u64 = 16_384;

/// Rewrites (extended seq, RTP timestamp) from one source onto a continuous output.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    /// Invariant once `started`: every emitted seq is `<= last_seq`.
    last_seq: u64,
    last_ts: u32,
    last_at: Option<Instant>,
    seq_offset: u64,
    ts_offset: u32,
    /// Source packets older than the switch point belong to the previous mapping.
    base_in_seq: u64,
    started: bool,
}

impl Rewriter {
    /// A rewriter for a stream with the given RTP clock rate; `seed` randomises the
    /// initial output seq/ts.
    pub fn new(clock_rate: u32, seed: u64) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            last_seq: seed % INITIAL_SEQ_MAX,
            last_ts: (seed >> 16) as u32,
            last_at: None,
            seq_offset: 0,
            ts_offset: 0,
            base_in_seq: 0,
            started: false,
        }
    }

    /// Rebase on a new source starting with this packet.
    pub fn switch(&mut self, in_seq: u64, in_ts: u32, now: Instant) {
        let (out_seq, out_ts) = match self.last_at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_secs_f64() * self.clock_rate as f64) as u64;
                (self.last_seq + 1, self.last_ts.wrapping_add(ticks.max(1) as u32))
            }
            None => (self.last_seq + 1, self.last_ts),
        };
        self.seq_offset = out_seq.wrapping_sub(in_seq);
        self.ts_offset = out_ts.wrapping_sub(in_ts);
        self.base_in_seq = in_seq;
        self.started = true;
    }

    /// Whether a source has been mapped yet.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Map a packet of the current source; `None` for packets from before the switch.
    pub fn map(&mut self, in_seq: u64, in_ts: u32, now: Instant) -> Option<(u64, u32)> {
        if !self.started || in_seq < self.base_in_seq {
            return None;
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let ts = in_ts.wrapping_add(self.ts_offset);
        if seq > self.last_seq || self.last_at.is_none() {
            self.last_seq = seq;
            self.last_ts = ts;
            self.last_at = Some(now);
        }
        Some((seq, ts))
    }

    /// Forget the current source: the next packet needs a `switch`.
    pub fn stop(&mut self) {
        self.started = false;
    }
}

const PICTURE_ID_MOD: u16 = 1 << 15;
const SHORT_PICTURE_ID_MOD: u16 = 1 << 7;
const KEY_IDX_MOD: u8 = 1 << 5;

/// Output of one VP8 descriptor field: `out = in + offset`, rebased on switches
/// so the first value of a new source follows the highest value sent.
#[derive(Debug, Clone, Copy, Default)]
struct Field {
    offset: u16,
    /// Highest output value so far (wrap-aware), once one was sent.
    last: Option<u16>,
}

impl Field {
    fn rebase(&mut self, input: Option<u16>, modulus: u16) {
        if let (Some(input), Some(last)) = (input, self.last) {
            let next = (last + 1) % modulus;
            self.offset = (next + modulus - input % modulus) % modulus;
        }
    }

    fn map(&mut self, input: u16, modulus: u16) -> u16 {
        let out = (input % modulus + self.offset) % modulus;
        let ahead = |a: u16, b: u16| {
            let d = (a + modulus - b % modulus) % modulus;
            d != 0 && d < modulus / 2
        };
        if self.last.is_none_or(|last| ahead(out, last)) {
            self.last = Some(out);
        }
        out
    }
}

/// Per-subscriber VP8 PictureID / TL0PICIDX / KEYIDX rewriting.
#[derive(Debug, Clone, Default)]
pub struct Vp8Rewriter {
    picture_id: Field,
    tl0_pic_idx: Field,
    key_idx: Field,
}

/// Range of the PictureID in `payload`: 15 bits when its M bit is set, else 7.
fn picture_id_mod(payload: &[u8]) -> u16 {
    // The PictureID, when present, directly follows the two mandatory octets.
    match payload.get(2) {
        Some(b) if b & 0x80 != 0 => PICTURE_ID_MOD,
        _ => SHORT_PICTURE_ID_MOD,
    }
}

impl Vp8Rewriter {
    /// Rebase on a new source whose first forwarded packet is `payload` (a
    /// keyframe start) with descriptor `desc`.
    pub fn switch(&mut self, desc: &Vp8Descriptor, payload: &[u8]) {
        self.picture_id.rebase(desc.picture_id(), picture_id_mod(payload));
        self.tl0_pic_idx.rebase(desc.tl0_pic_idx().map(u16::from), 256);
        self.key_idx.rebase(desc.key_idx().map(u16::from), u16::from(KEY_IDX_MOD));
    }

    /// The patch that rewrites one packet of the current source; `None` when the
    /// payload goes out unchanged.
    pub fn map(&mut self, desc: &Vp8Descriptor, payload: &[u8]) -> Option<Vp8Patch> {
        let out = self.map_fields(desc, payload);
        let mut builder = desc.patch();
        let mut changed = false;
        if let (Some(o), Some(i)) = (out.picture_id, desc.picture_id()) {
            if o != i {
                builder = builder.picture_id(o);
                changed = true;
            }
        }
        if let (Some(o), Some(i)) = (out.tl0_pic_idx, desc.tl0_pic_idx()) {
            if o != i {
                builder = builder.tl0_pic_idx(o);
                changed = true;
            }
        }
        if let (Some(o), Some(i)) = (out.key_idx, desc.key_idx()) {
            if o != i {
                builder = builder.key_idx(o);
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        builder.build().ok()
    }

    /// Output values of the descriptor fields present in one packet.
    pub fn map_fields(&mut self, desc: &Vp8Descriptor, payload: &[u8]) -> Vp8Fields {
        Vp8Fields {
            picture_id: desc
                .picture_id()
                .map(|pid| self.picture_id.map(pid, picture_id_mod(payload))),
            tl0_pic_idx: desc
                .tl0_pic_idx()
                .map(|v| self.tl0_pic_idx.map(u16::from(v), 256) as u8),
            key_idx: desc
                .key_idx()
                .map(|v| self.key_idx.map(u16::from(v), u16::from(KEY_IDX_MOD)) as u8),
        }
    }
}

/// VP8 descriptor field values (those present in a packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Fields {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuity_across_switch() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 1000);
        assert_eq!(r.map(5, 100, t0), None);
        r.switch(5, 100, t0);
        let (s0, ts0) = r.map(5, 100, t0).unwrap();
        let (s1, _) = r.map(6, 100, t0).unwrap();
        assert_eq!(s1, s0 + 1);
        // Switch to another layer 100 ms later with unrelated numbering.
        let t1 = t0 + Duration::from_millis(100);
        r.switch(70_000, 9_999_999, t1);
        let (s2, ts2) = r.map(70_000, 9_999_999, t1).unwrap();
        assert_eq!(s2, s1 + 1);
        assert_eq!(ts2.wrapping_sub(ts0), 9_000);
        // Late packet of the old layer is dropped.
        assert_eq!(r.map(69_999, 0, t1), None);
        assert!(s0 < INITIAL_SEQ_MAX + 1);
    }

    /// X=1, S=1 | I, L, T | 15-bit PictureID | TL0PICIDX | TID | VP8 header.
    fn vp8(pid: u16, tl0: u8, key: bool) -> Vec<u8> {
        vec![0x90, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, tl0, 0x20, u8::from(!key), 0x9d]
    }

    fn step(r: &mut Vp8Rewriter, switch: bool, p: &[u8]) -> (u16, u8) {
        let d = Vp8Descriptor::parse(p).unwrap();
        if switch {
            r.switch(&d, p);
        }
        let f = r.map_fields(&d, p);
        (f.picture_id.unwrap(), f.tl0_pic_idx.unwrap())
    }

    #[test]
    fn vp8_picture_ids_continue_across_switches() {
        let mut r = Vp8Rewriter::default();
        // The first source passes through unchanged (no patch at all).
        let a0 = vp8(0x7ff0, 10, true);
        assert_eq!(step(&mut r, true, &a0), (0x7ff0, 10));
        assert!(r.map(&Vp8Descriptor::parse(&a0).unwrap(), &a0).is_none());
        assert_eq!(step(&mut r, false, &vp8(0x7fff, 11, false)), (0x7fff, 11));
        // A layer whose numbering is behind: output continues at +1, wrapping.
        assert_eq!(step(&mut r, true, &vp8(0x0100, 200, true)), (0, 12));
        assert_eq!(step(&mut r, false, &vp8(0x0101, 200, false)), (1, 12));
        // A reordered packet of the current source maps consistently.
        assert_eq!(step(&mut r, false, &vp8(0x0100, 200, false)), (0, 12));
        assert_eq!(step(&mut r, false, &vp8(0x0102, 201, false)), (2, 13));
        // And back to a layer that is ahead.
        assert_eq!(step(&mut r, true, &vp8(0x1234, 5, true)), (3, 14));
        let b = vp8(0x1235, 5, false);
        assert!(r.map(&Vp8Descriptor::parse(&b).unwrap(), &b).is_some());
        // 7-bit PictureIDs stay 7 bits wide.
        let short = [0x90, 0x80, 0x40, 0x00, 0x9d];
        let d = Vp8Descriptor::parse(&short).unwrap();
        r.switch(&d, &short);
        assert_eq!(r.map_fields(&d, &short).picture_id, Some(5));
        assert!(r.map(&d, &short).is_some());
    }
}
