//! Session resume support, against in-memory str0m clients on virtual time: ICE
//! restarts on both PeerConnections while the client's network changes, and the
//! configurable ICE-disconnected grace.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::core::Core;
use crate::event::MediaEvent;
use crate::fuzz::VecSink;
use crate::peer::Role;

const SERVER: &str = "10.0.0.1:7882";
const STEP: Duration = Duration::from_millis(10);

/// A client PeerConnection on one "network" address at a time: datagrams from or
/// to any other address of it are lost (that network is gone).
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    rtp_received: usize,
}

impl Client {
    fn new(addr: &str, now: Instant) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self { rtc, addr, rtp_received: 0 }
    }

    /// The client's network changed: only `addr` works from now on.
    fn move_to(&mut self, addr: &str) {
        self.addr = addr.parse().unwrap();
        self.rtc.add_local_candidate(Candidate::host(self.addr, "udp").unwrap());
    }

    fn ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }
}

struct World {
    core: Core<VecSink>,
    publisher: Client,
    subscriber: Client,
    audio_mid: Mid,
    seq: u64,
    now: Instant,
    events: Vec<MediaEvent>,
    /// No datagram crosses either way (the client froze or lost its network).
    offline: bool,
}

fn ufrag_of(sdp: &str) -> String {
    sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).expect("an ice-ufrag line").trim().to_string()
}

impl World {
    /// A publisher sending audio to a subscriber through the engine, connected.
    fn new(grace: Option<Duration>) -> Self {
        let now = Instant::now();
        let mut core = Core::new(VecSink::default(), SERVER.parse().unwrap());
        if let Some(g) = grace {
            core.set_ice_disconnected_grace(g);
        }
        core.add_peer("pub", Role::Publisher, now).unwrap();
        core.add_peer("sub", Role::Subscriber, now).unwrap();
        let mut publisher = Client::new("10.0.1.1:5000", now);
        let subscriber = Client::new("10.0.2.1:5000", now);
        let mut api = publisher.rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA".into()), Some("TA".into()), None);
        let (offer, pending) = api.apply().unwrap();
        let answer = core.accept_offer("pub", &offer.to_sdp_string(), now).unwrap();
        publisher.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        let mut w = Self { core, publisher, subscriber, audio_mid, seq: 0, now, events: Vec::new(), offline: false };
        w.negotiate_sub();
        w.run(Duration::from_secs(2), false);
        assert_eq!(w.connected(), 2, "both peers connect: {:?}", w.events);
        w.core.publish_track("pub", &audio_mid.to_string(), "TR_audio", w.now).unwrap();
        w.core.subscribe("sub", "TR_audio", "PA|TR_audio", w.now).unwrap();
        w.negotiate_sub();
        w
    }

    fn connected(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, MediaEvent::PeerConnected { .. })).count()
    }

    fn closed(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::PeerClosed { peer_id, reason } => Some((peer_id.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Server offer, client answer.
    fn negotiate_sub(&mut self) {
        let offer = self.core.create_offer("sub", self.now).unwrap();
        let answer = self.subscriber.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
        self.core.accept_answer("sub", &answer.to_sdp_string(), self.now).unwrap();
    }

    fn send_audio(&mut self) {
        let pt = self.publisher.rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Opus).unwrap().pt();
        self.seq += 1;
        let mut api = self.publisher.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.audio_mid, None) else { return };
        let ts = (self.seq * 960) as u32;
        tx.write_rtp(RtpWrite::new(pt, SeqNo::from(self.seq), ts, self.now, vec![0xfc, self.seq as u8]));
    }

    /// Advance virtual time; the publisher sends 50 audio packets/s when `audio`.
    fn run(&mut self, dur: Duration, audio: bool) {
        let end = self.now + dur;
        let server: SocketAddr = SERVER.parse().unwrap();
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            if audio && (now.duration_since(end - dur).as_millis() / 10).is_multiple_of(2) {
                self.send_audio();
            }
            for c in [&mut self.publisher, &mut self.subscriber] {
                c.rtc.handle_input(Input::Timeout(now)).unwrap();
                while let Ok(out) = c.rtc.poll_output() {
                    match out {
                        Output::Transmit(t) if t.source == c.addr && !self.offline => {
                            self.core.handle_datagram(t.source, &t.contents, now)
                        }
                        Output::Transmit(_) => {}
                        Output::Event(Event::RtpPacket(_)) => c.rtp_received += 1,
                        Output::Event(_) => {}
                        Output::Timeout(_) => break,
                    }
                }
            }
            self.core.handle_timeout(now);
            for (dest, d) in std::mem::take(&mut self.core.sink_mut().0) {
                for c in [&mut self.publisher, &mut self.subscriber] {
                    if dest != c.addr || self.offline {
                        continue;
                    }
                    let contents = d.as_slice().try_into().unwrap();
                    let input = Input::Receive(now, Receive { proto: Protocol::Udp, source: server, destination: dest, contents });
                    c.rtc.handle_input(input).unwrap();
                }
            }
            self.events.append(&mut self.core.events);
        }
    }

    /// Audio packets the subscriber receives over `dur` of sending.
    fn delivered_over(&mut self, dur: Duration) -> usize {
        let before = self.subscriber.rtp_received;
        self.run(dur, true);
        self.subscriber.rtp_received - before
    }
}

#[test]
fn media_flows_before_any_restart() {
    let mut w = World::new(None);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "{got} of 100 packets");
}

