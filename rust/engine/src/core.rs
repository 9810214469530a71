//! The sans-IO heart of the engine: peers, demux and forwarding, driven by
//! commands, datagrams and time. No threads, no sockets (those live in `runloop`),
//! so tests and benches can drive it directly.
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::config::CryptoProvider;
use str0m::crypto::dtls::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Vp8Descriptor};
use str0m::bwe::{Bitrate, BweKind};
use str0m::format::Codec;
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc, RtcConfig};

mod audio_nack;

use crate::demux::{Demux, Drop, Route, Transport};
use crate::error::{EngineError, Result};
use crate::event::MediaEvent;
use crate::keyframe::{is_keyframe_start, CodecKind};
use crate::link_stats::LINK_STATS_INTERVAL;
use crate::peer::{Peer, Role, Sink, LABEL_LOSSY, LABEL_RELIABLE};
use crate::router::allocator::allocate;
use crate::router::audio::{LevelMeter, LEVEL_INTERVAL};
use crate::router::audio_history::SentAudio;
use crate::router::forwarder::{Decision, Packet};
use crate::router::red::{self, Primary};
use crate::router::temporal;
use crate::router::{DownTrack, Router, Track, TrackKey};
use crate::sdp;
use crate::shard::{shard_of, CrossMsg, Incoming, Relayed, ShardId, ShardLink};
use crate::{Counters, PeerKey};

/// The longest the run loop sleeps without looking at peers' timers.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Forwarded RTP waits for a flush at most this long while a turn reads on: a
/// burst of 64 video packets fanned out to hundreds of subscribers is tens of
/// milliseconds of work, and batching all of it before the first send would put
/// that in every packet's latency. Flushing a millisecond's work at a time keeps
/// most of the batching (one str0m poll per subscriber per flush).
pub const FLUSH_WITHIN: Duration = Duration::from_millis(1);

/// How long ICE may stay disconnected before the peer is given up, unless the
/// engine is configured otherwise (`set_ice_disconnected_grace`). str0m reports
/// Disconnected as soon as its checks lapse, and a busy client or a brief network
/// stall recovers from that, as browsers treat "disconnected" as transient.
pub const ICE_DISCONNECTED_GRACE: Duration = Duration::from_secs(10);

/// Changes a subscriber offer must carry (see `Core::offer_plan`).
#[derive(Default)]
struct OfferPlan {
    directions: Vec<(Mid, Direction)>,
    to_add: Vec<(TrackKey, MediaKind, String, String)>,
}

impl OfferPlan {
    fn is_empty(&self) -> bool {
        self.directions.is_empty() && self.to_add.is_empty()
    }
}

/// A subscriber's bandwidth estimate starts here (str0m then follows TWCC
/// feedback): high enough that a local link never starts capped.
pub const INITIAL_BWE: Bitrate = Bitrate::kbps(2_500);

/// Drop summaries are logged at most this often: the port is public, and a log
/// line per junk datagram would cost more than the datagram.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Engine state. `S` is where datagrams go (the UDP socket, or a test sink).
/// How a stats event states a stream's losses.
enum Loss {
    /// Cumulative packets lost, as the remote's receiver reports say (egress).
    Reported(Option<u64>),
    /// The fraction lost in the last report we sent (ingress).
    Fraction(Option<f32>),
}

/// How often str0m reports each stream's RTCP feedback counts.
const FEEDBACK_STATS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Core<S: Sink> {
    sink: S,
    /// The address we advertise in candidates and hand to str0m as destination.
    local_addr: SocketAddr,
    /// Every advertised UDP host candidate (`local_addr` first).
    udp_addrs: Vec<SocketAddr>,
    /// Advertised passive ICE-TCP host candidates (none without a TCP port).
    tcp_addrs: Vec<SocketAddr>,
    crypto: Arc<CryptoProvider>,
    cert: Option<DtlsCert>,
    /// Boxed: an `Rtc` is kilobytes, and a table of them inline would carry its
    /// growth slack and reallocation copies in every empty bucket.
    peers: HashMap<PeerKey, Box<Peer>>,
    names: HashMap<String, PeerKey>,
    next_key: PeerKey,
    demux: Demux,
    router: Router,
    /// str0m events awaiting handling; filled by `Peer::drain`.
    work: Vec<(PeerKey, Event)>,
    work_queue: VecDeque<(PeerKey, Event)>,
    /// Subscribers with RTP written but not yet sent; see `flush`.
    dirty: Vec<PeerKey>,
    /// When the oldest write still in `dirty` was made.
    dirty_since: Option<Instant>,
    /// Events for the control plane.
    pub events: Vec<MediaEvent>,
    pub counters: Counters,
    /// Per stream, the cumulative (FIR, PLI, NACK, packets, lost) counts of its last
    /// str0m stats event: the engine-wide counters grow by the difference, so they
    /// survive peers.
    feedback_seen: HashMap<(PeerKey, Mid, Option<Rid>, bool), [u64; 5]>,
    seed: u64,
    drop_logged_at: Option<Instant>,
    drops_since_log: u64,
    ice_grace: Duration,
    /// Next `AudioLevels` event; whether the last one had levels (one empty
    /// event follows the last, so the control plane sees speech end).
    levels_due: Option<Instant>,
    levels_reported: bool,
    /// Next `LinkStats` event.
    links_due: Option<Instant>,
    /// When layer bitrates were last measured.
    measured_at: Option<Instant>,
    /// Peers get bandwidth estimation when on (see `set_bandwidth_estimation`).
    bwe: bool,
    /// This core's place among the shards, when there are several.
    shard: Option<ShardLink>,
    /// Peer keys advance by this (the shard count): see `crate::shard`.
    key_stride: u32,
    /// Messages for other shards, delivered by the run loop after each turn.
    pub outbox: Vec<(ShardId, CrossMsg)>,
    /// Audio NACK both ways (see `set_audio_nack`).
    audio_nack: bool,
    /// Whether the allocator may pause a video down track whose lowest layer does
    /// not fit the estimate (see `set_allow_pause`).
    allow_pause: bool,
}

/// What a follower shard needs to mirror a track (`Core::follow_track`).
#[derive(Debug, Clone)]
pub struct TrackExport {
    pub id: String,
    pub home: ShardId,
    pub kind: MediaKind,
    pub muted: bool,
    pub codecs: Vec<(str0m::media::Pt, CodecKind)>,
    pub layers: Vec<(Option<Rid>, str0m::rtp::Ssrc)>,
}

/// The `publisher` of a mirror track: keys start at 1, so no peer has it.
const NO_PEER: PeerKey = 0;

impl<S: Sink> Core<S> {
    /// A core that advertises `local_addr` and sends through `sink`.
    pub fn new(sink: S, local_addr: SocketAddr) -> Self {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        // One certificate for all peers: generating one costs a key pair per peer.
        let cert = crypto.dtls_provider.generate_certificate();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Self {
            sink,
            local_addr,
            udp_addrs: vec![local_addr],
            tcp_addrs: Vec::new(),
            crypto,
            cert,
            peers: HashMap::new(),
            names: HashMap::new(),
            next_key: 1,
            demux: Demux::default(),
            router: Router::default(),
            work: Vec::new(),
            work_queue: VecDeque::new(),
            dirty: Vec::new(),
            dirty_since: None,
            events: Vec::new(),
            counters: Counters::default(),
            feedback_seen: HashMap::new(),
            seed,
            drop_logged_at: None,
            drops_since_log: 0,
            ice_grace: ICE_DISCONNECTED_GRACE,
            levels_due: None,
            levels_reported: false,
            links_due: None,
            measured_at: None,
            bwe: false,
            shard: None,
            key_stride: 1,
            outbox: Vec::new(),
            audio_nack: true,
            allow_pause: false,
        }
    }

    /// Make this core shard `link.id` of `link.fabric`: peer keys unique across the
    /// shards, unknown datagrams looked up in the shared directory. Before any peer.
    pub fn set_shard(&mut self, link: ShardLink) {
        self.next_key = link.id as PeerKey + 1;
        self.key_stride = link.fabric.shards().max(1) as PeerKey;
        self.shard = Some(link);
    }

    /// This core's place among the shards, if any.
    pub fn shard_link(&self) -> Option<ShardLink> {
        self.shard.clone()
    }

    /// Hand the turn's messages for other shards to the fabric.
    pub fn deliver_outbox(&mut self) {
        let Some(link) = &self.shard else {
            self.outbox.clear();
            return;
        };
        if let Some(frames) = self.sink.stream_frames() {
            for (dest, data) in frames {
                self.outbox.push((0, CrossMsg::StreamOut { dest, data }));
            }
        }
        link.fabric.deliver(&mut self.outbox);
    }

    fn first_key(&self) -> PeerKey {
        self.shard.as_ref().map_or(1, |l| l.id as PeerKey + 1)
    }

    /// How long a peer's ICE may stay Disconnected before it is closed, for peers
    /// added from now on. A control plane that keeps a participant's session through
    /// a resume window sets this to at least that window.
    pub fn set_ice_disconnected_grace(&mut self, grace: Duration) {
        self.ice_grace = grace;
    }

    /// Whether subscriber peers added from now on estimate their bandwidth (TWCC)
    /// and have their video layers chosen within it (`allocate`).
    pub fn set_bandwidth_estimation(&mut self, on: bool) {
        self.bwe = on;
    }

    /// Whether peers added from now on negotiate NACK for Opus, NACK lost audio and
    /// answer audio NACKs (`audio_nack`); their raw packet events cost a copy of
    /// every packet.
    pub fn set_audio_nack(&mut self, on: bool) {
        self.audio_nack = on;
    }

