//! Session resume support, against in-memory str0m clients on virtual time: ICE
//! restarts on both PeerConnections while the client's network changes, and the
//! configurable ICE-disconnected grace.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::{RtpWrite, SeqNo};

use crate::core::Core;
use crate::peer::Role;
use crate::testkit::{MemClient, MemNet, VecSink};

const SERVER: &str = "10.0.0.1:7882";
const STEP: Duration = Duration::from_millis(10);
const PUBLISHER: usize = 0;
const SUBSCRIBER: usize = 1;

struct World {
    net: MemNet<VecSink>,
    audio_mid: Mid,
    seq: u64,
    now: Instant,
}

fn ufrag_of(sdp: &str) -> String {
    sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).expect("an ice-ufrag line").trim().to_string()
}

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

impl World {
    /// A publisher sending audio to a subscriber through the engine, connected.
    fn new(grace: Option<Duration>) -> Self {
        let now = Instant::now();
        let mut core = Core::new(VecSink::default(), addr(SERVER));
        if let Some(g) = grace {
            core.set_ice_disconnected_grace(g);
        }
        core.add_peer("pub", Role::Publisher, now).unwrap();
        core.add_peer("sub", Role::Subscriber, now).unwrap();
        let mut net = MemNet::new(core, addr(SERVER));
        net.add_client(addr("10.0.1.1:5000"), now);
        net.add_client(addr("10.0.2.1:5000"), now);
        let mut api = net.clients[PUBLISHER].rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA".into()), Some("TA".into()), None);
        let offer = api.apply().unwrap();
        net.client_offer("pub", PUBLISHER, offer, now).unwrap();
        let mut w = Self { net, audio_mid, seq: 0, now };
        w.negotiate_sub();
        w.run(Duration::from_secs(2), false);
        assert_eq!(w.net.connected(), 2, "both peers connect: {:?}", w.net.events);
        w.net.core.publish_track("pub", &audio_mid.to_string(), "TR_audio", w.now).unwrap();
        w.net.core.subscribe("sub", "TR_audio", "PA|TR_audio", w.now).unwrap();
        w.negotiate_sub();
        w
    }

    fn publisher(&mut self) -> &mut MemClient {
        &mut self.net.clients[PUBLISHER]
    }

    fn subscriber(&mut self) -> &mut MemClient {
        &mut self.net.clients[SUBSCRIBER]
    }

    /// Server offer, client answer.
    fn negotiate_sub(&mut self) {
        self.net.server_offer("sub", SUBSCRIBER, self.now).unwrap();
    }

    fn send_audio(&mut self) {
        let (seq, now, mid) = (self.seq + 1, self.now, self.audio_mid);
        self.seq = seq;
        let rtc = &mut self.publisher().rtc;
        let pt = rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Opus).unwrap().pt();
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return };
        let ts = (seq * 960) as u32;
        tx.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), ts, now, vec![0xfc, seq as u8]));
    }

    /// Advance virtual time; the publisher sends 50 audio packets/s when `audio`.
    fn run(&mut self, dur: Duration, audio: bool) {
        let end = self.now + dur;
        while self.now < end {
            self.now += STEP;
            if audio && (self.now.duration_since(end - dur).as_millis() / 10).is_multiple_of(2) {
                self.send_audio();
            }
            self.net.step(self.now);
        }
    }

    /// Audio packets the subscriber receives over `dur` of sending.
    fn delivered_over(&mut self, dur: Duration) -> usize {
        let before = self.subscriber().rtp.len();
        self.run(dur, true);
        self.subscriber().rtp.len() - before
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
    let old_ufrag = w.net.core._rtc_mut("pub").unwrap().direct_api().local_ice_credentials().ufrag;
    let client_ufrag = w.publisher().ufrag();

    let mut api = w.publisher().rtc.sdp_api();
    api.ice_restart(false);
    let (offer, pending) = api.apply().expect("an ICE restart is a change");
    let offer = offer.to_sdp_string();
    assert_ne!(ufrag_of(&offer), client_ufrag, "the client offers new credentials");
    let answer = w.net.core.accept_offer("pub", &offer, w.now).unwrap();
    let new_ufrag = ufrag_of(&answer);
    assert_ne!(new_ufrag, old_ufrag, "the engine answers a restart with new credentials");
    w.publisher().rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    w.publisher().move_to(addr("10.0.1.2:6000"));

    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
    assert_eq!(w.net.closed(), vec![]);
}

