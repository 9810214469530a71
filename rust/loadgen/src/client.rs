//! One synthetic participant's PeerConnection: a str0m client (full ICE,
//! controlling when it offers) on its own UDP socket, plus the synthetic tracks
//! it publishes.
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use pysfu_engine::{EngineError, Result};

use crate::measure::{LossTracker, Totals};
use crate::synth::{Kind, Source, Trailer};

/// A track asked for in `publisher_offer`, bound to its mid and payload type
/// once the answer arrives.
struct Outgoing {
    mid: Mid,
    pt: Option<Pt>,
    source: Source,
}

pub struct ClientPeer {
    rtc: Rtc,
    pub socket: UdpSocket,
    local: SocketAddr,
    outgoing: Vec<Outgoing>,
    pending: Option<SdpPendingOffer>,
    pub next_timeout: Instant,
    pub connected_at: Option<Instant>,
    pub first_media_at: Option<Instant>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub alive: bool,
    loss: LossTracker,
}

fn rtc_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Rtc(e.to_string())
}

impl ClientPeer {
    pub fn new(socket: UdpSocket, crypto: Arc<CryptoProvider>, now: Instant) -> Result<Self> {
        let local = socket.local_addr()?;
        // The engine's test world's client (RTP mode, one shared certificate: a key
        // pair per peer would make a burst of joins wait on key generation).
        let mut rtc = pysfu_engine::testkit::client_config()
            .set_crypto_provider(crypto)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            // Statistics events cost time per peer and nobody reads them.
            .set_stats_interval(None)
            .build(now);
        let candidate = Candidate::host(local, "udp").map_err(rtc_err)?;
        rtc.add_local_candidate(candidate);
        // str0m's ICE agent reports no timeout until it has seen one: a peer whose
        // first drain came before any tick got a far-off timeout and never started
        // its checks (most of a burst of joins stayed silent).
        rtc.handle_input(Input::Timeout(now)).map_err(rtc_err)?;
        Ok(Self {
            rtc,
            socket,
            local,
            outgoing: Vec::new(),
            pending: None,
            next_timeout: now,
            connected_at: None,
            first_media_at: None,
            packets_received: 0,
            packets_sent: 0,
            alive: true,
            loss: LossTracker::default(),
        })
    }