    /// Whether a video down track whose lowest layer does not fit its subscriber's
    /// estimate is paused (and the subscriber told, StreamStateUpdate) or keeps its
    /// lowest layer. Off by default, as the reference's `allow_pause`: a congested
    /// subscriber keeps degraded video rather than none.
    pub fn set_allow_pause(&mut self, on: bool) {
        self.allow_pause = on;
    }

    /// Where datagrams go.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The advertised local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Advertise these UDP host candidates (at least one) and passive TCP host
    /// candidates, for peers added from now on. A packet is handed to str0m as sent
    /// to the advertised address it reached (see `destination`).
    pub fn set_addresses(&mut self, udp: Vec<SocketAddr>, tcp: Vec<SocketAddr>) {
        if let Some(first) = udp.first() {
            self.local_addr = *first;
            self.udp_addrs = udp;
        }
        self.tcp_addrs = tcp;
    }

    /// Our host candidates: every UDP address, then every passive TCP one.
    fn host_candidates(&self) -> Result<Vec<Candidate>> {
        let bad = |e| EngineError::Io(format!("host candidate: {e}"));
        let mut out = Vec::new();
        for a in &self.udp_addrs {
            out.push(Candidate::host(*a, "udp").map_err(bad)?);
        }
        for a in &self.tcp_addrs {
            out.push(Candidate::builder().tcp().host(*a).tcptype(TcpType::Passive).build().map_err(bad)?);
        }
        Ok(out)
    }

    /// Which advertised address a packet from `source` that reached local IP `dest`
    /// was sent to: the candidate with that IP, else (a NAT mapping an external
    /// address to this host, or an unknown destination) the first of the source's
    /// family, else the first. str0m drops STUN not sent to a host candidate.
    fn destination(addrs: &[SocketAddr], dest: Option<IpAddr>, source: SocketAddr) -> Option<SocketAddr> {
        if let Some(ip) = dest {
            if let Some(a) = addrs.iter().find(|a| a.ip() == ip) {
                return Some(*a);
            }
        }
        addrs.iter().find(|a| a.is_ipv4() == source.is_ipv4()).or(addrs.first()).copied()
    }

    /// Fuzz hook: a peer's `Rtc`, to install known SRTP keys and read ICE credentials.
    #[cfg(any(test, feature = "fuzz"))]
    #[doc(hidden)]
    pub fn _rtc_mut(&mut self, peer_id: &str) -> Option<&mut Rtc> {
        let key = self.names.get(peer_id)?;
        self.peers.get_mut(key).map(|p| &mut p.rtc)
    }

    /// Fuzz hook: treat a peer as connected, as its DTLS handshake would; the fuzz
    /// worlds install known SRTP keys instead of running one.
    #[cfg(any(test, feature = "fuzz"))]
    #[doc(hidden)]
    pub fn _mark_connected(&mut self, peer_id: &str) {
        if let Some(p) = self.names.get(peer_id).and_then(|k| self.peers.get_mut(k)) {
            p.connected = true;
        }
    }

    /// Test hook: when the peer's ICE went Disconnected, if it is now.
    #[cfg(test)]
    pub(crate) fn _ice_lost_at(&self, peer_id: &str) -> Option<Instant> {
        self.peers.get(self.names.get(peer_id)?)?.ice_lost_at
    }

    /// Fuzz hook: routing-table sizes (peers, tracks, demux addresses, sub-mid entries),
    /// to check that removed peers leave nothing behind.
    #[cfg(any(test, feature = "fuzz"))]
    #[doc(hidden)]
    pub fn _table_sizes(&self) -> (usize, usize, usize, usize) {
        (self.peers.len(), self.router.tracks.len(), self.demux.addr_count(), self.router.by_sub_mid.len())
    }

    fn next_seed(&mut self) -> u64 {
        // xorshift64*: cheap, good enough for initial seq/ts randomisation.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn rtc_config(&self) -> RtcConfig {
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .clear_codecs()
            // Opus with RED (RFC 2198) folded onto it: accepted when publishers offer
            // it and offered to subscribers, as the reference does (`router::red`).
            .enable_opus(true, true)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            // Per-stream RTCP feedback counts (NACK/PLI/FIR) for the metrics, and
            // each peer's link stats for connection quality (LinkStats).
            .set_stats_interval(Some(FEEDBACK_STATS_INTERVAL))
            // Subscribers' NACKs for audio, which str0m cannot resend (`audio_nack`).
            .enable_raw_packets(self.audio_nack);
        // Audio NACK both ways, as the reference negotiates it (`a=rtcp-fb:<opus> nack`).
        let audio_nack = self.audio_nack;
        cfg.codec_config().iter_mut().filter(|p| p.spec().codec == Codec::Opus).for_each(|p| p.set_fb_nack(audio_nack));
        if let Some(cert) = &self.cert {
            cfg = cfg.set_dtls_cert(cert.clone());
        }
        cfg
    }

    fn key_of(&self, peer_id: &str) -> Result<PeerKey> {
        self.names
            .get(peer_id)
            .copied()
            .ok_or_else(|| EngineError::UnknownPeer(peer_id.to_string()))
    }

    fn peer_mut(&mut self, peer_id: &str) -> Result<&mut Peer> {
        let key = self.key_of(peer_id)?;
        Ok(self.peers.get_mut(&key).expect("names and peers are kept in step"))
    }

    fn peer_with_role(&mut self, peer_id: &str, role: Role) -> Result<&mut Peer> {
        let peer = self.peer_mut(peer_id)?;
        if peer.role != role {
            return Err(EngineError::WrongPeerRole {
                peer: peer_id.to_string(),
                expected: match role {
                    Role::Publisher => "publisher",
                    Role::Subscriber => "subscriber",
                },
            });
        }
        Ok(peer)
    }

    /// Drain one peer's output into the work list.
    ///
    /// The one place a dead `Rtc` is noticed: the drain serves due timeouts itself
    /// (str0m's pacer), so one of them may be what closed it, and a closed `Rtc`
    /// never asks for another timeout.
    fn drain(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if !peer.drain(&mut self.sink, &mut self.work, &mut self.counters, now) {
            self.fail_peer(key, "webrtc error");
        } else if !peer.rtc.is_alive() && !peer.closed {
            self.fail_peer(key, "closed");
        }
    }

