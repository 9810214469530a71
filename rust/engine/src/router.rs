//! Who forwards to whom: published tracks, their simulcast layers and the
//! per-subscriber down tracks with their forwarding state. Pure bookkeeping and
//! decisions; the str0m calls live in `core`.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

pub mod allocator;
pub mod audio;
pub mod audio_history;
pub mod forwarder;
pub mod red;
pub mod temporal;

use self::allocator::{Demand, Pause};
use self::audio::LevelMeter;
use self::audio_history::AudioHistory;
use self::forwarder::Forwarder;
use self::temporal::{FrameRates, Temporal};
use crate::keyframe::CodecKind;
use crate::shard::ShardId;
use crate::PeerKey;

/// Index of a published track.
pub type TrackKey = u32;

/// Minimum spacing of keyframe requests sent to a publisher for one layer: a
/// keyframe costs several frames of bitrate, and libwebrtc itself rate-limits.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// The same spacing for a mirror's requests to its home shard (`crate::shard`).
/// The home throttles what reaches the publisher; a mirror asking as rarely as
/// the home would, out of phase with it, could make its subscribers wait twice
/// the interval.
pub const MIRROR_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(100);

/// A layer that has not carried media for this long is not chosen for a
/// subscriber (simulcast layers pause when the publisher lacks bandwidth).
pub const LAYER_STALE_AFTER: Duration = Duration::from_millis(1500);

/// rids of LiveKit's simulcast qualities LOW, MEDIUM, HIGH.
pub const QUALITY_RIDS: [&str; 3] = ["q", "h", "f"];

/// One incoming encoding of a track (a simulcast layer, or the only one).
#[derive(Debug)]
pub struct Layer {
    pub rid: Option<Rid>,
    pub ssrc: Ssrc,
    pub last_seen: Instant,
    pub paused: bool,
    pub last_keyframe_request: Option<Instant>,
    /// Payload bytes since the last `measure`.
    pub bytes: u64,
    /// Bitrate over the last measuring interval (bit/s), once measured.
    pub bitrate: Option<u64>,
    /// VP8 frames per temporal layer, and the frame rate each gives.
    pub frame_rates: FrameRates,
}

impl Layer {
    /// Quality index of the rid: q/h/f as LiveKit, unknown rids by order seen.
    fn quality(&self) -> u8 {
        forwarder::quality(self.rid)
    }
}

/// A publisher m-line bound to a server track id.
#[derive(Debug)]
pub struct Track {
    pub id: String,
    pub publisher: PeerKey,
    pub mid: Mid,
    pub kind: MediaKind,
    pub muted: bool,
    pub layers: Vec<Layer>,
    pub downs: Vec<DownTrack>,
    /// Codec per incoming payload type, learnt from the publisher's negotiation.
    pub codecs: Vec<(Pt, CodecKind)>,
    /// Audio tracks: levels since the last summary (see `audio`).
    pub level: Option<LevelMeter>,
    /// A mirror of a track homed on another shard (`crate::shard`): `publisher`
    /// names no peer here, media arrives relayed, keyframe requests go home.
    pub origin: Option<ShardId>,
    /// Home tracks: the shards whose mirrors get every packet.
    pub followers: Vec<ShardId>,
    /// `id`, shared by the messages that name the track across shards.
    pub relay_id: Arc<str>,
    /// RED audio: which packets arrived, for recovering lost ones (`red`).
    pub red_received: red::Received,
}

/// Forwarding state of one track towards one subscriber peer.
#[derive(Debug)]
pub struct DownTrack {
    pub sub: PeerKey,
    pub stream_id: String,
    /// False after unsubscribe: the m-line stays, nothing is sent.
    pub active: bool,
    /// Subscriber m-line, once an offer carried it.
    pub mid: Option<Mid>,
    /// How many earlier m-lines this subscriber had for the track (resubscribes).
    pub generation: u32,
    pub tx_ssrc: Option<Ssrc>,
    /// Requested quality 0..=2.
    pub quality: u8,
    /// Highest quality the subscriber's bandwidth allows (the allocator's choice;
    /// 2 until it has an estimate). Forwarded: `min(quality, cap)`.
    pub cap: u8,
    /// The subscriber disabled the track (UpdateTrackSettings.disabled: adaptive
    /// stream hides video nobody looks at): nothing is sent, the m-line stays.
    pub disabled: bool,
    /// Frame rate the subscriber asked for (UpdateTrackSettings.fps; 0: any): VP8
    /// temporal layers above what gives it are not sent (see `temporal`).
    pub fps: u32,
    /// The subscriber's priority for the track (UpdateTrackSettings.priority; 1 the
    /// highest, 0 unset): the allocator serves higher ones first.
    pub priority: u32,
    /// Forwarding state and output numbering (see `forwarder`).
    pub fwd: Forwarder,
    /// Incoming pt -> outgoing pt on the subscriber (None: codec not negotiated
    /// there) and whether only the RED primary goes out (RED in, no RED there).
    pub pt_map: Vec<(Pt, Option<(Pt, bool)>)>,
    /// Audio: the packets sent last, to answer the subscriber's NACKs (see
    /// `audio_history`). None for video, which str0m resends through RTX.
    pub sent_audio: Option<AudioHistory>,
    /// Paused by the allocator: even the lowest layer does not fit the subscriber's
    /// bandwidth estimate (video only; nothing is sent while paused).
    pub bw_pause: Pause,
}

