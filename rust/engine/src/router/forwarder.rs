//! What one down track does with each packet of its track: the per-packet decision
//! (drop, wait for a keyframe, switch layer, forward with rewritten numbers), with
//! the down track's forwarding state as one explicit enum. Pure: no str0m, no
//! peers; `core` asks and carries out (writes the packet, requests keyframes).
//!
//! An allocator (bandwidth-driven layer choice) plugs in by choosing the `wanted`
//! layer it passes to [`Forwarder::decide`].
use std::time::Instant;

use str0m::media::Rid;
use str0m::rtp::{Ssrc, Vp8Descriptor, Vp8Patch};

use super::temporal::{Temporal, TemporalFilter};
use crate::rewrite::{Rewriter, Vp8Rewriter};

/// Where a down track stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing forwarded since the start or the last stop (mute, unsubscribe,
    /// disable, resubscribe): the next usable packet of the wanted layer starts
    /// the stream (for video, the first packet of a keyframe).
    Waiting,
    /// Forwarding the layer `rid`, whose packets come with SSRC `ssrc`.
    Forwarding { rid: Option<Rid>, ssrc: Ssrc },
}

/// What the forwarder needs of an incoming packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    /// Extended sequence number.
    pub seq: u64,
    pub ts: u32,
    /// The codec can only start (or switch) on a keyframe (video).
    pub needs_keyframe: bool,
    /// The packet opens a keyframe.
    pub keyframe: bool,
}

/// Quality index of a simulcast rid: q/h/f as LiveKit (LOW, MEDIUM, HIGH), no rid
/// (a single layer) HIGH, other rids MEDIUM.
pub fn quality(rid: Option<Rid>) -> u8 {
    match rid.as_deref() {
        Some("q") => 0,
        Some("h") => 1,
        Some("f") | None => 2,
        Some(_) => 1,
    }
}

/// The decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not this subscriber's layer.
    Drop,
    /// The packet is of the wanted layer but cannot start it: a keyframe of that
    /// layer is needed.
    WaitKeyframe(Option<Rid>),
    /// Older than the current mapping (from before a switch): dropped.
    Stale,
    /// Forward with these output numbers. `switch_to`: a different layer is wanted;
    /// this one goes on until the wanted one has a keyframe (request one).
    Forward { seq: u64, ts: u32, switched: bool, switch_to: Option<Option<Rid>> },
}

/// One down track's forwarding state and output numbering.
#[derive(Debug, Clone)]
pub struct Forwarder {
    state: State,
    rewriter: Rewriter,
    vp8: Vp8Rewriter,
    temporal: TemporalFilter,
}