    fn fail_peer(&mut self, key: PeerKey, reason: &str) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if !peer.closed {
            peer.closed = true;
            peer.rtc.disconnect();
            self.events.push(MediaEvent::PeerClosed {
                peer_id: peer.id.clone(),
                reason: reason.to_string(),
            });
        }
    }

    // ---------------------------------------------------------------- commands

    /// Create a peer. Subscriber peers get their data channels in the first offer.
    pub fn add_peer(&mut self, peer_id: &str, role: Role, now: Instant) -> Result<()> {
        if self.names.contains_key(peer_id) {
            return Err(EngineError::PeerExists(peer_id.to_string()));
        }
        let mut cfg = self.rtc_config();
        if self.bwe {
            // Per-subscriber bandwidth estimation feeds the layer allocator. Every
            // peer gets it: with /rtc/v1 one peer both publishes and subscribes, and a
            // peer that forwards nothing is never asked to probe (see `allocate`).
            cfg = cfg.enable_bwe(Some(INITIAL_BWE));
        }
        let mut rtc = cfg.build(now);
        for candidate in self.host_candidates()? {
            rtc.add_local_candidate(candidate);
        }
        // Until str0m has handled one timeout its ICE agent asks for none, and the
        // first drain would leave the peer with a far-off deadline.
        rtc.handle_input(Input::Timeout(now))?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let key = self.next_key;
        self.next_key = self.next_key.checked_add(self.key_stride).unwrap_or_else(|| self.first_key());
        if let Some(link) = &self.shard {
            link.fabric.add_ufrag(key, ufrag.clone());
        }
        self.demux.add_peer(ufrag, key);
        self.names.insert(peer_id.to_string(), key);
        self.peers
            .insert(key, Box::new(Peer::new(peer_id.to_string(), key, role, rtc, now, self.ice_grace)));
        self.drain(key, now);
        self.process(now);
        Ok(())
    }

    /// Close and forget a peer, its published tracks and its subscriptions. Idempotent.
    pub fn remove_peer(&mut self, peer_id: &str, now: Instant) {
        let Some(key) = self.names.remove(peer_id) else { return };
        self.demux.remove_peer(key);
        if let Some(link) = &self.shard {
            link.fabric.remove_peer(key);
        }
        let published: Vec<TrackKey> = self
            .router
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher == key)
            .map(|(k, _)| *k)
            .collect();
        for tk in published {
            self.unpublish_key(tk);
        }
        for t in self.router.tracks.values_mut() {
            t.downs.retain(|d| d.sub != key);
        }
        self.router.by_sub_mid.retain(|(p, _), _| *p != key);
        self.feedback_seen.retain(|(p, ..), _| *p != key);
        if let Some(mut peer) = self.peers.remove(&key) {
            peer.closed = true;
            // Best effort close_notify/BYE; the peer is gone either way.
            let _ = peer.rtc.close();
            let mut scratch = Vec::new();
            let _ = peer.drain(&mut self.sink, &mut scratch, &mut self.counters, now);
        }
        self.process(now);
    }

    /// Publisher: apply the client's offer, return our answer.
    pub fn accept_offer(&mut self, peer_id: &str, offer_sdp: &str, now: Instant) -> Result<String> {
        let peer = self.peer_with_role(peer_id, Role::Publisher)?;
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        for (mid, track) in sdp::msid_tracks_by_mid(offer_sdp) {
            peer.msid_by_mid.insert(mid, track);
        }
        let key = peer.key;
        // An offer with new ice-ufrag/pwd is an ICE restart: str0m answers with
        // new local credentials, and the client's checks will name them.
        self.follow_ufrag(key);
        self.drain(key, now);
        self.process(now);
        Ok(answer.to_sdp_string())
    }

    /// Teach the demux the peer's current local ufrag (after an ICE restart).
    fn follow_ufrag(&mut self, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
            if let Some(link) = &self.shard {
                link.fabric.add_ufrag(key, ufrag.clone());
            }
            self.demux.add_ufrag(key, ufrag);
        }
    }

    /// Subscriber: an offer with the data channels, current down tracks and
    /// directions. Errors with `NothingToNegotiate` when nothing changed.
    pub fn create_offer(&mut self, peer_id: &str, now: Instant) -> Result<String> {
        self.offer(peer_id, false, now)
    }

    /// Subscriber: `create_offer` with new ICE credentials (an ICE restart), for a
    /// client whose transport failed or whose network changed. Always a new offer
    /// once an answer was accepted (before that it is `create_offer`: ICE has not
    /// started); the restart completes when the client's answer (with its new
    /// credentials) is accepted. Checks naming the new ufrag reach the peer from the
    /// moment the offer exists, from any address. An unanswered offer it replaces is
    /// rolled back into it.
    pub fn create_ice_restart_offer(&mut self, peer_id: &str, now: Instant) -> Result<String> {
        self.offer(peer_id, true, now)
    }

    /// What a new offer must change: directions of negotiated m-lines and the down
    /// tracks that need an m-line. M-lines of an unanswered offer are left alone.
    fn offer_plan(&self, key: PeerKey) -> OfferPlan {
        let mut plan = OfferPlan::default();
        let Some(peer) = self.peers.get(&key) else { return plan };
        let direction = |mid: Mid| peer.rtc.media(mid).map(|m| m.direction());
        for (tk, t) in &self.router.tracks {
            for d in t.downs.iter().filter(|d| d.sub == key) {
                match d.mid {
                    None if d.active => {
                        plan.to_add.push((*tk, t.kind, d.stream_id.clone(), d.msid_track_id(&t.id)))
                    }
                    None => {}
                    Some(mid) => {
                        let want = if d.active { Direction::SendOnly } else { Direction::Inactive };
                        if direction(mid).is_some_and(|have| have != want) {
                            plan.directions.push((mid, want));
                        }
                    }
                }
            }
        }
        for &mid in &peer.orphan_mids {
            if direction(mid).is_some_and(|have| have != Direction::Inactive) {
                plan.directions.push((mid, Direction::Inactive));
            }
        }
        plan
    }

    /// Forget an unanswered offer that a new one replaces (as JSEP's rollback): its
    /// m-lines, inactive turns, data channels and ICE restart go into the next one.
    fn roll_back_offer(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        peer.pending_offer = None;
        peer.orphan_mids.append(&mut peer.pending_orphans);
        if std::mem::take(&mut peer.channels_pending) {
            peer.channels_offered = false;
        }
        for (tk, mid) in std::mem::take(&mut peer.pending_mids) {
            self.router.by_sub_mid.remove(&(key, mid));
            let down = self.router.tracks.get_mut(&tk).and_then(|t| t.downs.iter_mut().find(|d| d.sub == key));
            if let Some(d) = down.filter(|d| d.mid == Some(mid)) {
                d.mid = None;
                d.tx_ssrc = None;
            }
        }
    }

    fn offer(&mut self, peer_id: &str, ice_restart: bool, now: Instant) -> Result<String> {
        let key = self.key_of(peer_id)?;
        self.peer_with_role(peer_id, Role::Subscriber)?;
        let mut plan = self.offer_plan(key);
        let peer = self.peers.get(&key).expect("checked above");
        // Before the first answer ICE has not started: nothing to restart (and str0m
        // takes new credentials only in an answer that follows remote ones).
        let mut ice_restart = ice_restart && peer.answered;
        if peer.pending_offer.is_some() && (ice_restart || !plan.is_empty()) {
            // A new offer while the last is unanswered: it replaces that one.
            ice_restart |= peer.restart_pending;
            self.roll_back_offer(key);
            plan = self.offer_plan(key);
        }
        let OfferPlan { directions, to_add } = plan;
        let peer = self.peers.get_mut(&key).expect("checked above");

        let mut api = peer.rtc.sdp_api();
        let add_channels = !peer.channels_offered;
        if add_channels {
            api.add_channel_with_config(ChannelConfig {
                label: LABEL_RELIABLE.to_string(),
                ordered: true,
                reliability: Reliability::Reliable,
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: LABEL_LOSSY.to_string(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        let mut added = Vec::new();
        for (tk, kind, stream_id, track_id) in to_add {
            let mid = api.add_media(kind, Direction::SendOnly, Some(stream_id), Some(track_id), None);
            added.push((tk, mid));
        }
        for (mid, dir) in directions {
            api.set_direction(mid, dir);
        }
        // Keep our host candidate (one socket for all peers); only the credentials change.
        let restart_ufrag = ice_restart.then(|| api.ice_restart(true).ufrag);
        let Some((offer, pending)) = api.apply() else {
            // Nothing changed: repeat the last offer so the control plane's
            // negotiation stays simple. If it was answered, the answer to the repeat
            // is accepted and ignored; if it is still unanswered (an ICE restart or
            // new m-lines in flight), its answer still applies.
            return match &peer.last_offer {
                Some(sdp) => {
                    peer.repeated_offer = peer.pending_offer.is_none();
                    Ok(sdp.clone())
                }
                None => Err(EngineError::NothingToNegotiate(peer_id.to_string())),
            };
        };
        let offer = offer.to_sdp_string();
        peer.channels_offered = true;
        peer.channels_pending = add_channels;
        peer.restart_pending = ice_restart;
        peer.pending_orphans = std::mem::take(&mut peer.orphan_mids);
        peer.pending_mids = added.clone();
        peer.pending_offer = Some(pending);
        peer.repeated_offer = false;
        peer.last_offer = Some(offer.clone());
        if let Some(ufrag) = restart_ufrag {
            self.demux.add_ufrag(key, ufrag);
        }
        for (tk, mid) in added {
            self.router.by_sub_mid.insert((key, mid), tk);
            if let Some(d) = self
                .router
                .tracks
                .get_mut(&tk)
                .and_then(|t| t.downs.iter_mut().find(|d| d.sub == key))
            {
                d.mid = Some(mid);
                d.tx_ssrc = None;
            }
        }
        self.drain(key, now);
        self.process(now);
        Ok(offer)
    }

    /// Subscriber: apply the client's answer to our last offer.
    pub fn accept_answer(&mut self, peer_id: &str, answer_sdp: &str, now: Instant) -> Result<()> {
        let peer = self.peer_mut(peer_id)?;
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        let Some(pending) = peer.pending_offer.take() else {
            if std::mem::take(&mut peer.repeated_offer) {
                return Ok(());
            }
            return Err(EngineError::NoPendingOffer(peer_id.to_string()));
        };
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        peer.answered = true;
        peer.pending_mids.clear();
        peer.pending_orphans.clear();
        peer.channels_pending = false;
        peer.restart_pending = false;
        let key = peer.key;
        self.follow_ufrag(key);
        // Outgoing pts may have changed: relearn them.
        for t in self.router.tracks.values_mut() {
            for d in t.downs.iter_mut().filter(|d| d.sub == key) {
                d.pt_map.clear();
                d.tx_ssrc = None;
            }
        }
        self.drain(key, now);
        self.process(now);
        Ok(())
    }

    /// Add a trickled remote candidate.
    pub fn add_remote_candidate(&mut self, peer_id: &str, line: &str, now: Instant) -> Result<()> {
        let peer = self.peer_mut(peer_id)?;
        let c = sdp::parse_candidate(line)?;
        peer.rtc.add_remote_candidate(c);
        let key = peer.key;
        self.drain(key, now);
        self.process(now);
        Ok(())
    }

    /// Our candidates, as `candidate:...` lines.
    pub fn local_candidates(&mut self, peer_id: &str) -> Result<Vec<String>> {
        self.key_of(peer_id)?;
        Ok(self.host_candidates()?.iter().map(|c| c.to_sdp_string()).collect())
    }

    /// Bind a publisher m-line to a server track id.
    pub fn publish_track(&mut self, publisher: &str, mid: &str, track_id: &str, now: Instant) -> Result<()> {
        if self.router.key_of(track_id).is_some() {
            return Err(EngineError::TrackExists(track_id.to_string()));
        }
        let peer = self.peer_with_role(publisher, Role::Publisher)?;
        let m: Mid = mid.into();
        let Some(media) = peer.rtc.media(m) else {
            return Err(EngineError::UnknownMid { peer: publisher.to_string(), mid: mid.to_string() });
        };
        let kind = media.kind();
        let codecs = peer
            .rtc
            .codec_config()
            .params()
            .iter()
            .flat_map(|p| [(p.pt(), CodecKind::from_codec(p.spec().codec))].into_iter().chain(p.red().map(|r| (r, CodecKind::Red))))
            .collect();
        let key = peer.key;
        let seen: Vec<(str0m::rtp::Ssrc, Option<Rid>)> = peer
            .rx_ssrc
            .iter()
            .filter(|(_, (mm, _))| *mm == m)
            .map(|(ssrc, (_, rid))| (*ssrc, *rid))
            .collect();
        if let Some(old) = self.router.by_pub_mid.get(&(key, m)).copied() {
            // The m-line was recycled for a new track: the old binding ends.
            self.unpublish_key(old);
        }
        let mut track = Track {
            id: track_id.to_string(),
            publisher: key,
            mid: m,
            kind,
            muted: false,
            layers: Vec::new(),
            downs: Vec::new(),
            codecs,
            level: (kind == MediaKind::Audio).then(|| LevelMeter::new(48_000)),
            origin: None,
            followers: Vec::new(),
            relay_id: track_id.into(),
            red_received: Default::default(),
        };
        // Layers that already carried media before the binding.
        for (ssrc, rid) in seen {
            track.saw_layer(rid, ssrc, 0, None, now);
        }
        self.router.publish(track);
        Ok(())
    }

    fn unpublish_key(&mut self, tk: TrackKey) {
        let Some(track) = self.router.unpublish(tk) else { return };
        for &f in &track.followers {
            self.outbox.push((f, CrossMsg::TrackGone { track: track.relay_id.clone() }));
        }
        for d in track.downs {
            if let (Some(mid), Some(peer)) = (d.mid, self.peers.get_mut(&d.sub)) {
                peer.orphan_mids.push(mid);
            }
        }
    }

    /// Stop forwarding a track and forget it.
    pub fn unpublish_track(&mut self, track_id: &str) -> Result<()> {
        let tk = self
            .router
            .key_of(track_id)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        self.unpublish_key(tk);
        Ok(())
    }

    /// Home shard: relay `track_id` to shard `follower` from now on, and say what
    /// its mirror needs.
    pub fn follow_track(&mut self, track_id: &str, follower: ShardId) -> Result<TrackExport> {
        let home = self.shard.as_ref().map_or(0, |l| l.id);
        let track = self
            .router
            .key_of(track_id)
            .and_then(|tk| self.router.tracks.get_mut(&tk))
            .filter(|t| t.origin.is_none())
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        if follower != home && !track.followers.contains(&follower) {
            track.followers.push(follower);
        }
        Ok(TrackExport {
            id: track.id.clone(),
            home,
            kind: track.kind,
            muted: track.muted,
            codecs: track.codecs.clone(),
            layers: track.layers.iter().map(|l| (l.rid, l.ssrc)).collect(),
        })
    }

    /// Follower shard: mirror a track homed elsewhere (once; later calls keep the
    /// mirror and its subscribers).
    pub fn mirror_track(&mut self, export: TrackExport, now: Instant) {
        if self.router.key_of(&export.id).is_some() {
            return;
        }
        let mut track = Track {
            id: export.id.clone(),
            publisher: NO_PEER,
            mid: Mid::from("-"),
            kind: export.kind,
            muted: export.muted,
            layers: Vec::new(),
            downs: Vec::new(),
            codecs: export.codecs,
            level: None,
            origin: Some(export.home),
            followers: Vec::new(),
            relay_id: export.id.as_str().into(),
            red_received: Default::default(),
        };
        for (rid, ssrc) in export.layers {
            track.saw_layer(rid, ssrc, 0, None, now);
        }
        self.router.publish(track);
    }

    /// Handle what another shard sent.
    pub fn handle_cross(&mut self, msg: CrossMsg, now: Instant) {
        match msg {
            CrossMsg::Datagram { transport, source, destination, data } => {
                self.deliver(transport, source, destination, &data, now);
            }
            CrossMsg::Rtp(Relayed { track, packet }) => {
                if let Some(tk) = self.router.key_of(&track) {
                    self.fan_out(tk, &packet, now);
                }
            }
            CrossMsg::Keyframe { track, rid } => {
                if let Some(tk) = self.router.key_of(&track) {
                    self.request_keyframe_for(tk, rid, now);
                }
            }
            CrossMsg::TrackGone { track } => {
                let mirror = self.router.key_of(&track).filter(|tk| self.router.tracks[tk].origin.is_some());
                if let Some(tk) = mirror {
                    self.unpublish_key(tk);
                }
            }
            CrossMsg::StreamOut { dest, data } => self.sink.send_stream(dest, &data),
        }
    }

    /// Start (or resume) forwarding a track to a subscriber peer.
    pub fn subscribe(&mut self, subscriber: &str, track_id: &str, stream_id: &str, now: Instant) -> Result<()> {
        let sub = self.key_of(subscriber)?;
        self.peer_with_role(subscriber, Role::Subscriber)?;
        let tk = self
            .router
            .key_of(track_id)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        let seed = self.next_seed();
        let track = self.router.tracks.get_mut(&tk).expect("key_of returned it");
        let mut fresh = DownTrack::new(sub, stream_id.to_string(), track.kind, seed);
        let mut retired = None;
        match track.downs.iter_mut().find(|d| d.sub == sub) {
            Some(d) if d.active => d.pause(),
            Some(d) => {
                // Resubscribe. The SDKs dropped the track when they unsubscribed
                // and only announce a (mid, stream) pair once per PeerConnection
                // (the Rust SDK dedups `OnTrack` by it), so the same m-line
                // coming back would never surface again: use a fresh m-line and
                // a fresh SSRC, and leave the old m-line inactive.
                retired = d.mid;
                fresh.generation = d.generation + u32::from(d.mid.is_some());
                *d = fresh;
            }
            None => track.downs.push(fresh),
        }
        if let Some(mid) = retired {
            self.router.by_sub_mid.remove(&(sub, mid));
            if let Some(peer) = self.peers.get_mut(&sub) {
                peer.orphan_mids.push(mid);
            }
        }
        self.request_keyframes(tk, now);
        Ok(())
    }

    /// Single PeerConnection (`/rtc/v1`): forward a track to `subscriber` on `mid`,
    /// an m-line the client offered recvonly and our answer made sendonly. The
    /// control plane picks the mid (it tells the client which track it carries) and
    /// never reuses one: the SDKs announce a (mid, stream) pair once per
    /// PeerConnection. A down track the subscriber had moves to the new mid.
    pub fn subscribe_on_mid(
        &mut self,
        subscriber: &str,
        track_id: &str,
        stream_id: &str,
        mid: &str,
        now: Instant,
    ) -> Result<()> {
        let sub = self.key_of(subscriber)?;
        let mid = Mid::from(mid);
        let tk = self
            .router
            .key_of(track_id)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        let kind = self.router.tracks[&tk].kind;
        let peer = self.peers.get(&sub).ok_or_else(|| EngineError::UnknownPeer(subscriber.to_string()))?;
        let usable = peer
            .rtc
            .media(mid)
            .is_some_and(|m| m.kind() == kind && m.direction().is_sending());
        if !usable || self.router.by_sub_mid.contains_key(&(sub, mid)) {
            return Err(EngineError::RemoteSdp(format!("mid {mid} is no free sending {kind:?} m-line")));
        }
        let seed = self.next_seed();
        let track = self.router.tracks.get_mut(&tk).expect("key_of returned it");
        let mut fresh = DownTrack::new(sub, stream_id.to_string(), kind, seed);
        fresh.mid = Some(mid);
        let mut retired = None;
        match track.downs.iter_mut().find(|d| d.sub == sub) {
            Some(d) => {
                retired = d.mid;
                fresh.generation = d.generation + 1;
                *d = fresh;
            }
            None => track.downs.push(fresh),
        }
        if let Some(old) = retired {
            self.router.by_sub_mid.remove(&(sub, old));
        }
        self.router.by_sub_mid.insert((sub, mid), tk);
        self.request_keyframes(tk, now);
        Ok(())
    }

    /// Stop forwarding at once; the m-line turns inactive in the next offer.
    pub fn unsubscribe(&mut self, subscriber: &str, track_id: &str) -> Result<()> {
        let sub = self.key_of(subscriber)?;
        let tk = self
            .router
            .key_of(track_id)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        let track = self.router.tracks.get_mut(&tk).expect("key_of returned it");
        if let Some(d) = track.downs.iter_mut().find(|d| d.sub == sub) {
            d.active = false;
            d.pause();
        }
        Ok(())
    }

    /// Muted tracks forward nothing; unmuting waits for a keyframe (video).
    pub fn set_muted(&mut self, track_id: &str, muted: bool, now: Instant) -> Result<()> {
        let tk = self
            .router
            .key_of(track_id)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))?;
        let track = self.router.tracks.get_mut(&tk).expect("key_of returned it");
        if track.muted == muted {
            return Ok(());
        }
        track.muted = muted;
        for d in &mut track.downs {
            d.pause();
        }
        if !muted {
            self.request_keyframes(tk, now);
        }
        Ok(())
    }

    /// The track `track_id` and the index of `subscriber`'s down track of it.
    fn down_track(&mut self, subscriber: &str, track_id: &str) -> Result<(TrackKey, &mut Track, usize)> {
        let sub = self.key_of(subscriber)?;
        let unknown = || EngineError::UnknownTrack(track_id.to_string());
        let tk = self.router.key_of(track_id).ok_or_else(unknown)?;
        let track = self.router.tracks.get_mut(&tk).expect("key_of returned it");
        let i = track.downs.iter().position(|d| d.sub == sub).ok_or_else(unknown)?;
        Ok((tk, track, i))
    }

    /// Choose the simulcast quality (0 LOW, 1 MEDIUM, 2 HIGH) for one subscriber.
    pub fn set_layer(&mut self, subscriber: &str, track_id: &str, quality: i64, now: Instant) -> Result<()> {
        if !(0..=2).contains(&quality) {
            return Err(EngineError::BadLayer(quality));
        }
        let (tk, track, i) = self.down_track(subscriber, track_id)?;
        track.downs[i].quality = quality as u8;
        if let Some(rid) = track.select_rid(quality as u8, now) {
            self.request_keyframe_for(tk, rid, now);
        }
        Ok(())
    }

    /// The frame rate a subscriber wants of a video track (0: any). Lower rates drop
    /// VP8 temporal layers (`router::temporal`); codecs without them are unaffected.
    pub fn set_fps(&mut self, subscriber: &str, track_id: &str, fps: u32) -> Result<()> {
        let (_, track, i) = self.down_track(subscriber, track_id)?;
        track.downs[i].fps = fps;
        Ok(())
    }

    /// A subscriber's priority for a video track (1 the highest, 0 unset): under a
    /// bandwidth estimate that does not fit everything, higher ones are served first.
    pub fn set_priority(&mut self, subscriber: &str, track_id: &str, priority: u32) -> Result<()> {
        let (_, track, i) = self.down_track(subscriber, track_id)?;
        track.downs[i].priority = priority;
        Ok(())
    }

    /// Stop (or resume) forwarding a track to one subscriber without renegotiating:
    /// a client that hides a video disables it. Resuming waits for a keyframe.
    pub fn set_disabled(&mut self, subscriber: &str, track_id: &str, disabled: bool, now: Instant) -> Result<()> {
        let (tk, track, i) = self.down_track(subscriber, track_id)?;
        let d = &mut track.downs[i];
        if d.disabled == disabled {
            return Ok(());
        }
        d.disabled = disabled;
        d.pause();
        let quality = d.quality;
        let rid = track.select_rid(quality, now);
        if let (false, Some(rid)) = (disabled, rid) {
            self.request_keyframe_for(tk, rid, now);
        }
        Ok(())
    }

    /// Send a message on the peer's `_reliable` or `_lossy` channel.
    pub fn send_data(&mut self, peer_id: &str, reliable: bool, payload: &[u8], now: Instant) -> Result<()> {
        let peer = self.peer_mut(peer_id)?;
        let label = if reliable { LABEL_RELIABLE } else { LABEL_LOSSY };
        let id = if reliable { peer.reliable } else { peer.lossy };
        let not_open = || EngineError::ChannelNotOpen { peer: peer_id.to_string(), label };
        let id = id.ok_or_else(not_open)?;
        let mut ch = peer.rtc.channel(id).ok_or_else(not_open)?;
        ch.write(true, payload)?;
        let key = peer.key;
        self.drain(key, now);
        self.process(now);
        Ok(())
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("packets_in", c.packets_in),
            ("bytes_in", c.bytes_in),
            ("packets_out", c.packets_out),
            ("bytes_out", c.bytes_out),
            ("rtp_in", c.rtp_in),
            ("rtp_forwarded", c.rtp_forwarded),
            ("rtp_dropped", c.rtp_dropped),
            ("keyframe_requests", c.keyframe_requests),
            ("nacks_in", c.nacks_in),
            ("nacks_out", c.nacks_out),
            ("audio_resent", c.audio_resent),
            ("rtp_red_recovered", c.rtp_red_recovered),
            ("plis_in", c.plis_in),
            ("plis_out", c.plis_out),
            ("firs_in", c.firs_in),
            ("firs_out", c.firs_out),
            ("packets_lost_in", c.packets_lost_in),
            ("packets_lost_out", c.packets_lost_out),
            ("unroutable", c.unroutable),
            ("dropped_not_webrtc", c.dropped_not_webrtc),
            ("dropped_unknown_ufrag", c.dropped_unknown_ufrag),
            ("dropped_unknown_source", c.dropped_unknown_source),
            ("bad_datagrams", c.bad_datagrams),
            ("handed_over", c.handed_over),
            ("rtp_relayed", c.rtp_relayed),
            ("peers", self.peers.len() as u64),
            ("tracks", self.router.tracks.len() as u64),
            ("addresses", self.demux.addr_count() as u64),
        ]
    }

    // ------------------------------------------------------------- network/time

    /// Send the RTP forwarded since the last flush: one timeout and drain per
    /// subscriber for a whole burst of incoming packets instead of one per packet.
    /// The run loop flushes after each burst of reads; `handle_timeout` and every
    /// command flush too.
    pub fn flush(&mut self, now: Instant) {
        self.dirty_since = None;
        while !self.dirty.is_empty() {
            for key in std::mem::take(&mut self.dirty) {
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.dirty = false;
                    if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(peer = %peer.id, "timeout after write: {e}");
                    }
                }
                self.drain(key, now);
            }
            self.process(now);
        }
    }

    /// Whether forwarded RTP has waited `FLUSH_WITHIN` for its flush.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.dirty_since.is_some_and(|t| now.saturating_duration_since(t) >= FLUSH_WITHIN)
    }

    /// Feed one datagram from the shared socket. Forwarded RTP is queued on the
    /// subscribers until `flush`.
    pub fn handle_datagram(&mut self, source: SocketAddr, data: &[u8], now: Instant) {
        self.handle_datagram_to(source, None, data, now);
    }

    /// `handle_datagram` for a datagram that reached local IP `dest` (a socket bound
    /// to a wildcard address reports it).
    pub fn handle_datagram_to(&mut self, source: SocketAddr, dest: Option<IpAddr>, data: &[u8], now: Instant) {
        let destination = Self::destination(&self.udp_addrs, dest, source).unwrap_or(self.local_addr);
        self.receive(Transport::Udp, source, destination, data, now);
    }

    /// One RFC 4571 frame from the ICE-TCP connection `remote` → `local`.
    pub fn handle_tcp_frame(&mut self, remote: SocketAddr, local: SocketAddr, data: &[u8], now: Instant) {
        let Some(destination) = Self::destination(&self.tcp_addrs, Some(local.ip()), remote) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        self.receive(Transport::Tcp, remote, destination, data, now);
    }

    fn receive(&mut self, transport: Transport, source: SocketAddr, destination: SocketAddr, data: &[u8], now: Instant) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let key = match self.demux.classify_on(transport, source, data) {
            Route::Peer(key) => key,
            Route::Drop(why) => {
                if !matches!(why, Drop::NotWebrtc) && self.hand_over(transport, source, destination, data) {
                    return;
                }
                self.dropped(why, source, now);
                return;
            }
        };
        self.receive_for(key, transport, source, destination, data, now);
    }

    /// A datagram another shard's socket got for one of our peers (counted there).
    fn deliver(&mut self, transport: Transport, source: SocketAddr, destination: SocketAddr, data: &[u8], now: Instant) {
        match self.demux.classify_on(transport, source, data) {
            Route::Peer(key) => self.receive_for(key, transport, source, destination, data, now),
            // The peer went while the datagram was on its way.
            Route::Drop(why) => self.dropped(why, source, now),
        }
    }

    /// Send a datagram our tables do not know to the shard whose peer it is.
    fn hand_over(&mut self, transport: Transport, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> bool {
        let Some(link) = &self.shard else { return false };
        let Route::Peer(key) = link.fabric.owner(transport, source, data) else { return false };
        let to = shard_of(key, link.fabric.shards());
        if to == link.id {
            return false;
        }
        self.counters.handed_over += 1;
        let data = data.to_vec();
        self.outbox.push((to, CrossMsg::Datagram { transport, source, destination, data }));
        true
    }

    fn receive_for(
        &mut self,
        key: PeerKey,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if peer.closed {
            return;
        }
        let Ok(contents) = data.try_into() else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: match transport {
                    Transport::Udp => Protocol::Udp,
                    Transport::Tcp => Protocol::Tcp,
                },
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = peer.rtc.handle_input(input) {
            // Remote bytes are not allowed to kill a peer: count and carry on.
            self.counters.bad_datagrams += 1;
            tracing::debug!(peer = %peer.id, "handle_input: {e}");
        }
        self.drain(key, now);
        self.process(now);
    }

    /// Count a datagram no peer gets; log a summary at most once per `DROP_LOG_EVERY`.
    fn dropped(&mut self, why: Drop, source: SocketAddr, now: Instant) {
        let c = &mut self.counters;
        c.unroutable += 1;
        match why {
            Drop::NotWebrtc => c.dropped_not_webrtc += 1,
            Drop::UnknownUfrag => c.dropped_unknown_ufrag += 1,
            Drop::UnknownSource => c.dropped_unknown_source += 1,
        }
        self.drops_since_log += 1;
        if self.drop_logged_at.is_none_or(|t| now >= t + DROP_LOG_EVERY) {
            tracing::info!(
                "dropped {} datagrams for no peer since the last report (latest: {why:?} from {source}); \
                 totals: not WebRTC {}, unknown ufrag {}, unknown source {}",
                self.drops_since_log,
                c.dropped_not_webrtc,
                c.dropped_unknown_ufrag,
                c.dropped_unknown_source,
            );
            self.drop_logged_at = Some(now);
            self.drops_since_log = 0;
        }
    }

    /// Control-plane summaries that are due: audio levels, link stats.
    fn report(&mut self, now: Instant) {
        if self.levels_due.is_none_or(|t| t <= now) {
            self.levels_due = Some(now + LEVEL_INTERVAL);
            let has_audio = self.router.tracks.values().any(|t| t.level.is_some());
            let levels: Vec<_> = self
                .router
                .tracks
                .values_mut()
                .filter_map(|t| Some((t.id.clone(), t.level.as_mut()?.take()?)))
                .collect();
            if has_audio || self.levels_reported {
                self.levels_reported = has_audio;
                self.events.push(MediaEvent::AudioLevels { levels });
            }
        }
        if self.links_due.is_none_or(|t| t <= now) {
            self.links_due = Some(now + LINK_STATS_INTERVAL);
            self.allocate(now);
            let links: Vec<_> = self
                .peers
                .values_mut()
                .filter(|p| !p.closed)
                .filter_map(|p| Some((p.id.clone(), p.link.take()?)))
                .collect();
            if !links.is_empty() {
                self.events.push(MediaEvent::LinkStats { links });
            }
        }
    }

    /// Measure layer bitrates and choose, per subscriber with a bandwidth estimate,
    /// the layer cap of each of its video down tracks (`router::allocator`); tell
    /// str0m what the subscriber would take, so that it probes towards it.
    fn allocate(&mut self, now: Instant) {
        let elapsed = self.measured_at.map_or(LINK_STATS_INTERVAL, |t| now.saturating_duration_since(t));
        self.measured_at = Some(now);
        for t in self.router.tracks.values_mut() {
            t.measure(elapsed);
        }
        let Core { peers, router, events, allow_pause, .. } = self;
        let mut resumed = Vec::new();
        // Any role: a /rtc/v1 peer carries its subscriptions on the publisher peer.
        for peer in peers.values_mut().filter(|p| !p.closed) {
            let loss = peer.take_egress_loss();
            let Some(estimate) = peer.bwe_bps else { continue };
            let estimate = peer.loss_cap.update(estimate, loss);
            let key = peer.key;
            let mut served = Vec::new();
            for (tk, t) in router.tracks.iter().filter(|(_, t)| t.kind == MediaKind::Video && !t.muted) {
                for (i, d) in t.downs.iter().enumerate() {
                    if d.sub == key && d.active && !d.disabled {
                        served.push(((*tk, i), t.demand(d.quality, d.priority, now)));
                    }
                }
            }
            if served.is_empty() {
                continue;
            }
            // By priority, then in the order tracks were published (track keys grow).
            served.sort_by_key(|((tk, _), d)| (d.rank, *tk));
            let (downs, demands): (Vec<_>, Vec<_>) = served.into_iter().unzip();
            let caps = allocate(estimate, &demands);
            let fits = demands.iter().zip(&caps).all(|(d, c)| d.served_by(*c));
            let repace = peer.pacing.record(fits).is_some();
            for (((tk, i), cap), demand) in downs.into_iter().zip(caps).zip(&demands) {
                let Some(t) = router.tracks.get_mut(&tk) else { continue };
                let Some(d) = t.downs.get_mut(i) else { continue };
                // Not allowed to pause: what does not fit keeps its lowest layer.
                let cap = if *allow_pause { cap } else { cap.or_else(|| demand.lowest()) };
                d.cap = cap.unwrap_or(0);
                if let Some(ssrc) = d.tx_ssrc.filter(|_| repace) {
                    let unpaced = !peer.pacing.paced();
                    if let Some(tx) = peer.rtc.direct_api().stream_tx(&ssrc) {
                        tx.set_unpaced(unpaced);
                    }
                }
                if let Some(paused) = d.bw_pause.record(cap.is_some()) {
                    // Paused: nothing goes out; resumed: from the next keyframe.
                    d.pause();
                    let (peer_id, track_id) = (peer.id.clone(), t.id.clone());
                    events.push(MediaEvent::StreamStateChanged { peer_id, track_id, paused });
                    resumed.extend((!paused).then_some(tk));
                }
            }
            let wanted: u64 = demands.iter().map(|d| d.wanted_bps()).sum();
            let desired = Bitrate::bps((wanted as f64 / crate::router::allocator::VIDEO_SHARE) as u64);
            peer.rtc.bwe().set_bitrate(Bitrate::ZERO, desired);
        }
        for tk in resumed {
            self.request_keyframes(tk, now);
        }
    }

    /// Give due peers their timeout (and flush forwarded RTP).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush(now);
        self.report(now);
        let due: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| p.deadline() <= now)
            .map(|p| p.key)
            .collect();
        for key in due {
            if let Some(peer) = self.peers.get_mut(&key) {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(peer = %peer.id, "timeout: {e}");
                }
                // A dead Rtc is reported as closed by the drain below.
                if peer.rtc.is_alive() && peer.ice_lost_at.is_some_and(|t| t + peer.ice_grace <= now) {
                    self.fail_peer(key, "ice disconnected");
                }
            }
            self.drain(key, now);
        }
        self.process(now);
    }

    /// When `handle_timeout` should next run.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let cap = now + MAX_SLEEP;
        self.peers
            .values()
            .filter(|p| !p.closed)
            .map(|p| p.deadline())
            .min()
            .unwrap_or(cap)
            .min(cap)
    }

    // --------------------------------------------------------------- events

    /// Handle every pending str0m event, including ones raised while handling.
    fn process(&mut self, now: Instant) {
        loop {
            self.work_queue.extend(self.work.drain(..));
            let Some((key, ev)) = self.work_queue.pop_front() else { break };
            self.handle_event(key, ev, now);
        }
    }

    fn handle_event(&mut self, key: PeerKey, ev: Event, now: Instant) {
        match ev {
            Event::RtpPacket(pkt) => self.forward(key, pkt, now),
            Event::RawPacket(raw) => self.resend_audio(key, &raw),
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if !p.connected {
                        p.connected = true;
                        self.events.push(MediaEvent::PeerConnected { peer_id: p.id.clone() });
                    }
                }
            }
            Event::IceConnectionStateChange(state) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.ice_lost_at = match state {
                        IceConnectionState::Disconnected => p.ice_lost_at.or(Some(now)),
                        _ => None,
                    };
                }
            }
            Event::Closed => self.fail_peer(key, "closed by remote"),
            Event::ChannelOpen(id, label) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    let reliable = match label.as_str() {
                        LABEL_RELIABLE => true,
                        LABEL_LOSSY => false,
                        _ => return,
                    };
                    p.channels.insert(id, reliable);
                    if reliable {
                        p.reliable = Some(id);
                    } else {
                        p.lossy = Some(id);
                    }
                }
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.channels.remove(&id);
                    if p.reliable == Some(id) {
                        p.reliable = None;
                    }
                    if p.lossy == Some(id) {
                        p.lossy = None;
                    }
                }
            }
            Event::ChannelData(d) => {
                if let Some(p) = self.peers.get(&key) {
                    if let Some(&reliable) = p.channels.get(&d.id) {
                        self.events.push(MediaEvent::DataReceived {
                            peer_id: p.id.clone(),
                            reliable,
                            payload: d.data,
                        });
                    }
                }
            }
            Event::KeyframeRequest(req) => {
                // A subscriber lost a picture: ask the publisher of that m-line.
                if let Some(&tk) = self.router.by_sub_mid.get(&(key, req.mid)) {
                    let rid = self
                        .router
                        .tracks
                        .get(&tk)
                        .and_then(|t| t.downs.iter().find(|d| d.sub == key))
                        .and_then(|d| d.fwd.current());
                    if let Some(rid) = rid {
                        self.request_keyframe_for(tk, rid, now);
                    }
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, can_probe }) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.bwe_bps = can_probe.then(|| estimate.as_u64());
                }
            }
            // Egress: what subscribers asked of us; ingress: what we asked publishers.
            // Both also feed the peer's link stats (connection quality).
            Event::MediaEgressStats(st) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    let clock = clock_rate(&p.rtc, st.mid);
                    p.link.egress(&st, clock);
                    if let Some(l) = st.loss.filter(|l| l.is_finite()) {
                        p.egress_loss.0 += l.clamp(0.0, 1.0);
                        p.egress_loss.1 += 1;
                    }
                }
                let counts = [st.firs, st.plis, st.nacks, st.packets];
                let lost = Loss::Reported(st.remote.as_ref().map(|r| r.packets_lost));
                self.count_feedback(key, st.mid, st.rid, true, counts, lost)
            }
            Event::MediaIngressStats(st) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    let clock = clock_rate(&p.rtc, st.mid);
                    p.link.ingress(&st, clock);
                }
                let counts = [st.firs, st.plis, st.nacks, st.packets];
                self.count_feedback(key, st.mid, st.rid, false, counts, Loss::Fraction(st.loss))
            }
            Event::StreamPaused(p) => {
                if let Some(&tk) = self.router.by_pub_mid.get(&(key, p.mid)) {
                    if let Some(t) = self.router.tracks.get_mut(&tk) {
                        if let Some(l) = t.layers.iter_mut().find(|l| l.rid == p.rid) {
                            l.paused = p.paused;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn count_feedback(
        &mut self,
        key: PeerKey,
        mid: Mid,
        rid: Option<Rid>,
        egress: bool,
        counts: [u64; 4],
        loss: Loss,
    ) {
        let seen = self.feedback_seen.entry((key, mid, rid, egress)).or_insert([0; 5]);
        let lost = match loss {
            Loss::Reported(Some(total)) => total,
            Loss::Reported(None) => seen[4],
            // Only a fraction for the last interval: lost ≈ fraction × packets since.
            Loss::Fraction(f) => {
                let fraction = f64::from(f.unwrap_or(0.0).clamp(0.0, 1.0));
                let packets = counts[3].saturating_sub(seen[3]) as f64;
                seen[4] + (fraction * packets).round() as u64
            }
        };
        let now = [counts[0], counts[1], counts[2], counts[3], lost];
        let mut delta = [0u64; 5];
        for (d, (n, s)) in delta.iter_mut().zip(now.iter().zip(seen.iter())) {
            *d = n.saturating_sub(*s);
        }
        *seen = now;
        let c = &mut self.counters;
        if egress {
            c.firs_in += delta[0];
            c.plis_in += delta[1];
            c.nacks_in += delta[2];
            c.packets_lost_out += delta[4];
        } else {
            c.firs_out += delta[0];
            c.plis_out += delta[1];
            c.nacks_out += delta[2];
            c.packets_lost_in += delta[4];
        }
    }

    /// Request a keyframe on every layer some active subscriber waits for.
    fn request_keyframes(&mut self, tk: TrackKey, now: Instant) {
        let Some(track) = self.router.tracks.get(&tk) else { return };
        if track.kind != MediaKind::Video {
            return;
        }
        let mut rids: Vec<Option<Rid>> = track
            .downs
            .iter()
            .filter(|d| d.active)
            .filter_map(|d| track.select_rid(d.quality, now))
            .collect();
        rids.dedup();
        for rid in rids {
            self.request_keyframe_for(tk, rid, now);
        }
    }

    fn request_keyframe_for(&mut self, tk: TrackKey, rid: Option<Rid>, now: Instant) {
        let Some(track) = self.router.tracks.get_mut(&tk) else { return };
        if track.kind != MediaKind::Video || !track.keyframe_request_due(rid, now) {
            return;
        }
        if let Some(home) = track.origin {
            self.outbox.push((home, CrossMsg::Keyframe { track: track.relay_id.clone(), rid }));
            return;
        }
        let (publisher, mid) = (track.publisher, track.mid);
        let Some(peer) = self.peers.get_mut(&publisher) else { return };
        let mut api = peer.rtc.direct_api();
        if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.counters.keyframe_requests += 1;
        }
        let _ = peer.rtc.handle_input(Input::Timeout(now));
        self.drain(publisher, now);
    }

    // ------------------------------------------------------------- forwarding

    /// Fan one incoming RTP packet out to the track's subscribers.
    fn forward(&mut self, publisher: PeerKey, pkt: RtpPacket, now: Instant) {
        self.counters.rtp_in += 1;
        let audio_nack = self.audio_nack;
        let ssrc = pkt.header.ssrc;
        let Some(peer) = self.peers.get_mut(&publisher) else { return };
        let (mid, rid) = match peer.rx_ssrc.get(&ssrc) {
            Some(v) => *v,
            None => {
                let mut api = peer.rtc.direct_api();
                let Some(rx) = api.stream_rx(&ssrc) else { return };
                let v = (rx.mid(), rx.rid());
                // NACK lost audio too: str0m only does so for streams with RTX, and
                // video keeps str0m's own choice (its loss reports feed connection
                // quality).
                let audio = peer.rtc.media(v.0).is_some_and(|m| m.kind() == MediaKind::Audio);
                if audio_nack && audio {
                    if let Some(rx) = peer.rtc.direct_api().stream_rx(&ssrc) {
                        rx.suppress_nack(false);
                    }
                }
                peer.rx_ssrc.insert(ssrc, v);
                v
            }
        };
        if !peer.arrived.contains(&mid) {
            peer.arrived.insert(mid);
            let kind = peer.rtc.media(mid).map(|m| m.kind());
            let codec = peer
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.pt() == pkt.header.payload_type || p.red() == Some(pkt.header.payload_type))
                .map(|p| if p.pt() == pkt.header.payload_type { CodecKind::from_codec(p.spec().codec).name() } else { "red" })
                .unwrap_or("unknown");
            let track_id = peer
                .msid_by_mid
                .get(mid.to_string().as_str())
                .cloned()
                .or_else(|| peer.rtc.media(mid).map(|m| m.track_id().to_string()))
                .unwrap_or_default();
            self.events.push(MediaEvent::TrackArrived {
                peer_id: peer.id.clone(),
                mid: mid.to_string(),
                track_id,
                kind: if kind == Some(MediaKind::Audio) { "audio" } else { "video" },
                rid: rid.map(|r| r.to_string()),
                codec: codec.to_string(),
            });
        }
        let Some(&tk) = self.router.by_pub_mid.get(&(publisher, mid)) else { return };
        let incoming = Incoming {
            ssrc,
            rid,
            pt: pkt.header.payload_type,
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            marker: pkt.header.marker,
            ext: ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                video_orientation: pkt.header.ext_vals.video_orientation,
                ..Default::default()
            },
            payload: pkt.payload,
            received: pkt.timestamp,
        };
        self.fan_out(tk, &incoming, now);
    }

    /// Forward one packet of track `tk` to its subscribers on this shard, and relay
    /// it to the shards that follow it (home tracks).
    fn fan_out(&mut self, tk: TrackKey, pkt: &Incoming, now: Instant) {
        let Core { router, counters, outbox, .. } = self;
        let Some(track) = router.tracks.get_mut(&tk) else { return };
        let codec = track.codec_of(pkt.pt).unwrap_or(CodecKind::Other);
        let temporal = if codec == CodecKind::Vp8 { temporal::parse(&pkt.payload) } else { None };
        track.saw_layer(pkt.rid, pkt.ssrc, pkt.payload.len(), temporal, now);
        if let Some(meter) = track.level.as_mut() {
            meter.observe(pkt.ext.audio_level, pkt.ts);
        }
        // Before the mute check: a packet that arrived while muted is no loss.
        let missing = if codec == CodecKind::Red { track.red_received.note(pkt.seq) } else { 0 };
        if track.muted {
            return;
        }
        // Followers get the packet as it came; their mirrors recover for themselves.
        for &f in &track.followers {
            let relayed = Relayed { track: track.relay_id.clone(), packet: pkt.clone() };
            outbox.push((f, CrossMsg::Rtp(relayed)));
            counters.rtp_relayed += 1;
        }
        if track.downs.is_empty() {
            return;
        }
        // Lost on the way in: subscribers without RED get it back from this
        // packet's redundancy, before its primary (`router::red`); once given back
        // it counts as arrived, so the next packet's copy of it is not sent again.
        // (`Received` names no packet before the first, so `back` never reaches
        // below it; remote numbers are still not trusted with a subtraction.)
        let recovered: Vec<(Incoming, CodecKind)> = red::recover(&pkt.payload, missing)
            .into_iter()
            .filter_map(|r| {
                let seq = pkt.seq.checked_sub(r.back)?;
                track.red_received.note(seq);
                let pt = r.pt.into();
                let packet = Incoming {
                    pt,
                    seq,
                    ts: pkt.ts.wrapping_sub(r.timestamp_offset),
                    marker: false,
                    ext: ExtensionValues::default(),
                    payload: r.payload,
                    ..pkt.clone()
                };
                Some((packet, track.codec_of(pt).unwrap_or(CodecKind::Other)))
            })
            .collect();
        for (packet, codec) in recovered {
            self.send_down(tk, &packet, (codec, None), Some(pkt.pt), now);
            self.counters.rtp_red_recovered += 1;
        }
        self.send_down(tk, pkt, (codec, temporal), None, now);
    }

    /// Forward one packet of track `tk` (its codec and VP8 temporal fields, as
    /// `fan_out` read them) to its down tracks on this shard; with `red_pt`, only
    /// to those that get that RED payload type's primary alone (a packet recovered
    /// from RED's redundancy).
    fn send_down(
        &mut self,
        tk: TrackKey,
        pkt: &Incoming,
        (codec, temporal): (CodecKind, Option<temporal::Temporal>),
        red_pt: Option<Pt>,
        now: Instant,
    ) {
        let Core { router, peers, counters, dirty, dirty_since, .. } = self;
        let Some(track) = router.tracks.get_mut(&tk) else { return };
        let pt = pkt.pt;
        let (ssrc, rid) = (pkt.ssrc, pkt.rid);
        let video = track.kind == MediaKind::Video;
        let keyframe = video && codec.needs_keyframe() && is_keyframe_start(codec, &pkt.payload);
        let vp8 = match codec {
            CodecKind::Vp8 => Vp8Descriptor::parse(&pkt.payload).ok(),
            _ => None,
        };
        let in_seq: u64 = pkt.seq;
        let in_ts = pkt.ts;
        let ext = &pkt.ext;
        let mut want_keyframe: Vec<Option<Rid>> = Vec::new();
        let mut red_primary = Primary::default();
        let packet = Packet {
            ssrc,
            rid,
            seq: in_seq,
            ts: in_ts,
            needs_keyframe: video && codec.needs_keyframe(),
            keyframe,
        };

        // Layer choice depends only on the requested quality: three answers per packet.
        let wanted_by_quality = [0u8, 1, 2].map(|q| track.select_rid(q, now));
        // The frame rates of the packet's layer, for down tracks that asked for one.
        let rates = temporal.and_then(|_| track.layers.iter().find(|l| l.rid == rid)).map(|l| &l.frame_rates);
        for d in track.downs.iter_mut() {
            let wanted = wanted_by_quality[usize::from(d.quality.min(d.cap).min(2))];
            if !d.active || d.disabled || d.bw_pause.paused() || d.mid.is_none() {
                continue;
            }
            // Nothing is written before the subscriber's DTLS is up: str0m would
            // queue it and send it late, all at once, and the forwarder must start
            // (at a keyframe) only once the subscriber can receive.
            let Some(sub) = peers.get_mut(&d.sub) else { continue };
            if sub.closed || !sub.connected {
                continue;
            }
            let desc = vp8.as_ref().map(|desc| (desc, &pkt.payload[..]));
            // Only down tracks that asked for a frame rate look up what it needs.
            let temporal = temporal.map(|t| (t, rates.and_then(|r| r.tid_for(d.fps))));
            let (out_seq, out_ts) = match d.fwd.decide(&packet, wanted, desc, temporal, now) {
                Decision::Drop => continue,
                Decision::WaitKeyframe(rid) => {
                    want_keyframe.push(rid);
                    continue;
                }
                Decision::Stale => {
                    counters.rtp_dropped += 1;
                    continue;
                }
                Decision::Forward { seq, ts, switch_to, .. } => {
                    // A pending switch: this layer goes on until the wanted one
                    // has a keyframe.
                    want_keyframe.extend(switch_to);
                    (seq, ts)
                }
            };
            let mid = d.mid.expect("checked above");
            if let Some(red_pt) = red_pt {
                if !d.red_primary_only(red_pt, &sub.rtc, mid) {
                    continue;
                }
            }
            let out_pt = d.map_pt(pt, codec, &sub.rtc, mid);
            let Some((out_pt, red_primary_only)) = out_pt else {
                counters.rtp_dropped += 1;
                continue;
            };
            let payload = if red_primary_only { red_primary.of(&pkt.payload) } else { Some(pkt.payload.clone()) };
            let Some(payload) = payload else {
                counters.rtp_dropped += 1;
                continue;
            };
            let mut api = sub.rtc.direct_api();
            if d.tx_ssrc.is_none() {
                d.tx_ssrc = api.stream_tx_by_mid(mid, None).map(|tx| {
                    // Audio is never paced; video only while the subscriber's link
                    // is short of what it asked for (router::allocator::Pacing).
                    tx.set_unpaced(!video || !sub.pacing.paced());
                    tx.ssrc()
                });
            }
            let Some(tx_ssrc) = d.tx_ssrc else {
                counters.rtp_dropped += 1;
                continue;
            };
            let Some(tx) = api.stream_tx(&tx_ssrc) else {
                d.tx_ssrc = None;
                continue;
            };
            let mut write = RtpWrite::new(out_pt, SeqNo::from(out_seq), out_ts, pkt.received, payload.clone())
                .marker(pkt.marker)
                .ext_vals(ext.clone())
                .nackable(video);
            if let Some(patch) = vp8.as_ref().and_then(|desc| d.fwd.vp8_patch(desc, &pkt.payload, in_seq)) {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            if let Some(h) = d.sent_audio.as_mut() {
                h.push(SentAudio::of(out_pt, out_seq, out_ts, pkt, ext, payload));
            }
            counters.rtp_forwarded += 1;
            if video {
                sub.media_sent = sub.media_sent.saturating_add(1);
            }
            if !sub.dirty {
                sub.dirty = true;
                dirty.push(d.sub);
            }
            dirty_since.get_or_insert(now);
        }
        let mut seen: Vec<Option<Rid>> = Vec::new();
        for rid in want_keyframe {
            if seen.contains(&rid) {
                continue;
            }
            seen.push(rid);
            self.request_keyframe_for(tk, rid, now);
        }
    }
}

/// RTP clock rate of an m-line: 48 kHz audio (Opus), 90 kHz video.
fn clock_rate(rtc: &Rtc, mid: Mid) -> u32 {
    match rtc.media(mid).map(|m| m.kind()) {
        Some(MediaKind::Audio) => 48_000,
        _ => 90_000,
    }
}

/// The subscriber-side payload type for an incoming packet's codec, and whether
/// only the RED primary goes out: RED where the subscriber negotiated it, else its
/// primary as Opus.
fn map_pt(sub: &Rtc, mid: Mid, codec: CodecKind) -> Option<(str0m::media::Pt, bool)> {
    let media = sub.media(mid)?;
    let remote = media.remote_pts();
    let mut params = sub.codec_config().params().iter().filter(|p| remote.is_empty() || remote.contains(&p.pt()));
    if codec == CodecKind::Red {
        let opus = params.find(|p| p.spec().codec == Codec::Opus)?;
        return Some(opus.red().map_or((opus.pt(), true), |red| (red, false)));
    }
    params.find(|p| CodecKind::from_codec(p.spec().codec) == codec).map(|p| (p.pt(), false))
}

impl DownTrack {
    /// The outgoing payload type for incoming `pt` (learnt once per pt), and
    /// whether only the RED primary goes out (`map_pt`).
    fn map_pt(&mut self, pt: Pt, codec: CodecKind, sub: &Rtc, mid: Mid) -> Option<(Pt, bool)> {
        if let Some((_, o)) = self.pt_map.iter().find(|(i, _)| *i == pt) {
            return *o;
        }
        let o = map_pt(sub, mid, codec);
        self.pt_map.push((pt, o));
        o
    }

    /// Whether this subscriber gets RED payload type `red_pt` as its primary alone.
    fn red_primary_only(&mut self, red_pt: Pt, sub: &Rtc, mid: Mid) -> bool {
        self.map_pt(red_pt, CodecKind::Red, sub, mid).is_some_and(|(_, primary_only)| primary_only)
    }
}

#[cfg(test)]
mod ice_grace_tests {
    //! A subscriber peer against an in-memory str0m client on virtual time: the
    //! client goes silent long enough for ICE to report Disconnected.
    use super::*;
    use crate::testkit::{MemNet, VecSink};

    const STEP: Duration = Duration::from_millis(50);

    struct World {
        net: MemNet<VecSink>,
        now: Instant,
    }

    impl World {
        fn new() -> Self {
            let now = Instant::now();
            let server = "10.0.0.1:7882".parse().unwrap();
            let mut net = MemNet::new(Core::new(VecSink::default(), server), server);
            let client = net.add_client("10.0.0.2:5000".parse().unwrap(), now);
            net.core.add_peer("sub", Role::Subscriber, now).unwrap();
            net.server_offer("sub", client, now).unwrap();
            Self { net, now }
        }

        /// Advance virtual time by `dur`; datagrams cross only while `online`.
        fn run(&mut self, dur: Duration, online: bool) {
            self.net.offline = !online;
            let end = self.now + dur;
            while self.now < end {
                self.now += STEP;
                self.net.step(self.now);
            }
        }

        fn closed(&self) -> Option<String> {
            self.net.closed().into_iter().next().map(|(_, reason)| reason)
        }

        fn ice_lost(&self) -> Option<Instant> {
            self.net.core.peers.values().next().and_then(|p| p.ice_lost_at)
        }

        fn connected(&self) -> bool {
            self.net.core.peers.values().next().is_some_and(|p| p.connected)
        }

        /// Go silent until the server's ICE reports Disconnected; when it did.
        fn silence_until_ice_lost(&mut self) -> Instant {
            for _ in 0..1200 {
                self.run(STEP, false);
                if let Some(t) = self.ice_lost() {
                    return t;
                }
            }
            panic!("ICE never reported Disconnected");
        }
    }

    #[test]
    fn a_client_that_comes_back_within_the_grace_keeps_its_peer() {
        let mut w = World::new();
        w.run(Duration::from_secs(2), true);
        assert!(w.connected());
        w.silence_until_ice_lost();
        assert_eq!(w.closed(), None, "Disconnected alone must not close the peer");
        w.run(Duration::from_secs(5), true);
        assert_eq!(w.ice_lost(), None, "ICE recovers once checks arrive again");
        w.run(ICE_DISCONNECTED_GRACE * 2, true);
        assert_eq!(w.closed(), None);
    }

    #[test]
    fn a_client_that_stays_away_is_closed_after_the_grace() {
        let mut w = World::new();
        w.run(Duration::from_secs(2), true);
        let lost = w.silence_until_ice_lost();
        w.run(ICE_DISCONNECTED_GRACE - Duration::from_secs(1), false);
        assert_eq!(w.closed(), None);
        w.run(Duration::from_secs(2), false);
        assert_eq!(w.closed().as_deref(), Some("ice disconnected"));
        assert!(w.now >= lost + ICE_DISCONNECTED_GRACE);
    }
}

#[cfg(test)]
mod feedback_tests {
    //! The engine-wide feedback and loss counters grow by each stream's difference.
    use super::*;
    use crate::testkit::VecSink;

    #[test]
    fn counters_add_differences_and_survive_the_stream() {
        let mut core = Core::new(VecSink::default(), "10.0.0.1:7882".parse().unwrap());
        let mid = Mid::from("0");
        // A subscriber's stream: cumulative counts and remote-reported losses.
        core.count_feedback(1, mid, None, true, [1, 2, 3, 100], Loss::Reported(Some(4)));
        core.count_feedback(1, mid, None, true, [1, 5, 4, 200], Loss::Reported(None));
        core.count_feedback(1, mid, None, true, [2, 5, 9, 300], Loss::Reported(Some(10)));
        let c = &core.counters;
        assert_eq!((c.firs_in, c.plis_in, c.nacks_in, c.packets_lost_out), (2, 5, 9, 10));
        // A publisher's stream: 10 % of the 500 packets since the last event.
        core.count_feedback(2, mid, None, false, [0, 1, 0, 500], Loss::Fraction(Some(0.1)));
        core.count_feedback(2, mid, None, false, [0, 1, 0, 1000], Loss::Fraction(None));
        let c = &core.counters;
        assert_eq!((c.plis_out, c.packets_lost_in), (1, 50));
        // The peer goes; the totals stay, and a new stream starts from zero.
        core.feedback_seen.retain(|(p, ..), _| *p != 1);
        core.count_feedback(1, mid, None, true, [0, 1, 0, 10], Loss::Reported(Some(1)));
        assert_eq!((core.counters.plis_in, core.counters.packets_lost_out), (6, 11));
    }
}
