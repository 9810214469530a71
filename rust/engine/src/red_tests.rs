//! RED (RFC 2198) through the engine, with str0m clients on virtual time: a
//! publisher sends Opus wrapped in RED and loses packets on the way in; a
//! subscriber without RED gets plain Opus, the lost packets given back from the
//! next packets' redundancy, in order and with their own numbers; one with RED
//! gets the RED packets as they came.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::{RedEncoder, RedundantBlock, RtpWrite, SeqNo};

use crate::core::Core;
use crate::peer::Role;
use crate::testkit::{client_config, MemNet, VecSink};

const STEP: Duration = Duration::from_millis(10);
const PUBLISHER: usize = 0;
const PLAIN: usize = 1;
const WITH_RED: usize = 2;

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// The Opus frame of packet `n` (distinct per packet, so a recovered one is known).
fn frame(n: u64) -> Vec<u8> {
    vec![0xfc, n as u8, (n >> 8) as u8, 0x55]
}

struct World {
    net: MemNet<VecSink>,
    mid: Mid,
    now: Instant,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let server = addr("10.0.0.1:7882");
        let mut net = MemNet::new(Core::new(VecSink::default(), server), server);
        // The publisher and one subscriber negotiate RED (as browsers do); the other
        // subscriber only Opus (as pion clients do).
        let red = || client_config().clear_codecs().enable_opus(true, true);
        net.add_client_with(red(), addr("10.0.1.1:5000"), now);
        net.add_client(addr("10.0.2.1:5000"), now);
        net.add_client_with(red(), addr("10.0.2.2:5000"), now);
        net.core.add_peer("pub", Role::Publisher, now).unwrap();
        let mut api = net.clients[PUBLISHER].rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA".into()), Some("TA".into()), None);
        let offer = api.apply().unwrap();
        net.client_offer("pub", PUBLISHER, offer, now).unwrap();
        for (id, client) in [("plain", PLAIN), ("red", WITH_RED)] {
            net.core.add_peer(id, Role::Subscriber, now).unwrap();
            net.server_offer(id, client, now).unwrap();
        }
        let mut w = Self { net, mid, now };
        w.run(Duration::from_secs(2));
        assert_eq!(w.net.connected(), 3, "every peer connects: {:?}", w.net.events);
        w.net.core.publish_track("pub", &mid.to_string(), "TR_audio", w.now).unwrap();
        for (id, client) in [("plain", PLAIN), ("red", WITH_RED)] {
            w.net.core.subscribe(id, "TR_audio", "PA|TR_audio", w.now).unwrap();
            w.net.server_offer(id, client, w.now).unwrap();
        }
        w.run(Duration::from_millis(200));
        w
    }

    fn run(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.now += STEP;
            self.net.step(self.now);
        }
    }

    /// Packet `n` as the publisher's RED encoder makes it: its frame, after the two
    /// before it.
    fn send(&mut self, n: u64) {
        let rtc = &mut self.net.clients[PUBLISHER].rtc;
        let opus = rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Opus).unwrap();
        let (opus_pt, red_pt) = (opus.pt(), opus.red().expect("RED negotiated"));
        let block = |back: u64| RedundantBlock {
            pt: *opus_pt,
            timestamp_offset: 960 * back as u32,
            payload: frame(n - back),
        };
        let redundant: Vec<_> = (1..=2u64).rev().filter(|b| *b < n).map(block).collect();
        let payload = RedEncoder::encode(*opus_pt, &frame(n), &redundant);
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(self.mid, None).unwrap();
        tx.write_rtp(RtpWrite::new(red_pt, SeqNo::from(1000 + n), (960 * n) as u32, self.now, payload));
        self.run(STEP * 2);
    }
}

#[test]
fn a_subscriber_without_red_gets_lost_packets_back_from_the_redundancy() {
    let mut w = World::new();
    // Packets 1..=12; 5 and 8, 9 are lost on the way to the server.
    for n in 1..=12 {
        if ![5, 8, 9].contains(&n) {
            w.send(n);
        }
    }
    w.run(Duration::from_millis(200));
    let plain = &w.net.clients[PLAIN].rtp;
    let frames: Vec<Vec<u8>> = plain.iter().map(|(_, _, p)| p.to_vec()).collect();
    let want: Vec<Vec<u8>> = (1..=12).map(frame).collect();
    assert_eq!(frames, want, "every frame, plain Opus, in order");
    // Numbering and timing as if nothing had been lost.
    let first = (plain[0].0, plain[0].1);
    for (i, (seq, ts, _)) in plain.iter().enumerate() {
        assert_eq!(*seq, first.0 + i as u64);
        assert_eq!(*ts, first.1.wrapping_add(960 * i as u32));
    }
    assert_eq!(w.net.core.counters.rtp_red_recovered, 3);

    // The RED subscriber gets the packets that arrived, as RED, and recovers itself.
    let red = &w.net.clients[WITH_RED].rtp;
    assert_eq!(red.len(), 9, "{red:?}");
    assert!(red.iter().all(|(_, _, p)| p[0] & 0x80 != 0 || p.len() == frame(1).len() + 1));
}

#[test]
fn nothing_is_recovered_without_loss() {
    let mut w = World::new();
    for n in 1..=10 {
        w.send(n);
    }
    w.run(Duration::from_millis(200));
    let frames: Vec<Vec<u8>> = w.net.clients[PLAIN].rtp.iter().map(|(_, _, p)| p.to_vec()).collect();
    assert_eq!(frames, (1..=10).map(frame).collect::<Vec<_>>());
    assert_eq!(w.net.core.counters.rtp_red_recovered, 0);
}