    /// Offer one sendonly m-line per track; `tracks` are (cid, kind, kbps, global track number).
    pub fn publisher_offer(&mut self, tracks: &[(String, Kind, u32, u32)], now: Instant) -> Result<String> {
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for (cid, kind, kbps, number) in tracks {
            let media_kind = match kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            };
            let mid = api.add_media(media_kind, Direction::SendOnly, Some("loadtest".into()), Some(cid.clone()), None);
            added.push(Outgoing { mid, pt: None, source: Source::new(*kind, *number, *kbps, now) });
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| EngineError::NothingToNegotiate("publisher offer without tracks".into()))?;
        self.outgoing.extend(added);
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    pub fn accept_answer(&mut self, sdp: &str, now: Instant, totals: &mut Totals) -> Result<()> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| EngineError::NoPendingOffer("no outstanding publisher offer".into()))?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        for out in &mut self.outgoing {
            out.pt = negotiated_pt(&self.rtc, out.mid, out.source.kind);
        }
        self.drain(now, totals);
        Ok(())
    }

    pub fn accept_offer(&mut self, sdp: &str, now: Instant, totals: &mut Totals) -> Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| EngineError::RemoteSdp(e.to_string()))?;
        self.drain(now, totals);
        Ok(answer.to_sdp_string())
    }

    pub fn add_remote_candidate(&mut self, line: &str, now: Instant, totals: &mut Totals) -> Result<()> {
        let c = pysfu_engine::sdp::parse_candidate(line)?;
        self.rtc.add_remote_candidate(c);
        self.drain(now, totals);
        Ok(())
    }

    /// Read every queued datagram (the socket is edge-triggered).
    pub fn read_socket(&mut self, buf: &mut [u8], totals: &mut Totals) {
        loop {
            let (n, source) = match self.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let now = Instant::now();
            let Ok(contents) = (&buf[..n]).try_into() else { continue };
            let input = Input::Receive(
                now,
                Receive { proto: Protocol::Udp, source, destination: self.local, contents },
            );
            if self.rtc.handle_input(input).is_ok() {
                self.drain(now, totals);
            }
        }
    }

    /// Timers and due media; `clock` maps an instant to trailer time.
    pub fn tick(&mut self, now: Instant, clock: &impl Fn(Instant) -> u64, totals: &mut Totals) {
        if self.connected_at.is_some() && self.alive {
            self.send_due_media(now, clock, totals);
        }
        if self.next_timeout <= now {
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.alive = false;
            }
            self.drain(now, totals);
        }
    }

    fn send_due_media(&mut self, now: Instant, clock: &impl Fn(Instant) -> u64, totals: &mut Totals) {
        let mut wrote = false;
        for out in &mut self.outgoing {
            let Some(pt) = out.pt else { continue };
            let packets = out.source.poll(now, clock);
            let mut api = self.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out.mid, None) else { continue };
            for p in packets {
                totals.packets_sent += 1;
                totals.bytes_sent += p.payload.len() as u64;
                self.packets_sent += 1;
                let write = RtpWrite::new(pt, SeqNo::from(p.seq), p.rtp_time, now, p.payload)
                    .marker(p.marker)
                    .nackable(out.source.kind == Kind::Video);
                tx.write_rtp(write);
                wrote = true;
            }
        }
        if wrote {
            self.next_timeout = now;
        }
    }

    pub fn disconnect(&mut self) {
        self.rtc.disconnect();
        self.alive = false;
    }

    pub fn expected(&self) -> u64 {
        self.loss.expected()
    }

    pub fn reordered(&self) -> u64 {
        self.loss.reordered()
    }

    pub fn clear_loss(&mut self) {
        self.loss.clear();
    }

    fn drain(&mut self, now: Instant, totals: &mut Totals) {
        loop {
            let output = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    self.alive = false;
                    return;
                }
            };
            match output {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    // A full socket buffer drops the datagram, as a network would.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.on_event(e, now, totals),
            }
        }
    }

    fn on_event(&mut self, e: Event, now: Instant, totals: &mut Totals) {
        match e {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.alive = false;
            }
            Event::KeyframeRequest(r) => {
                for out in self.outgoing.iter_mut().filter(|o| o.mid == r.mid) {
                    out.source.request_keyframe();
                }
            }
            Event::RtpPacket(p) => {
                let Some(trailer) = Trailer::read(&p.payload) else { return };
                self.first_media_at.get_or_insert(p.timestamp);
                self.packets_received += 1;
                self.loss.record(trailer.track, trailer.counter);
                totals.packets_received += 1;
                totals.bytes_received += p.payload.len() as u64;
                let us = totals.ns(p.timestamp).saturating_sub(trailer.sent_ns) / 1000;
                totals.latency.record(us);
            }
            _ => {}
        }
    }
}

/// The payload type the answer agreed on for our codec of `kind`.
fn negotiated_pt(rtc: &Rtc, mid: Mid, kind: Kind) -> Option<Pt> {
    let codec = match kind {
        Kind::Audio => Codec::Opus,
        Kind::Video => Codec::Vp8,
    };
    let remote = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == codec)
        .map(|p| p.pt())
        .find(|pt| remote.contains(pt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pysfu_engine::{Core, Role, Sink};
    use std::time::Duration;

    struct Discard;
    impl Sink for Discard {
        fn send(&mut self, _: SocketAddr, _: &[u8]) {}
    }

    #[test]
    fn a_peer_answering_before_its_first_tick_still_starts_ice_at_once() {
        let now = Instant::now();
        let mut server = Core::new(Discard, "127.0.0.1:7882".parse().unwrap());
        server.add_peer("sub", Role::Subscriber, now).unwrap();
        let offer = server.create_offer("sub", now).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let mut totals = Totals::new(now);
        let mut peer = ClientPeer::new(socket, crypto, now).unwrap();
        // Answer straight away, as a burst of joins does: no tick in between.
        peer.accept_offer(&offer, now, &mut totals).unwrap();
        assert!(peer.next_timeout <= now + Duration::from_millis(100));
        peer.tick(now + Duration::from_millis(1), &|_| 0, &mut totals);
        assert!(
            peer.next_timeout <= now + Duration::from_secs(1),
            "ICE checks are due soon, not in {:?}",
            peer.next_timeout - now
        );
    }
}
