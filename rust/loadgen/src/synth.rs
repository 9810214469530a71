//! Synthetic media: RTP payloads shaped like Opus and VP8 without encoding
//! anything, each ending in a [`Trailer`] that lets subscribers measure loss and
//! latency. SFUs rewrite headers and the VP8 descriptor, never the payload's tail.
use std::time::{Duration, Instant};

/// Bytes taken by the trailer at the end of every payload.
pub const TRAILER_LEN: usize = 20;
const MAGIC: u32 = 0x504c_4f41;

/// Largest RTP payload we produce: below any loopback or Ethernet MTU after
/// SRTP and header extensions.
const MAX_PAYLOAD: usize = 1100;
/// VP8 payload descriptor: X, I, M with a 15-bit picture id.
const VP8_DESCRIPTOR_LEN: usize = 4;

const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const AUDIO_TICKS: u32 = 960;
const VIDEO_FPS: u32 = 30;
const VIDEO_TICKS: u32 = 90_000 / VIDEO_FPS;
/// A keyframe every 2 s, four times the size of a delta frame (a camera-like mix).
const KEYFRAME_EVERY: u64 = 2 * VIDEO_FPS as u64;
const KEYFRAME_FACTOR: u64 = 4;
/// At most this many late frames are sent at once when the loop fell behind.
const MAX_CATCH_UP: u32 = 3;

/// Identifies a packet end to end: which synthetic track, which packet of it,
/// and when it left the publisher (ns on the generator's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub track: u32,
    pub counter: u32,
    pub sent_ns: u64,
}