/// The server restarts ICE on a subscriber PeerConnection (the client came back
/// from a new network): the offer carries new credentials, the client answers with
/// its own, and media reaches it at its new address.
#[test]
fn a_subscriber_restarted_by_the_servers_offer_keeps_receiving() {
    let mut w = World::new(None);
    assert!(w.delivered_over(Duration::from_secs(1)) >= 40);
    let old_ufrag = w.net.core._rtc_mut("sub").unwrap().direct_api().local_ice_credentials().ufrag;
    let old_client_ufrag = w.subscriber().ufrag();

    let offer = w.net.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&offer), old_ufrag, "the restart offer carries new credentials");
    // Asked again before the answer (nothing else changed), the engine repeats the
    // restart offer and still applies its answer.
    assert_eq!(w.net.core.create_offer("sub", w.now).unwrap(), offer);
    let answer = w.subscriber().rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    w.net.core.accept_answer("sub", &answer.to_sdp_string(), w.now).unwrap();
    assert_ne!(w.subscriber().ufrag(), old_client_ufrag, "the client answered with new credentials");
    w.subscriber().move_to(addr("10.0.2.2:6000"));

    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
    assert_eq!(w.net.closed(), vec![]);

    // Every restart offer has fresh credentials, also one that follows a restart.
    let again = w.net.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&again), ufrag_of(&offer), "every restart offer has fresh credentials");
}

/// The grace is the engine's setting: a client gone silent is closed that long
/// after ICE reported Disconnected, not after the default.
#[test]
fn the_ice_disconnected_grace_is_configurable() {
    let grace = Duration::from_secs(30);
    let mut w = World::new(Some(grace));
    w.net.offline = true;
    let mut lost = None;
    for _ in 0..600 {
        w.run(Duration::from_millis(100), false);
        lost = w.net.core._ice_lost_at("pub").zip(w.net.core._ice_lost_at("sub")).map(|(a, b)| a.max(b));
        if lost.is_some() {
            break;
        }
    }
    let lost = lost.expect("ICE reports Disconnected once the client is silent");
    w.run(crate::core::ICE_DISCONNECTED_GRACE + Duration::from_secs(15), false);
    assert_eq!(w.net.closed(), vec![], "the default grace would have closed both by now");
    w.run(lost + grace + Duration::from_secs(1) - w.now, false);
    let closed = w.net.closed();
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert!(closed.iter().all(|(_, r)| r == "ice disconnected"), "{closed:?}");
}

/// The client froze before answering an offer (here: a resubscription's fresh
/// m-line) and resumes from a new network: the restart offer replaces the lost one
/// and carries its m-line, so media flows once the client answers.
#[test]
fn a_restart_offer_replaces_an_unanswered_one() {
    let mut w = World::new(None);
    w.net.core.unsubscribe("sub", "TR_audio").unwrap();
    w.negotiate_sub();
    w.net.core.subscribe("sub", "TR_audio", "PA|TR_audio", w.now).unwrap();
    let lost = w.net.core.create_offer("sub", w.now).unwrap();
    let sendonly = |sdp: &str| sdp.matches("a=sendonly").count();
    assert_eq!(sendonly(&lost), 1, "the fresh m-line: {lost}");
    w.net.offline = true;
    w.run(Duration::from_secs(1), true);
    w.net.offline = false;

    let offer = w.net.core.create_ice_restart_offer("sub", w.now).unwrap();
    assert_ne!(ufrag_of(&offer), ufrag_of(&lost), "a restart");
    assert_eq!(sendonly(&offer), 1, "the lost offer's m-line is offered again: {offer}");
    let answer = w.subscriber().rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    w.net.core.accept_answer("sub", &answer.to_sdp_string(), w.now).unwrap();
    w.subscriber().move_to(addr("10.0.2.3:7000"));
    w.run(Duration::from_millis(500), true);
    let got = w.delivered_over(Duration::from_secs(2));
    assert!(got >= 80, "after the restart the subscriber got {got} of 100 packets");
}

/// Before the first answer there is nothing to restart: the offer is a plain one
/// (str0m would not take new credentials from a first answer).
#[test]
fn a_restart_before_the_first_answer_is_a_plain_offer() {
    let now = Instant::now();
    let mut core = Core::new(VecSink::default(), addr(SERVER));
    core.add_peer("sub", Role::Subscriber, now).unwrap();
    let first = core.create_offer("sub", now).unwrap();
    let again = core.create_ice_restart_offer("sub", now).unwrap();
    assert_eq!(again, first);
}
