//! One PeerConnection: a str0m `Rtc` plus what the engine knows about it.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{Mid, Rid};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::{RawPacket, Ssrc};
use str0m::{Event, Input, Output, Rtc};

use crate::link_stats::LinkAcc;
use crate::router::allocator::{LossCap, Pacing, FEEDBACK_TIMEOUT_INTERVALS, FEEDBACK_TIMEOUT_LOSS};
use crate::router::TrackKey;
use crate::PeerKey;

/// How far ahead of the caller's `now` a peer's drain may serve str0m's timeouts
/// (see `Peer::drain`): the pacer asks for one a microsecond after each packet.
const PACED_SLACK: Duration = Duration::from_micros(50);

/// Timeouts one drain serves at most, so one peer's backlog cannot hold the shard.
const MAX_TIMEOUTS_PER_DRAIN: u32 = 64;

/// Which of the participant's two PeerConnections this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Client offers, server answers; media flows in.
    Publisher,
    /// Server offers, client answers; media flows out.
    Subscriber,
}

/// Labels of LiveKit's data channels.
pub const LABEL_RELIABLE: &str = "_reliable";
pub const LABEL_LOSSY: &str = "_lossy";

/// Where `poll_output` sends datagrams.
pub trait Sink {
    /// Send one datagram; failures are dropped (UDP).
    fn send(&mut self, dest: SocketAddr, data: &[u8]);

    /// Send one packet over the ICE-TCP connection from `dest` (RFC 4571 framing is
    /// the sink's business). Sinks without TCP drop it.
    fn send_stream(&mut self, dest: SocketAddr, data: &[u8]) {
        let _ = (dest, data);
    }

    /// ICE-TCP frames queued for the shard that holds the connections (see
    /// `crate::shard`); sinks that hold them, or drop them, have none.
    fn stream_frames(&mut self) -> Option<Vec<(SocketAddr, Vec<u8>)>> {
        None
    }
}

/// A peer and its negotiation/forwarding side tables.
pub struct Peer {
    pub id: String,
    pub key: PeerKey,
    pub role: Role,
    pub rtc: Rtc,
    pub next_timeout: Instant,
    pub connected: bool,
    /// When ICE last went Disconnected without recovering since; the peer fails
    /// `ice_grace` later.
    pub ice_lost_at: Option<Instant>,
    /// How long ICE may stay Disconnected (the engine's setting when the peer was made).
    pub ice_grace: Duration,
    /// PeerClosed was emitted (or the peer is being removed): stay quiet.
    pub closed: bool,
    /// RTP was written since the last flush (listed in `Core::dirty`).
    pub dirty: bool,
    /// Open data channels by label kind (reliable = true).
    pub channels: HashMap<ChannelId, bool>,
    pub reliable: Option<ChannelId>,
    pub lossy: Option<ChannelId>,
    /// Subscriber: the server's data channels were put in an offer.
    pub channels_offered: bool,
    pub pending_offer: Option<SdpPendingOffer>,
    /// Subscriber, while `pending_offer` is unanswered: what it added or changed,
    /// to offer again if a new offer replaces it.
    pub pending_mids: Vec<(TrackKey, Mid)>,
    pub pending_orphans: Vec<Mid>,
    pub channels_pending: bool,
    pub restart_pending: bool,
    /// Subscriber: an answer was accepted (the client's ICE credentials are known).
    pub answered: bool,
    /// Subscriber: the last offer we made (repeated when nothing changed).
    pub last_offer: Option<String>,
    /// Subscriber: the outstanding offer is a repeat; its answer changes nothing.
    pub repeated_offer: bool,
    /// Publisher: msid track id per mid from the latest remote offer.
    pub msid_by_mid: HashMap<String, String>,
    /// Publisher: mids already reported with TrackArrived.
    pub arrived: HashSet<Mid>,
    /// Publisher: (mid, rid) per incoming SSRC, cached from str0m's stream table.
    pub rx_ssrc: HashMap<Ssrc, (Mid, Option<Rid>)>,
    /// Subscriber: m-lines whose track went away, to turn inactive in the next offer.
    pub orphan_mids: Vec<Mid>,
    /// Stream stats since the last `LinkStats` event.
    pub link: LinkAcc,
    /// Subscriber: str0m's egress bandwidth estimate (TWCC), bit/s, while it can probe.
    pub bwe_bps: Option<u64>,
    /// Loss its receiver reports gave since the last allocation: (sum of fractions,
    /// reports), for the loss-based cap.
    pub egress_loss: (f32, u32),
    /// The loss-based cap over `bwe_bps` (see `router::allocator::LossCap`).
    pub loss_cap: LossCap,
    /// Subscriber: whether its video streams go through str0m's pacer (see
    /// `router::allocator::Pacing`).
    pub pacing: Pacing,
    /// Video packets written to it since the last allocation.
    pub media_sent: u32,
    /// Allocations in a row in which video went out and no receiver report came.
    pub silent_intervals: u8,
}

