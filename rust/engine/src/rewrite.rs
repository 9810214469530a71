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

/// Dropped packets whose shifts are remembered; a packet older than the oldest
/// remembered one cannot be mapped and is stale.
const GAPS_KEPT: usize = 128;

/// Packets of the current source that were dropped in order (VP8 frames of
/// temporal layers a subscriber does not get): each one shifts the output number
/// of every later packet down by one, so the output stream has no holes. Kept per
/// input sequence number, so a reordered packet maps to the number it would have
/// had.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gaps {
    /// (input seq of a dropped packet, drops up to and including it), ascending.
    drops: std::collections::VecDeque<(u64, u64)>,
    /// Drops before the oldest remembered one (folded in when it was forgotten).
    base: u64,
    /// Packets at or below this input seq are older than what is remembered.
    horizon: Option<u64>,
    /// Highest input seq seen (forwarded or dropped): only newer drops shift.
    highest: Option<u64>,
}

impl Gaps {
    fn clear(&mut self) {
        *self = Self::default();
    }

    /// A packet seen (forwarded or not), for the in-order test of `skip`.
    fn saw(&mut self, seq: u64) {
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
        }
    }

    /// Drop `seq`. Only a packet newer than every packet seen shifts what follows:
    /// shifting a reordered one would renumber packets already sent. Returns
    /// whether it shifted.
    fn skip(&mut self, seq: u64) -> bool {
        if self.highest.is_some_and(|h| seq <= h) {
            return false;
        }
        self.highest = Some(seq);
        let total = self.drops.back().map_or(self.base, |d| d.1) + 1;
        self.drops.push_back((seq, total));
        if self.drops.len() > GAPS_KEPT {
            if let Some((s, c)) = self.drops.pop_front() {
                self.base = c;
                self.horizon = Some(s);
            }
        }
        true
    }

    /// How far packet `seq` moves down; None when it is older than what is kept,
    /// or was itself dropped (a copy of it must not take a later packet's number).
    fn shift(&self, seq: u64) -> Option<u64> {
        if self.horizon.is_some_and(|h| seq <= h) {
            return None;
        }
        let before = self.drops.partition_point(|d| d.0 < seq);
        if self.drops.get(before).is_some_and(|d| d.0 == seq) {
            return None;
        }
        Some(if before == 0 { self.base } else { self.drops[before - 1].1 })
    }
}

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
    /// Packets of the current source dropped on purpose (see `Gaps`).
    gaps: Gaps,
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
            gaps: Gaps::default(),
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
        self.gaps.clear();
    }

    /// Drop packet `in_seq` of the current source without leaving a hole in the
    /// output (when it is the newest packet seen; a reordered one leaves a hole).
    pub fn skip(&mut self, in_seq: u64) {
        if self.started && in_seq >= self.base_in_seq {
            self.gaps.skip(in_seq);
        }
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
        let shift = self.gaps.shift(in_seq)?;
        self.gaps.saw(in_seq);
        let seq = in_seq.wrapping_add(self.seq_offset).wrapping_sub(shift);
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
    /// Pictures dropped on purpose (temporal layers), by the input seq of their
    /// first packet: later PictureIDs move down so the output has no holes, which
    /// libwebrtc would take for lost frames.
    pictures: Gaps,
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
        self.pictures.clear();
    }

    /// A picture of the current source is dropped whole; `in_seq` is its first
    /// packet's sequence number.
    pub fn skip_picture(&mut self, in_seq: u64) {
        self.pictures.skip(in_seq);
    }

    /// The patch that rewrites one packet of the current source; `None` when the
    /// payload goes out unchanged.
    pub fn map(&mut self, desc: &Vp8Descriptor, payload: &[u8], in_seq: u64) -> Option<Vp8Patch> {
        let out = self.map_fields(desc, payload, in_seq);
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
    pub fn map_fields(&mut self, desc: &Vp8Descriptor, payload: &[u8], in_seq: u64) -> Vp8Fields {
        // A packet older than the remembered drops keeps the current shift: its
        // frame is stale for the decoder either way.
        let shift = self.pictures.shift(in_seq).unwrap_or(self.pictures.base);
        self.pictures.saw(in_seq);
        Vp8Fields {
            picture_id: desc.picture_id().map(|pid| {
                let m = picture_id_mod(payload);
                let shifted = (u32::from(pid) + u32::from(m) * 4 - (shift % u64::from(m)) as u32) % u32::from(m);
                self.picture_id.map(shifted as u16, m)
            }),
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
        let f = r.map_fields(&d, p, 0);
        (f.picture_id.unwrap(), f.tl0_pic_idx.unwrap())
    }

    #[test]
    fn vp8_picture_ids_continue_across_switches() {
        let mut r = Vp8Rewriter::default();
        // The first source passes through unchanged (no patch at all).
        let a0 = vp8(0x7ff0, 10, true);
        assert_eq!(step(&mut r, true, &a0), (0x7ff0, 10));
        assert!(r.map(&Vp8Descriptor::parse(&a0).unwrap(), &a0, 0).is_none());
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
        assert!(r.map(&Vp8Descriptor::parse(&b).unwrap(), &b, 0).is_some());
        // 7-bit PictureIDs stay 7 bits wide.
        let short = [0x90, 0x80, 0x40, 0x00, 0x9d];
        let d = Vp8Descriptor::parse(&short).unwrap();
        r.switch(&d, &short);
        assert_eq!(r.map_fields(&d, &short, 0).picture_id, Some(5));
        assert!(r.map(&d, &short, 0).is_some());
    }

    #[test]
    fn dropped_packets_and_pictures_leave_no_holes_and_reordered_ones_map_as_before() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 40);
        r.switch(100, 0, t0);
        let (first, _) = r.map(100, 0, t0).unwrap();
        r.skip(101);
        r.skip(102);
        assert_eq!(r.map(103, 0, t0).unwrap().0, first + 1, "two drops, no hole");
        // Reordered: 99 is older than the switch; a late drop shifts nothing.
        assert_eq!(r.map(99, 0, t0), None);
        r.skip(101);
        assert_eq!(r.map(104, 0, t0).unwrap().0, first + 2);
        // A packet that arrives after a later drop keeps the number it had.
        r.skip(106);
        assert_eq!(r.map(105, 0, t0).unwrap().0, first + 3, "late packet keeps its number");
        assert_eq!(r.map(107, 0, t0).unwrap().0, first + 4);
        // Beyond what is remembered, old packets are stale; new ones still map.
        let mut seq = 200;
        for _ in 0..(GAPS_KEPT + 10) {
            r.skip(seq);
            seq += 2;
            r.map(seq - 1, 0, t0).unwrap();
        }
        assert_eq!(r.map(201, 0, t0), None);
        let (a, _) = r.map(seq - 1, 0, t0).unwrap();
        r.skip(seq);
        assert_eq!(r.map(seq + 1, 0, t0).unwrap().0, a + 1);
        // A switch forgets the drops.
        r.switch(5_000, 0, t0);
        let (b, _) = r.map(5_000, 0, t0).unwrap();
        assert_eq!(r.map(5_001, 0, t0).unwrap().0, b + 1);

        let mut v = Vp8Rewriter::default();
        let p = |pid: u16| vp8(pid, 1, false);
        let pid_of = |v: &mut Vp8Rewriter, pid: u16, seq: u64| {
            let b = p(pid);
            v.map_fields(&Vp8Descriptor::parse(&b).unwrap(), &b, seq).picture_id.unwrap()
        };
        let k = vp8(0x7ffe, 1, true);
        v.switch(&Vp8Descriptor::parse(&k).unwrap(), &k);
        assert_eq!(pid_of(&mut v, 0x7ffe, 10), 0x7ffe);
        v.skip_picture(11);
        // The picture after the dropped one takes its PictureID (wrapping).
        assert_eq!(pid_of(&mut v, 0x0000, 13), 0x7fff);
        assert_eq!(pid_of(&mut v, 0x0001, 14), 0x0000);
        // A late packet of the picture before the drop keeps its number.
        assert_eq!(pid_of(&mut v, 0x7ffe, 9), 0x7ffe);
    }
}