impl DownTrack {
    /// A fresh down track; the mapping starts on the first usable packet.
    pub fn new(sub: PeerKey, stream_id: String, kind: MediaKind, seed: u64) -> Self {
        let clock = if kind == MediaKind::Audio { 48_000 } else { 90_000 };
        Self {
            sub,
            stream_id,
            active: true,
            mid: None,
            generation: 0,
            tx_ssrc: None,
            quality: 2,
            cap: 2,
            disabled: false,
            fps: 0,
            priority: 0,
            fwd: Forwarder::new(clock, seed),
            pt_map: Vec::new(),
            sent_audio: (kind == MediaKind::Audio).then(AudioHistory::default),
            bw_pause: Pause::default(),
        }
    }

    /// The msid track id of this down track's m-line. libwebrtc rejects an SDP
    /// whose m-lines repeat an msid, and a resubscription's m-line sits next to
    /// the retired one; the SDKs take the track sid from the stream id
    /// (`PA_…|TR_…`), so only the first m-line carries the bare track id.
    pub fn msid_track_id(&self, track_id: &str) -> String {
        match self.generation {
            0 => track_id.to_string(),
            n => format!("{track_id}~{n}"),
        }
    }

    /// Stop forwarding until the next switch point (keyframe for video).
    pub fn pause(&mut self) {
        self.fwd.stop();
    }
}

/// What a forwarded packet costs on a subscriber's link beyond its payload: RTP
/// header with the extensions forwarded (~24), SRTP tag (16), UDP/IPv4 (28). A
/// layer measured by payload alone looks ~7 % cheaper than it is at video's packet
/// sizes, enough for the allocator to choose a layer that just does not fit.
pub const WIRE_OVERHEAD_BYTES: usize = 68;

impl Track {
    /// Record that a packet of layer (rid, ssrc) arrived, with `bytes` of payload
    /// (counted with `WIRE_OVERHEAD_BYTES`, what it costs a subscriber's link).
    /// `temporal`: the packet's VP8 temporal fields, counted per frame.
    pub fn saw_layer(&mut self, rid: Option<Rid>, ssrc: Ssrc, bytes: usize, temporal: Option<Temporal>, now: Instant) {
        let bytes = if bytes == 0 { 0 } else { bytes + WIRE_OVERHEAD_BYTES };
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(Layer {
                    rid,
                    ssrc,
                    last_seen: now,
                    paused: false,
                    last_keyframe_request: None,
                    bytes: 0,
                    bitrate: None,
                    frame_rates: FrameRates::default(),
                });
                self.layers.len() - 1
            }
        };
        let l = &mut self.layers[i];
        l.last_seen = now;
        l.ssrc = ssrc;
        l.paused = false;
        l.bytes += bytes as u64;
        if let Some(t) = temporal {
            l.frame_rates.saw(t);
        }
    }

    /// Turn the bytes counted over the last `elapsed` into layer bitrates.
    pub fn measure(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        for l in &mut self.layers {
            l.bitrate = Some((l.bytes as f64 * 8.0 / secs) as u64);
            l.bytes = 0;
            l.frame_rates.measure(secs);
        }
    }

    /// What a subscriber asking for `requested`, at `priority` (UpdateTrackSettings;
    /// 0 unset), could take of this track now.
    pub fn demand(&self, requested: u8, priority: u32, now: Instant) -> Demand {
        let mut layers = [None; 3];
        for l in &self.layers {
            let live = !l.paused && now.saturating_duration_since(l.last_seen) < LAYER_STALE_AFTER;
            if live {
                layers[usize::from(l.quality())] = Some(l.bitrate.unwrap_or(0));
            }
        }
        Demand { requested, layers, rank: allocator::rank(priority) }
    }

    /// The layer a subscriber asking for `quality` should get: the best live
    /// layer not above it, else the lowest live layer, else any known layer.
    pub fn select_rid(&self, quality: u8, now: Instant) -> Option<Option<Rid>> {
        let live = |l: &&Layer| !l.paused && now.saturating_duration_since(l.last_seen) < LAYER_STALE_AFTER;
        let best_below = self
            .layers
            .iter()
            .filter(live)
            .filter(|l| l.quality() <= quality)
            .max_by_key(|l| l.quality());
        let lowest = || self.layers.iter().filter(live).min_by_key(|l| l.quality());
        let any = || self.layers.iter().min_by_key(|l| l.quality());
        best_below.or_else(lowest).or_else(any).map(|l| l.rid)
    }

    /// Whether a keyframe request for this layer may go out now (and note it).
    pub fn keyframe_request_due(&mut self, rid: Option<Rid>, now: Instant) -> bool {
        let interval = if self.origin.is_some() { MIRROR_KEYFRAME_REQUEST_INTERVAL } else { KEYFRAME_REQUEST_INTERVAL };
        let Some(l) = self.layers.iter_mut().find(|l| l.rid == rid) else {
            // No media seen on it yet: nothing to throttle against.
            return true;
        };
        match l.last_keyframe_request {
            Some(t) if now.saturating_duration_since(t) < interval => false,
            _ => {
                l.last_keyframe_request = Some(now);
                true
            }
        }
    }

    /// Codec of an incoming payload type, if known.
    pub fn codec_of(&self, pt: Pt) -> Option<CodecKind> {
        self.codecs.iter().find(|(p, _)| *p == pt).map(|(_, c)| *c)
    }
}