impl Trailer {
    /// Write into the last [`TRAILER_LEN`] bytes of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        let n = payload.len();
        let t = &mut payload[n - TRAILER_LEN..];
        t[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        t[4..8].copy_from_slice(&self.track.to_be_bytes());
        t[8..12].copy_from_slice(&self.counter.to_be_bytes());
        t[12..20].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// The trailer of a payload we produced; None for anything else (padding
    /// probes, other senders).
    pub fn read(payload: &[u8]) -> Option<Self> {
        let n = payload.len();
        if n < TRAILER_LEN {
            return None;
        }
        let t = &payload[n - TRAILER_LEN..];
        let word = |r: std::ops::Range<usize>| u32::from_be_bytes(t[r].try_into().unwrap_or([0; 4]));
        if word(0..4) != MAGIC {
            return None;
        }
        Some(Self {
            track: word(4..8),
            counter: word(8..12),
            sent_ns: u64::from_be_bytes(t[12..20].try_into().unwrap_or([0; 8])),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// One RTP packet to send.
#[derive(Debug)]
pub struct Packet {
    pub payload: Vec<u8>,
    pub seq: u64,
    pub rtp_time: u32,
    pub marker: bool,
}

/// A synthetic track: produces the packets of each frame when it is due.
#[derive(Debug)]
pub struct Source {
    pub kind: Kind,
    pub track: u32,
    kbps: u32,
    next_due: Instant,
    frame: u64,
    seq: u64,
    counter: u32,
    rtp_time: u32,
    keyframe_requested: bool,
}

impl Source {
    pub fn new(kind: Kind, track: u32, kbps: u32, start: Instant) -> Self {
        Self {
            kind,
            track,
            kbps: kbps.max(1),
            next_due: start + phase(track, period_of(kind)),
            frame: 0,
            // Arbitrary but fixed: receivers must not rely on a zero start.
            seq: 1000,
            counter: 0,
            rtp_time: 0,
            keyframe_requested: false,
        }
    }

    fn period(&self) -> Duration {
        period_of(self.kind)
    }

    /// A PLI/FIR: the next video frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Packets of every frame due by `now`; `clock` maps an instant to the
    /// trailer's `sent_ns`.
    pub fn poll(&mut self, now: Instant, clock: impl Fn(Instant) -> u64) -> Vec<Packet> {
        let mut out = Vec::new();
        let mut sent = 0;
        while self.next_due <= now {
            if sent == MAX_CATCH_UP {
                // Too far behind (a stalled thread): skip rather than burst.
                self.next_due = now + self.period();
                break;
            }
            let sent_ns = clock(now);
            match self.kind {
                Kind::Audio => self.audio_frame(sent_ns, &mut out),
                Kind::Video => self.video_frame(sent_ns, &mut out),
            }
            self.frame += 1;
            self.next_due += self.period();
            sent += 1;
        }
        out
    }

    fn push(&mut self, mut payload: Vec<u8>, marker: bool, sent_ns: u64, out: &mut Vec<Packet>) {
        Trailer { track: self.track, counter: self.counter, sent_ns }.write(&mut payload);
        self.counter = self.counter.wrapping_add(1);
        out.push(Packet { payload, seq: self.seq, rtp_time: self.rtp_time, marker });
        self.seq += 1;
    }

    fn audio_frame(&mut self, sent_ns: u64, out: &mut Vec<Packet>) {
        let bytes = (self.kbps as usize * 1000 / 8 / 50).max(TRAILER_LEN + 4);
        let mut payload = vec![0x55u8; bytes];
        // Opus TOC: SILK wideband, 20 ms, one frame.
        payload[0] = 0x48;
        self.push(payload, true, sent_ns, out);
        self.rtp_time = self.rtp_time.wrapping_add(AUDIO_TICKS);
    }

    fn video_frame(&mut self, sent_ns: u64, out: &mut Vec<Packet>) {
        let key = self.frame.is_multiple_of(KEYFRAME_EVERY) || self.keyframe_requested;
        self.keyframe_requested = false;
        // Average rate = kbps with one keyframe (KEYFRAME_FACTOR deltas) per cycle.
        let per_cycle = self.kbps as u64 * 1000 / 8 * KEYFRAME_EVERY / VIDEO_FPS as u64;
        let delta = per_cycle / (KEYFRAME_EVERY - 1 + KEYFRAME_FACTOR);
        let frame_bytes = (if key { delta * KEYFRAME_FACTOR } else { delta }).max(16) as usize;

        let mut header = Vec::with_capacity(10);
        if key {
            // Frame tag (P=0, show_frame), start code, 1280x720.
            header.extend_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
        } else {
            header.extend_from_slice(&[0x11, 0x00, 0x00]);
        }
        let room = MAX_PAYLOAD - VP8_DESCRIPTOR_LEN - TRAILER_LEN;
        let mut left = frame_bytes.max(header.len());
        let picture_id = (self.frame & 0x7fff) as u16;
        let mut first = true;
        while left > 0 {
            let chunk = left.min(room);
            left -= chunk;
            let mut payload = Vec::with_capacity(VP8_DESCRIPTOR_LEN + chunk + TRAILER_LEN);
            payload.push(if first { 0x90 } else { 0x80 });
            payload.push(0x80);
            payload.push(0x80 | (picture_id >> 8) as u8);
            payload.push(picture_id as u8);
            if first {
                payload.extend_from_slice(&header);
                payload.resize(VP8_DESCRIPTOR_LEN + chunk.max(header.len()), 0x55);
            } else {
                payload.resize(VP8_DESCRIPTOR_LEN + chunk, 0x55);
            }
            payload.resize(payload.len() + TRAILER_LEN, 0);
            self.push(payload, left == 0, sent_ns, out);
            first = false;
        }
        self.rtp_time = self.rtp_time.wrapping_add(VIDEO_TICKS);
    }
}

fn period_of(kind: Kind) -> Duration {
    match kind {
        Kind::Audio => AUDIO_PERIOD,
        Kind::Video => Duration::from_secs(1) / VIDEO_FPS,
    }
}

/// Where in its frame period a track starts. Independent clients are not in step;
/// sources started together on one generator tick would be, and every speaker's
/// packet would reach the server in the same burst. Spread by the golden ratio so
/// that any number of tracks covers the period evenly, the same way every run.
fn phase(track: u32, period: Duration) -> Duration {
    let fraction = (f64::from(track) * 0.618_033_988_749_895).fract();
    period.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pysfu_engine::keyframe::{is_keyframe_start, CodecKind};

    #[test]
    fn trailer_round_trip_and_foreign_payloads() {
        let mut p = vec![7u8; 50];
        let t = Trailer { track: 3, counter: 99, sent_ns: 123_456_789 };
        t.write(&mut p);
        assert_eq!(Trailer::read(&p), Some(t));
        assert_eq!(Trailer::read(&[0u8; 50]), None);
        assert_eq!(Trailer::read(&[1, 2, 3]), None);
    }

    #[test]
    fn audio_rate_and_counters() {
        let start = Instant::now();
        let mut s = Source::new(Kind::Audio, 1, 32, start);
        let mut packets = Vec::new();
        for ms in (0..1000).step_by(5) {
            packets.extend(s.poll(start + Duration::from_millis(ms), |_| 0));
        }
        assert_eq!(packets.len(), 50);
        assert!(packets.iter().all(|p| p.payload.len() == 80));
        let counters: Vec<u32> = packets.iter().map(|p| Trailer::read(&p.payload).unwrap().counter).collect();
        assert_eq!(counters, (0..50).collect::<Vec<_>>());
        assert_eq!(packets[1].rtp_time - packets[0].rtp_time, 960);
    }

    #[test]
    fn video_keyframes_parse_as_vp8_keyframes_and_rate_matches() {
        let start = Instant::now();
        let mut s = Source::new(Kind::Video, 2, 1500, start);
        let mut packets = Vec::new();
        for ms in (0..2000).step_by(5) {
            packets.extend(s.poll(start + Duration::from_millis(ms), |_| 0));
        }
        let keys = packets.iter().filter(|p| is_keyframe_start(CodecKind::Vp8, &p.payload)).count();
        assert_eq!(keys, 1, "one keyframe per 2 s");
        assert!(is_keyframe_start(CodecKind::Vp8, &packets[0].payload));
        let bytes: usize = packets.iter().map(|p| p.payload.len()).sum();
        // 2 s at 1500 kbps, plus per-packet descriptor/trailer overhead.
        assert!((375_000..=420_000).contains(&bytes), "{bytes}");
        assert!(packets.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        let markers = packets.iter().filter(|p| p.marker).count();
        assert_eq!(markers, 60, "one marker per frame");
        s.request_keyframe();
        let next = s.poll(start + Duration::from_millis(2100), |_| 0);
        assert!(is_keyframe_start(CodecKind::Vp8, &next[0].payload));
    }

    #[test]
    fn tracks_start_spread_over_their_period() {
        let start = Instant::now();
        let mut firsts: Vec<Duration> = (0..10)
            .map(|track| {
                let mut s = Source::new(Kind::Audio, track, 32, start);
                let t = (0..40u64)
                    .map(|ms| start + Duration::from_millis(ms))
                    .find(|&t| !s.poll(t, |_| 0).is_empty())
                    .unwrap();
                t - start
            })
            .collect();
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() >= 8, "ten speakers in step: {firsts:?}");
        assert!(firsts.iter().all(|d| *d < AUDIO_PERIOD));
    }

    #[test]
    fn a_stalled_loop_does_not_burst() {
        let start = Instant::now();
        let mut s = Source::new(Kind::Audio, 1, 32, start);
        let n = s.poll(start + Duration::from_secs(10), |_| 0).len();
        assert_eq!(n, MAX_CATCH_UP as usize);
    }
}