impl Forwarder {
    /// A forwarder for a stream with this RTP clock rate; `seed` randomises the
    /// initial output numbers.
    pub fn new(clock_rate: u32, seed: u64) -> Self {
        Self {
            state: State::Waiting,
            rewriter: Rewriter::new(clock_rate, seed),
            vp8: Vp8Rewriter::default(),
            temporal: TemporalFilter::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The layer being forwarded, if any.
    pub fn current(&self) -> Option<Option<Rid>> {
        match self.state {
            State::Forwarding { rid, .. } => Some(rid),
            State::Waiting => None,
        }
    }

    /// Stop until the next switch point; the output numbering continues from where
    /// it stopped.
    pub fn stop(&mut self) {
        self.state = State::Waiting;
        self.rewriter.stop();
    }

    /// Decide for one packet, given the layer the subscriber should get now
    /// (`None`: no layer known yet). `vp8`: the packet's VP8 descriptor, whose
    /// numbering restarts on a switch. `temporal`: the packet's VP8 temporal
    /// fields and the highest TID wanted (None: all); frames above it are dropped
    /// without holes in the output numbering.
    pub fn decide(
        &mut self,
        p: &Packet,
        wanted: Option<Option<Rid>>,
        vp8: Option<(&Vp8Descriptor, &[u8])>,
        temporal: Option<(Temporal, Option<u8>)>,
        now: Instant,
    ) -> Decision {
        let on_current = matches!(self.state, State::Forwarding { ssrc, .. } if ssrc == p.ssrc);
        let mut switched = false;
        let mut switch_to = None;
        if !on_current {
            // Nothing forwarded yet: start on a keyframe of any layer below the wanted
            // one (then switch up on the wanted layer's keyframe), as the reference
            // does, so a publisher slow to answer keyframe requests (file publishers
            // ignore them) does not hold back the first picture.
            let opportunistic = self.state == State::Waiting
                && p.keyframe
                && wanted.is_some_and(|w| quality(p.rid) < quality(w));
            if wanted != Some(p.rid) && !opportunistic {
                return Decision::Drop;
            }
            // Start, resume or switch layer: only where a decoder can start.
            if p.needs_keyframe && !p.keyframe {
                return Decision::WaitKeyframe(p.rid);
            }
            self.rewriter.switch(p.seq, p.ts, now);
            if let Some((desc, payload)) = vp8 {
                self.vp8.switch(desc, payload);
            }
            self.state = State::Forwarding { rid: p.rid, ssrc: p.ssrc };
            switched = true;
            switch_to = wanted.filter(|w| *w != p.rid);
        } else if let Some(w) = wanted.filter(|w| *w != p.rid) {
            switch_to = Some(w);
        }
        if let Some((t, target)) = temporal {
            // A keyframe (or the switch onto one) makes every TID decodable.
            if !self.temporal.admit(t, target, switched || p.keyframe) {
                self.rewriter.skip(p.seq);
                if t.frame_start {
                    self.vp8.skip_picture(p.seq);
                }
                return Decision::Drop;
            }
        }
        match self.rewriter.map(p.seq, p.ts, now) {
            Some((seq, ts)) => Decision::Forward { seq, ts, switched, switch_to },
            None => Decision::Stale,
        }
    }

    /// The VP8 descriptor rewrite of a forwarded packet (None: nothing to change).
    pub fn vp8_patch(&mut self, desc: &Vp8Descriptor, payload: &[u8], seq: u64) -> Option<Vp8Patch> {
        self.vp8.map(desc, payload, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ssrc: u32, rid: Option<&str>, seq: u64, keyframe: bool) -> Packet {
        Packet {
            ssrc: Ssrc::from(ssrc),
            rid: rid.map(Rid::from),
            seq,
            ts: seq as u32 * 3000,
            needs_keyframe: true,
            keyframe,
        }
    }

    #[test]
    fn video_starts_on_a_keyframe_of_the_wanted_layer_and_switches_on_one() {
        let now = Instant::now();
        let mut f = Forwarder::new(90_000, 7);
        let q = Some(Some(Rid::from("q")));
        let h = Some(Some(Rid::from("h")));
        assert_eq!(f.decide(&pkt(1, Some("h"), 10, true), q, None, None, now), Decision::Drop);
        assert_eq!(f.decide(&pkt(2, Some("q"), 10, false), q, None, None, now), Decision::WaitKeyframe(Some("q".into())));
        let Decision::Forward { seq, switched: true, switch_to: None, .. } = f.decide(&pkt(2, Some("q"), 11, true), q, None, None, now)
        else {
            panic!("a keyframe of the wanted layer starts it");
        };
        assert_eq!(f.current(), Some(Some("q".into())));
        // HIGH wanted now: q goes on (asking for h) until h has a keyframe.
        assert!(matches!(
            f.decide(&pkt(2, Some("q"), 12, false), h, None, None, now),
            Decision::Forward { switched: false, switch_to: Some(Some(_)), .. }
        ));
        assert_eq!(f.decide(&pkt(1, Some("h"), 50, false), h, None, None, now), Decision::WaitKeyframe(Some("h".into())));
        let Decision::Forward { seq: after, switched: true, .. } = f.decide(&pkt(1, Some("h"), 51, true), h, None, None, now) else {
            panic!("switch on h's keyframe");
        };
        assert_eq!(after, seq + 2, "the output continues without a gap");
        assert_eq!(f.decide(&pkt(2, Some("q"), 13, true), h, None, None, now), Decision::Drop);
        assert_eq!(f.decide(&pkt(1, Some("h"), 49, false), h, None, None, now), Decision::Stale);
    }

    #[test]
    fn a_waiting_down_track_starts_on_a_lower_keyframe_and_switches_up() {
        let now = Instant::now();
        let mut f = Forwarder::new(90_000, 3);
        let h = Some(Some(Rid::from("h")));
        // HIGH wanted (f): a keyframe of q starts it, asking for h's keyframe.
        let want_f = Some(Some(Rid::from("f")));
        assert_eq!(f.decide(&pkt(1, Some("q"), 10, false), want_f, None, None, now), Decision::Drop);
        let Decision::Forward { seq, switched: true, switch_to: Some(Some(to)), .. } =
            f.decide(&pkt(1, Some("q"), 11, true), want_f, None, None, now)
        else {
            panic!("a lower keyframe starts a waiting down track");
        };
        assert_eq!(to, Rid::from("f"));
        assert!(matches!(
            f.decide(&pkt(1, Some("q"), 12, false), want_f, None, None, now),
            Decision::Forward { switch_to: Some(_), .. }
        ));
        // Once forwarding, only the wanted layer's keyframe switches.
        assert_eq!(f.decide(&pkt(2, Some("h"), 40, true), want_f, None, None, now), Decision::Drop);
        let Decision::Forward { seq: after, switched: true, switch_to: None, .. } =
            f.decide(&pkt(3, Some("f"), 90, true), want_f, None, None, now)
        else {
            panic!("switch up on the wanted layer's keyframe");
        };
        assert_eq!(after, seq + 2);
        // Never a higher layer than wanted, even waiting.
        let mut g = Forwarder::new(90_000, 4);
        assert_eq!(g.decide(&pkt(3, Some("f"), 5, true), h, None, None, now), Decision::Drop);
    }

    #[test]
    fn stopping_waits_for_the_next_switch_point() {
        let now = Instant::now();
        let mut f = Forwarder::new(48_000, 1);
        let audio = |seq| Packet { needs_keyframe: false, ..pkt(5, None, seq, false) };
        assert!(matches!(f.decide(&audio(1), Some(None), None, None, now), Decision::Forward { switched: true, .. }));
        assert!(matches!(f.decide(&audio(2), Some(None), None, None, now), Decision::Forward { switched: false, .. }));
        f.stop();
        assert_eq!(f.state(), State::Waiting);
        assert_eq!(f.current(), None);
        assert!(matches!(f.decide(&audio(3), Some(None), None, None, now), Decision::Forward { switched: true, .. }));
    }

    #[test]
    fn frames_above_the_wanted_tid_are_dropped_without_holes() {
        use crate::router::temporal::Temporal;
        let now = Instant::now();
        let mut f = Forwarder::new(90_000, 9);
        let one = Some(None);
        // One packet per frame, libwebrtc's pattern 0 2 1 2; TID 0 only wanted.
        let tids = [0u8, 2, 1, 2, 0, 2, 1, 2, 0];
        let mut out = Vec::new();
        for (i, tid) in tids.iter().enumerate() {
            let p = Packet { ssrc: Ssrc::from(1), rid: None, seq: 10 + i as u64, ts: i as u32 * 3000, needs_keyframe: true, keyframe: i == 0 };
            let t = Temporal { tid: *tid, sync: true, frame_start: true };
            if let Decision::Forward { seq, .. } = f.decide(&p, one, None, Some((t, Some(0))), now) {
                out.push(seq);
            }
        }
        assert_eq!(out.len(), 3, "the three TID 0 frames");
        assert_eq!(out[1], out[0] + 1);
        assert_eq!(out[2], out[1] + 1);
        // Limit lifted: the next synced frame above brings the layers back.
        let p = Packet { ssrc: Ssrc::from(1), rid: None, seq: 19, ts: 0, needs_keyframe: true, keyframe: false };
        let t = Temporal { tid: 2, sync: true, frame_start: true };
        let Decision::Forward { seq, .. } = f.decide(&p, one, None, Some((t, None)), now) else {
            panic!("a synced TID 2 frame is forwarded once no limit is asked");
        };
        assert_eq!(seq, out[2] + 1);
    }
}
