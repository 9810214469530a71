//! VP8 temporal layers: what a subscriber that asked for a frame rate
//! (`UpdateTrackSettings.fps`) gets of a stream.
//!
//! libwebrtc encodes each VP8 simulcast layer with temporal layers (three by
//! default: TID 0 at a quarter of the frame rate, TID 1 adding a quarter, TID 2
//! the other half). Frames of a TID reference only frames of lower or equal TIDs,
//! so dropping every frame above a TID leaves a decodable stream at a lower
//! frame rate. Going back up is safe only where the encoder says so: a frame
//! whose *layer sync* bit (Y) is set references only the base layer, or a
//! keyframe. The descriptor carries TID and Y in every packet of a frame
//! (RFC 7741 §4.2).
//!
//! Pure: [`parse`] reads a payload, [`TemporalFilter`] decides per packet, and
//! [`FrameRates`] turns frame counts per TID into the rate each TID gives.

/// Temporal fields of one VP8 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    /// Temporal layer index (0 = base).
    pub tid: u8,
    /// Layer sync (Y): the frame references only the base layer.
    pub sync: bool,
    /// The packet opens its frame (S set, partition index 0).
    pub frame_start: bool,
}

/// Highest TID the descriptor can carry (two bits).
pub const MAX_TID: u8 = 3;

/// The temporal fields of a VP8 payload, when its descriptor has them (T bit).
pub fn parse(payload: &[u8]) -> Option<Temporal> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return None; // no extension octet, so no TID
    }
    let ext = *payload.get(1)?;
    let (has_pid, has_tl0, has_tid) = (ext & 0x80 != 0, ext & 0x40 != 0, ext & 0x20 != 0);
    if !has_tid {
        return None;
    }
    let mut at = 2;
    if has_pid {
        // M bit: a 15-bit PictureID takes two octets.
        at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if has_tl0 {
        at += 1;
    }
    let t = *payload.get(at)?;
    Some(Temporal { tid: t >> 6, sync: t & 0x20 != 0, frame_start: first & 0x10 != 0 && first & 0x07 == 0 })
}

/// One down track's temporal state: the highest TID it forwards now and the one
/// it should (from the requested frame rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemporalFilter {
    /// Highest TID forwarded; None: every TID (no limit asked, or not yet known).
    current: Option<u8>,
}

impl TemporalFilter {
    /// Whether to forward this packet, given the highest TID wanted now (`None`:
    /// all). `restart`: the stream (re)starts here on a keyframe, where every TID
    /// is decodable. Changes happen only at frame starts, so a frame is forwarded
    /// whole or not at all.
    pub fn admit(&mut self, t: Temporal, target: Option<u8>, restart: bool) -> bool {
        if restart {
            self.current = target;
        } else if t.frame_start {
            self.current = match (self.current, target) {
                // Down: at once (the dropped layers are what nothing references).
                (Some(c), Some(w)) if w < c => Some(w),
                (None, Some(w)) => Some(w),
                // Up: one layer at a time, where a frame of the next layer syncs.
                (Some(c), w) if w.is_none_or(|w| w > c) => {
                    let up = t.tid > c && t.sync && w.is_none_or(|w| t.tid <= w);
                    match (up, w) {
                        (true, Some(w)) if t.tid == w => Some(w),
                        (true, None) if t.tid == MAX_TID => None,
                        (true, _) => Some(t.tid),
                        (false, _) => Some(c),
                    }
                }
                (c, _) => c,
            };
        }
        self.current.is_none_or(|c| t.tid <= c)
    }

    /// The highest TID forwarded now (None: all).
    pub fn current(&self) -> Option<u8> {
        self.current
    }
}

/// Frames per TID of one encoding, counted between measurements, and the frame
/// rate each TID gives (that TID and those below it) from the last measurement.
#[derive(Debug, Clone, Default)]
pub struct FrameRates {
    frames: [u32; 4],
    /// Cumulative frame rate up to each TID; None until a measurement saw
    /// temporal layers.
    rates: Option<[f32; 4]>,
    /// Highest TID seen in the last measurement.
    top: u8,
}

impl FrameRates {
    /// Count a packet's frame (only its first packet counts).
    pub fn saw(&mut self, t: Temporal) {
        if t.frame_start {
            self.frames[usize::from(t.tid.min(MAX_TID))] += 1;
        }
    }

    /// Close a measuring interval of `secs` seconds.
    pub fn measure(&mut self, secs: f64) {
        let frames = std::mem::take(&mut self.frames);
        if secs <= 0.0 || frames.iter().all(|&f| f == 0) {
            self.rates = None;
            return;
        }
        let mut sum = 0.0f32;
        let mut rates = [0.0f32; 4];
        for (i, f) in frames.iter().enumerate() {
            sum += *f as f32 / secs as f32;
            rates[i] = sum;
        }
        self.top = frames.iter().rposition(|&f| f > 0).unwrap_or(0) as u8;
        self.rates = Some(rates);
    }