/// All tracks and their lookup tables.
#[derive(Debug, Default)]
pub struct Router {
    pub tracks: HashMap<TrackKey, Track>,
    pub by_id: HashMap<String, TrackKey>,
    pub by_pub_mid: HashMap<(PeerKey, Mid), TrackKey>,
    pub by_sub_mid: HashMap<(PeerKey, Mid), TrackKey>,
    next: TrackKey,
}

impl Router {
    /// Bind a publisher m-line to a track id.
    pub fn publish(&mut self, track: Track) -> TrackKey {
        let key = self.next;
        self.next = self.next.wrapping_add(1);
        self.by_id.insert(track.id.clone(), key);
        if track.origin.is_none() {
            self.by_pub_mid.insert((track.publisher, track.mid), key);
        }
        self.tracks.insert(key, track);
        key
    }

    /// Remove a track; returns it so the caller can retire subscriber m-lines.
    pub fn unpublish(&mut self, key: TrackKey) -> Option<Track> {
        let track = self.tracks.remove(&key)?;
        self.by_id.remove(&track.id);
        if track.origin.is_none() {
            self.by_pub_mid.remove(&(track.publisher, track.mid));
        }
        self.by_sub_mid.retain(|_, k| *k != key);
        Some(track)
    }

    /// Track key by server track id.
    pub fn key_of(&self, id: &str) -> Option<TrackKey> {
        self.by_id.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> Track {
        Track {
            id: "TR".into(),
            publisher: 1,
            mid: "0".into(),
            kind: MediaKind::Video,
            muted: false,
            layers: Vec::new(),
            downs: Vec::new(),
            codecs: Vec::new(),
            level: None,
            origin: None,
            followers: Vec::new(),
            relay_id: "TR".into(),
            red_received: Default::default(),
        }
    }

    #[test]
    fn layer_selection_prefers_best_live_layer_not_above_request() {
        let now = Instant::now();
        let mut t = track();
        assert_eq!(t.select_rid(2, now), None);
        for (i, rid) in QUALITY_RIDS.iter().enumerate() {
            t.saw_layer(Some((*rid).into()), Ssrc::from(i as u32 + 1), 0, None, now);
        }
        assert_eq!(t.select_rid(2, now), Some(Some("f".into())));
        assert_eq!(t.select_rid(1, now), Some(Some("h".into())));
        assert_eq!(t.select_rid(0, now), Some(Some("q".into())));
        // HIGH paused: HIGH subscribers fall back to MEDIUM.
        t.layers[2].paused = true;
        assert_eq!(t.select_rid(2, now), Some(Some("h".into())));
        // Only HIGH alive and LOW requested: lowest live layer.
        t.layers[2].paused = false;
        let later = now + LAYER_STALE_AFTER * 2;
        t.saw_layer(Some("f".into()), Ssrc::from(3), 0, None, later);
        assert_eq!(t.select_rid(0, later), Some(Some("f".into())));
    }

    #[test]
    fn a_layer_is_measured_at_its_cost_on_the_wire() {
        let now = Instant::now();
        let mut t = track();
        // 100 packets of 1000 payload bytes in one second.
        for _ in 0..100 {
            t.saw_layer(Some("q".into()), Ssrc::from(1), 1000, None, now);
        }
        t.measure(Duration::from_secs(1));
        let wire = 100 * (1000 + WIRE_OVERHEAD_BYTES as u64) * 8;
        assert_eq!(t.demand(2, 0, now).layers[0], Some(wire));
    }

    #[test]
    fn keyframe_requests_are_throttled_per_layer() {
        let now = Instant::now();
        let mut t = track();
        t.saw_layer(None, Ssrc::from(1), 0, None, now);
        assert!(t.keyframe_request_due(None, now));
        assert!(!t.keyframe_request_due(None, now + Duration::from_millis(10)));
        assert!(t.keyframe_request_due(None, now + KEYFRAME_REQUEST_INTERVAL));
        // A mirror asks its home more often; the home throttles the publisher.
        let mut m = track();
        m.origin = Some(0);
        m.saw_layer(None, Ssrc::from(1), 0, None, now);
        assert!(m.keyframe_request_due(None, now));
        assert!(!m.keyframe_request_due(None, now + MIRROR_KEYFRAME_REQUEST_INTERVAL / 2));
        assert!(m.keyframe_request_due(None, now + MIRROR_KEYFRAME_REQUEST_INTERVAL));
    }
}