impl Peer {
    /// Wrap a configured `Rtc`.
    pub fn new(id: String, key: PeerKey, role: Role, rtc: Rtc, now: Instant, ice_grace: Duration) -> Self {
        Self {
            id,
            key,
            role,
            rtc,
            next_timeout: now,
            connected: false,
            ice_lost_at: None,
            ice_grace,
            closed: false,
            dirty: false,
            channels: HashMap::new(),
            reliable: None,
            lossy: None,
            channels_offered: false,
            pending_offer: None,
            pending_mids: Vec::new(),
            pending_orphans: Vec::new(),
            channels_pending: false,
            restart_pending: false,
            answered: false,
            last_offer: None,
            repeated_offer: false,
            msid_by_mid: HashMap::new(),
            arrived: HashSet::new(),
            rx_ssrc: HashMap::new(),
            orphan_mids: Vec::new(),
            link: LinkAcc::default(),
            bwe_bps: None,
            egress_loss: (0.0, 0),
            loss_cap: LossCap::default(),
            pacing: Pacing::default(),
            media_sent: 0,
            silent_intervals: 0,
        }
    }

    /// When the engine must next look at this peer: str0m's timer, or the end of
    /// its ICE grace period.
    pub fn deadline(&self) -> Instant {
        match self.ice_lost_at {
            Some(t) => self.next_timeout.min(t + self.ice_grace),
            None => self.next_timeout,
        }
    }

    /// The mean loss of the receiver reports since the last call (None: none came);
    /// no loss at all when no video was sent since (nothing could be lost), and
    /// `FEEDBACK_TIMEOUT_LOSS` once video went out for `FEEDBACK_TIMEOUT_INTERVALS`
    /// calls in a row without a report.
    pub fn take_egress_loss(&mut self) -> Option<f32> {
        let (sum, n) = std::mem::take(&mut self.egress_loss);
        if std::mem::take(&mut self.media_sent) == 0 {
            self.silent_intervals = 0;
            return Some(0.0);
        }
        if n > 0 {
            self.silent_intervals = 0;
            return Some(sum / n as f32);
        }
        self.silent_intervals = self.silent_intervals.saturating_add(1);
        (self.silent_intervals >= FEEDBACK_TIMEOUT_INTERVALS).then_some(FEEDBACK_TIMEOUT_LOSS)
    }

    /// Drain `poll_output` to its timeout: transmit datagrams, collect events.
    /// Returns false when str0m reported an error (the peer is unusable).
    ///
    /// str0m's pacer releases one packet per timeout and then asks for another a
    /// microsecond later; those timeouts are served here, on the spot, rather than
    /// by a round of the run loop (which looks at every peer) per paced packet.
    /// Time fed so runs at most `PACED_SLACK` ahead of `now`.
    pub fn drain<S: Sink>(
        &mut self,
        sink: &mut S,
        events: &mut Vec<(PeerKey, Event)>,
        tx: &mut crate::Counters,
        now: Instant,
    ) -> bool {
        let mut served = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if t <= now + PACED_SLACK && served < MAX_TIMEOUTS_PER_DRAIN && !self.closed {
                        served += 1;
                        if let Err(e) = self.rtc.handle_input(Input::Timeout(t.max(now))) {
                            tracing::debug!(peer = %self.id, "timeout: {e}");
                        }
                        continue;
                    }
                    self.next_timeout = t;
                    return true;
                }
                Ok(Output::Transmit(t)) => {
                    tx.packets_out += 1;
                    tx.bytes_out += t.contents.len() as u64;
                    if t.proto == str0m::net::Protocol::Udp {
                        sink.send(t.destination, &t.contents);
                    } else {
                        sink.send_stream(t.destination, &t.contents);
                    }
                }
                // Raw packets are on only for the NACKs they carry (audio resends,
                // see `router::audio_history`); every other copy is dropped here.
                Ok(Output::Event(Event::RawPacket(raw))) => {
                    if matches!(*raw, RawPacket::RtcpRx(Rtcp::Nack(_))) {
                        events.push((self.key, Event::RawPacket(raw)));
                    }
                }
                Ok(Output::Event(e)) => events.push((self.key, e)),
                Err(e) => {
                    tracing::debug!(peer = %self.id, "poll_output failed: {e}");
                    return false;
                }
            }
        }
    }
}