    /// The lowest TID that gives at least `fps` (within a tenth: rates measured over
    /// a second wobble), or None when every TID is needed or nothing is known.
    pub fn tid_for(&self, fps: u32) -> Option<u8> {
        if fps == 0 {
            return None;
        }
        let rates = self.rates?;
        if self.top == 0 {
            return None;
        }
        let want = fps as f32 * 0.9;
        (0..self.top).find(|&t| rates[usize::from(t)] >= want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X=1 | I, L, T | 15-bit PictureID | TL0PICIDX | TID, Y | VP8 header byte.
    fn packet(tid: u8, sync: bool, start: bool) -> Vec<u8> {
        let first = 0x80 | if start { 0x10 } else { 0 };
        vec![first, 0xe0, 0x80, 0x01, 7, (tid << 6) | if sync { 0x20 } else { 0 }, 0x9d]
    }

    fn t(tid: u8, sync: bool) -> Temporal {
        Temporal { tid, sync, frame_start: true }
    }

    #[test]
    fn parses_tid_sync_and_frame_start_after_the_optional_fields() {
        assert_eq!(parse(&packet(2, true, true)), Some(t(2, true)));
        assert_eq!(parse(&packet(1, false, false)), Some(Temporal { tid: 1, sync: false, frame_start: false }));
        // 7-bit PictureID, no TL0PICIDX.
        assert_eq!(parse(&[0x90, 0xa0, 0x05, 0x40, 0x9d]), Some(Temporal { tid: 1, sync: false, frame_start: true }));
        // Partition index 1 is not a frame start.
        assert_eq!(parse(&[0x91, 0x20, 0x00, 0x9d]).map(|t| t.frame_start), Some(false));
        // No T bit, no extension, truncated: nothing.
        assert_eq!(parse(&[0x90, 0x80, 0x05, 0x9d]), None);
        assert_eq!(parse(&[0x10, 0x9d]), None);
        assert_eq!(parse(&[0x90, 0xe0, 0x80]), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn steps_down_at_once_and_up_only_at_a_sync_frame_of_the_next_layer() {
        let mut f = TemporalFilter::default();
        assert!(f.admit(t(2, false), None, false), "no limit: everything");
        assert!(f.admit(t(0, false), Some(0), false));
        assert!(!f.admit(t(2, true), Some(0), false));
        assert!(!f.admit(t(1, true), Some(0), false));
        // Later packets of a frame follow its first packet's decision.
        assert!(!f.admit(Temporal { tid: 1, sync: true, frame_start: false }, Some(2), false));
        // Up to 2: not on an unsynced frame of layer 1, but on a synced one, then
        // on layer 2's next sync frame.
        assert!(!f.admit(t(1, false), Some(2), false));
        assert!(!f.admit(t(2, false), Some(2), false));
        assert!(f.admit(t(1, true), Some(2), false));
        assert_eq!(f.current(), Some(1));
        assert!(!f.admit(t(2, false), Some(2), false));
        assert!(f.admit(t(2, true), Some(2), false));
        assert_eq!(f.current(), Some(2));
        // Limit lifted: up at the next sync frame above; a keyframe restart takes
        // the target at once.
        let mut g = TemporalFilter::default();
        assert!(g.admit(t(0, false), Some(0), false));
        assert!(g.admit(t(0, false), None, true));
        assert_eq!(g.current(), None);
        assert!(g.admit(t(2, false), None, false));
    }

    #[test]
    fn frame_rates_name_the_lowest_tid_that_gives_the_rate_asked() {
        let mut r = FrameRates::default();
        assert_eq!(r.tid_for(15), None, "nothing measured");
        // One second of libwebrtc's 3-layer pattern at 30 fps: 0 2 1 2 ...
        for i in 0..30u32 {
            let tid = match i % 4 {
                0 => 0,
                2 => 1,
                _ => 2,
            };
            r.saw(t(tid, false));
            r.saw(Temporal { frame_start: false, ..t(tid, false) });
        }
        r.measure(1.0);
        assert_eq!(r.tid_for(7), Some(0));
        assert_eq!(r.tid_for(8), Some(0), "7.5 fps is within a tenth of 8");
        assert_eq!(r.tid_for(15), Some(1));
        assert_eq!(r.tid_for(17), None);
        assert_eq!(r.tid_for(30), None);
        assert_eq!(r.tid_for(0), None);
        // A stream without temporal layers (TID 0 only) needs no limit.
        let mut single = FrameRates::default();
        for _ in 0..30 {
            single.saw(t(0, false));
        }
        single.measure(1.0);
        assert_eq!(single.tid_for(5), None);
    }
}