/// The client resumes from a new network and its publisher PeerConnection offers
/// an ICE restart: the answer carries new credentials, the checks from the new
/// address name them, and the subscriber keeps hearing the publisher.
#[test]
fn a_publisher_that_restarts_ice_from_a_new_address_keeps_delivering() {
    let mut w = World::new(None);
    assert!(w.delivered_over(Duration::from_secs(1)) >= 40);
    let old_ufrag = w.core._rtc_mut("pub").unwrap().direct_api().local_ice_credentials().ufrag;
    let client_ufrag = w.publisher.ufrag();

    let mut api = w.publisher.rtc.sdp_api();
    api.ice_restart(false);
    let (offer, pending) = api.apply().expect("an ICE restart is a change");
    let offer = offer.to_sdp_string();
    assert_ne!(ufrag_of(&offer), client_ufrag, "the client offers new credentials");
    let answer = w.core.accept_offer("pub", &offer, w.now).unwrap();
    let new_ufrag = ufrag_of(&answer);
    assert_ne!(new_ufrag, old_ufrag, "the engine answers a restart with new credentials");
    w.publisher.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    w.publisher.move_to("10.0.1.2:6000");

    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
    assert_eq!(w.closed(), vec![]);
}

/// The server restarts ICE on a subscriber PeerConnection (the client came back
/// from a new network): the offer carries new credentials, the client answers with
/// its own, and media reaches it at its new address.
#[test]
fn a_subscriber_restarted_by_the_servers_offer_keeps_receiving() {
    let mut w = World::new(None);
    assert!(w.delivered_over(Duration::from_secs(1)) >= 40);
    let old_ufrag = w.core._rtc_mut("sub").unwrap().direct_api().local_ice_credentials().ufrag;
    let old_client_ufrag = w.subscriber.ufrag();

    let offer = w.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&offer), old_ufrag, "the restart offer carries new credentials");
    // Asked again before the answer (nothing else changed), the engine repeats the
    // restart offer and still applies its answer.
    assert_eq!(w.core.create_offer("sub", w.now).unwrap(), offer);
    let answer = w.subscriber.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    w.core.accept_answer("sub", &answer.to_sdp_string(), w.now).unwrap();
    assert_ne!(w.subscriber.ufrag(), old_client_ufrag, "the client answered with new credentials");
    w.subscriber.move_to("10.0.2.2:6000");

    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
    assert_eq!(w.closed(), vec![]);

    // Every restart offer has fresh credentials, also one that follows a restart.
    let again = w.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&again), ufrag_of(&offer), "every restart offer has fresh credentials");
}

/// The grace is the engine's setting: a client gone silent is closed that long
/// after ICE reported Disconnected, not after the default.
#[test]
fn the_ice_disconnected_grace_is_configurable() {
    let grace = Duration::from_secs(30);
    let mut w = World::new(Some(grace));
    w.offline = true;
    let mut lost = None;
    for _ in 0..600 {
        w.run(Duration::from_millis(100), false);
        lost = w.core._ice_lost_at("pub").zip(w.core._ice_lost_at("sub")).map(|(a, b)| a.max(b));
        if lost.is_some() {
            break;
        }
    }
    let lost = lost.expect("ICE reports Disconnected once the client is silent");
    w.run(crate::core::ICE_DISCONNECTED_GRACE + Duration::from_secs(15), false);
    assert_eq!(w.closed(), vec![], "the default grace would have closed both by now");
    w.run(lost + grace + Duration::from_secs(1) - w.now, false);
    let closed = w.closed();
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert!(closed.iter().all(|(_, r)| r == "ice disconnected"), "{closed:?}");
}

/// The client froze before answering an offer (here: a resubscription's fresh
/// m-line) and resumes from a new network: the restart offer replaces the lost one
/// and carries its m-line, so media flows once the client answers.
#[test]
fn a_restart_offer_replaces_an_unanswered_one() {
    let mut w = World::new(None);
    w.core.unsubscribe("sub", "TR_audio").unwrap();
    w.negotiate_sub();
    w.core.subscribe("sub", "TR_audio", "PA|TR_audio", w.now).unwrap();
    let lost = w.core.create_offer("sub", w.now).unwrap();
    let sendonly = |sdp: &str| sdp.matches("a=sendonly").count();
    assert_eq!(sendonly(&lost), 1, "the fresh m-line: {lost}");
    w.offline = true;
    w.run(Duration::from_secs(1), true);
    w.offline = false;

    let offer = w.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&offer), ufrag_of(&lost), "a restart");
    assert_eq!(sendonly(&offer), 1, "the lost offer's m-line is offered again: {offer}");
    let answer = w.subscriber.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    w.core.accept_answer("sub", &answer.to_sdp_string(), w.now).unwrap();
    w.subscriber.move_to("10.0.2.3:7000");
    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
}

/// Before the first answer there is nothing to restart: the offer is a plain one
/// (str0m would not take new credentials from a first answer).
#[test]
fn a_restart_before_the_first_answer_is_a_plain_offer() {
    let now = Instant::now();
    let mut core = Core::new(VecSink::default(), SERVER.parse().unwrap());
    core.add_peer("sub", Role::Subscriber, now).unwrap();
    let first = core.create_offer("sub", now).unwrap();
    let again = core.create_ice_restart_offer("sub", now).unwrap();
    assert_eq!(again, first);
}
