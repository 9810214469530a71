//! In-process str0m clients (full ICE, as a browser) against the engine over
//! loopback UDP.
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pysfu_engine::{Engine, EngineConfig, MediaEvent, Role};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, Input, Output, Rtc};

struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    events: Vec<Event>,
}

impl Client {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let rtc = pysfu_engine::testkit::client_rtc(addr, Instant::now());
        Self { rtc, sock, addr, events: Vec::new() }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn step(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            let Ok(contents) = buf[..n].try_into() else { continue };
            let input = Input::Receive(
                Instant::now(),
                Receive { proto: Protocol::Udp, source: src, destination: self.addr, contents },
            );
            self.rtc.handle_input(input).unwrap();
            self.drain();
        }
        self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        self.drain();
    }

    fn rtp_received(&self) -> Vec<(u64, u32, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => Some((*p.seq_no, p.header.timestamp, p.payload.to_vec())),
                _ => None,
            })
            .collect()
    }
}

struct World {
    engine: Engine,
    clients: Vec<Client>,
    events: Vec<MediaEvent>,
}

impl World {
    fn pump(&mut self, dur: Duration) {
        let end = Instant::now() + dur;
        while Instant::now() < end {
            for c in &mut self.clients {
                c.step();
            }
            self.events.extend(self.engine.drain_events());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn pump_until(&mut self, max: Duration, mut f: impl FnMut(&World) -> bool) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            self.pump(Duration::from_millis(5));
            if f(self) {
                return true;
            }
        }
        false
    }
}

fn connected(events: &[MediaEvent], id: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, MediaEvent::PeerConnected { peer_id } if peer_id == id))
}

const PUB: usize = 0;
const SUB: usize = 1;

/// Publisher with one VP8 video m-line and the LiveKit data channels; subscriber
/// with the server's offer. Returns (world, client video mid, client reliable channel).
fn setup() -> (World, Mid, ChannelId) {
    setup_with(None)
}

fn setup_with(simulcast: Option<Simulcast>) -> (World, Mid, ChannelId) {
    let engine = Engine::start(EngineConfig::new("127.0.0.1".parse().unwrap()))
    .unwrap();
    engine.add_peer("pub", Role::Publisher, None).unwrap();
    engine.add_peer("sub", Role::Subscriber, None).unwrap();
    let mut w = World { engine, clients: vec![Client::new(), Client::new()], events: vec![] };

    let p = &mut w.clients[PUB];
    let mut api = p.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, Some("stream".into()), Some("cid-video".into()), simulcast);
    let rel = api.add_channel_with_config(ChannelConfig {
        label: "_reliable".into(),
        ordered: true,
        reliability: Reliability::Reliable,
        ..Default::default()
    });
    api.add_channel_with_config(ChannelConfig {
        label: "_lossy".into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..Default::default()
    });
    let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().unwrap();
    let answer = w.engine.accept_offer("pub", &offer.to_sdp_string()).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    p.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    p.drain();

    let first = negotiate_sub(&mut w);
    assert!(first.contains("m=application"), "{first}");
    assert!(w.pump_until(Duration::from_secs(10), |w| connected(&w.events, "pub") && connected(&w.events, "sub")));
    (w, mid, rel)
}

fn negotiate_sub(w: &mut World) -> String {
    let offer = w.engine.create_offer("sub").unwrap();
    let s = &mut w.clients[SUB];
    let answer = s
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
        .unwrap();
    s.drain();
    w.engine.accept_answer("sub", &answer.to_sdp_string()).unwrap();
    offer
}

struct Sender {
    seq: u64,
    ts: u32,
    rid: Option<Rid>,
    /// VP8 PictureID / TL0PICIDX of the next frame, when the descriptor carries them.
    pid: Option<(u16, u8)>,
}

impl Sender {
    fn send(&mut self, c: &mut Client, mid: Mid, keyframe: bool, tag: u8) {
        let pt = c
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        // The tag goes last: tags() reads it there whatever the descriptor's length.
        let p_bit = if keyframe { 0x00 } else { 0x01 };
        let payload = match &mut self.pid {
            None => vec![0x10, p_bit, 0x9d, 0x01, 0x2a, tag],
            Some((pid, tl0)) => {
                *pid = (*pid + 1) & 0x7fff;
                *tl0 = tl0.wrapping_add(1);
                vec![0x90, 0xe0, 0x80 | (*pid >> 8) as u8, *pid as u8, *tl0, 0x20, p_bit, 0x9d, tag]
            }
        };
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, self.rid).unwrap();
        self.seq += 1;
        self.ts = self.ts.wrapping_add(3000);
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(self.seq), self.ts, Instant::now(), payload)
                .marker(true)
                .nackable(true),
        );
        c.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        c.drain();
    }
}

fn send_frames(w: &mut World, s: &mut Sender, mid: Mid, frames: &[(bool, u8)]) {
    for &(key, tag) in frames {
        s.send(&mut w.clients[PUB], mid, key, tag);
        w.pump(Duration::from_millis(10));
    }
    w.pump(Duration::from_millis(100));
}

fn tags(c: &Client) -> Vec<u8> {
    c.rtp_received().iter().map(|(_, _, p)| *p.last().unwrap()).collect()
}

#[test]
fn forwarding_mute_unsubscribe_data_and_garbage() {
    let (mut w, mid, rel) = setup();
    let mut s = Sender { seq: 100, ts: 1000, rid: None, pid: None };

    // First media: TrackArrived with the msid track id (the client's cid).
    send_frames(&mut w, &mut s, mid, &[(true, 1)]);
    let arrived = w.events.iter().find_map(|e| match e {
        MediaEvent::TrackArrived { mid, track_id, kind, codec, .. } => {
            Some((mid.clone(), track_id.clone(), *kind, codec.clone()))
        }
        _ => None,
    });
    let (smid, cid, kind, codec) = arrived.expect("TrackArrived");
    assert_eq!((cid.as_str(), kind, codec.as_str()), ("cid-video", "video", "vp8"));
    assert_eq!(smid, mid.to_string());

    w.engine.publish_track("pub", &smid, "TR_video").unwrap();
    w.engine.subscribe("sub", "TR_video", "PA_pub|TR_video").unwrap();
    let offer = negotiate_sub(&mut w);
    assert!(offer.contains("a=msid:PA_pub|TR_video TR_video"), "{offer}");
    assert!(offer.contains("a=sendonly"), "{offer}");
    w.pump(Duration::from_millis(100));
    // The subscribe asked the publisher for a keyframe.
    assert!(w.clients[PUB].events.iter().any(|e| matches!(e, Event::KeyframeRequest(_))));

    // Delta frames are held back until a keyframe.
    send_frames(&mut w, &mut s, mid, &[(false, 2), (false, 3), (true, 4), (false, 5), (false, 6)]);
    assert_eq!(tags(&w.clients[SUB]), vec![4, 5, 6]);
    let got = w.clients[SUB].rtp_received();
    assert_eq!(got[1].0, got[0].0 + 1);
    assert_eq!(got[2].0, got[1].0 + 1);

    // Muted: nothing. Unmuted: wait for a keyframe, seq continues.
    w.engine.set_muted("TR_video", true).unwrap();
    send_frames(&mut w, &mut s, mid, &[(true, 7), (false, 8)]);
    assert_eq!(tags(&w.clients[SUB]), vec![4, 5, 6]);
    w.engine.set_muted("TR_video", false).unwrap();
    send_frames(&mut w, &mut s, mid, &[(false, 9), (true, 10), (false, 11)]);
    assert_eq!(tags(&w.clients[SUB]), vec![4, 5, 6, 10, 11]);
    let got = w.clients[SUB].rtp_received();
    assert_eq!(got[3].0, got[2].0 + 1, "seq continuity across mute");

    // Garbage from a stranger and from the publisher's own address.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = w.engine.local_addr();
    for (i, junk) in [&[][..], &[0x80, 0x60, 0, 1][..], &[0u8; 20][..], &[0x17, 0xfe, 0xfd, 0, 1, 2][..], &[0xff; 1200][..]]
        .iter()
        .enumerate()
    {
        stranger.send_to(junk, target).unwrap();
        w.clients[PUB].sock.send_to(junk, target).unwrap();
        // A truncated STUN binding request with the magic cookie.
        let mut stun = vec![0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[i as u8; 12]);
        w.clients[PUB].sock.send_to(&stun, target).unwrap();
    }
    send_frames(&mut w, &mut s, mid, &[(false, 12)]);
    assert_eq!(tags(&w.clients[SUB]), vec![4, 5, 6, 10, 11, 12]);

    // Unsubscribe stops at once.
    w.engine.unsubscribe("sub", "TR_video").unwrap();
    send_frames(&mut w, &mut s, mid, &[(true, 13)]);
    assert_eq!(tags(&w.clients[SUB]).len(), 6);

    // Data channels: publisher -> event; engine -> subscriber.
    {
        let p = &mut w.clients[PUB];
        let mut ch = p.rtc.channel(rel).expect("reliable channel open");
        ch.write(true, b"hello").unwrap();
        p.drain();
    }
    assert!(w.pump_until(Duration::from_secs(5), |w| w.events.iter().any(|e| matches!(
        e,
        MediaEvent::DataReceived { peer_id, reliable: true, payload } if peer_id == "pub" && payload == b"hello"
    ))));
    w.engine.send_data("sub", true, b"to-sub".to_vec()).unwrap();
    w.engine.send_data("sub", false, b"lossy".to_vec()).unwrap();
    assert!(w.pump_until(Duration::from_secs(5), |w| {
        let got: Vec<&[u8]> = w.clients[SUB]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChannelData(d) => Some(&d.data[..]),
                _ => None,
            })
            .collect();
        got.contains(&&b"to-sub"[..]) && got.contains(&&b"lossy"[..])
    }));

    let stats: std::collections::HashMap<_, _> = w.engine.stats().unwrap().into_iter().collect();
    assert!(stats["rtp_forwarded"] >= 6);
    assert!(stats["unroutable"] >= 5);

    // Removing peers is idempotent and unknown ids are errors, not panics.
    w.engine.remove_peer("sub").unwrap();
    w.engine.remove_peer("sub").unwrap();
    assert!(w.engine.create_offer("sub").is_err());
    assert!(w.engine.add_remote_candidate("pub", "garbage").is_err());
    assert!(w.engine.accept_offer("pub", "v=0 nonsense").is_err());
    w.engine.close();
}

#[test]
fn simulcast_layers_and_switching() {
    let mut sim = Simulcast::new();
    for rid in ["q", "h", "f"] {
        sim.add_send_layer(SimulcastLayer::new(rid));
    }
    let (mut w, mid, _) = setup_with(Some(sim));
    let mut layers: Vec<Sender> = [("q", 10u64), ("h", 20_000), ("f", 40_000)]
        .iter()
        .map(|(rid, seq)| Sender {
            seq: *seq,
            ts: *seq as u32 * 7,
            rid: Some((*rid).into()),
            // Unrelated frame numbering per layer, as libwebrtc's simulcast encoders.
            pid: Some(((*seq % 0x7fff) as u16, (*seq % 251) as u8)),
        })
        .collect();
    // Tags: q = 0x1_, h = 0x2_, f = 0x3_.
    let round = |w: &mut World, layers: &mut [Sender], key: bool, n: u8| {
        for (i, l) in layers.iter_mut().enumerate() {
            l.send(&mut w.clients[PUB], mid, key, 0x10 * (i as u8 + 1) + n);
        }
        w.pump(Duration::from_millis(10));
    };
    round(&mut w, &mut layers, true, 0);
    w.pump(Duration::from_millis(100));
    let rid = w.events.iter().find_map(|e| match e {
        MediaEvent::TrackArrived { rid, .. } => Some(rid.clone()),
        _ => None,
    });
    assert!(matches!(rid, Some(Some(_))), "TrackArrived carries a rid: {rid:?}");
    w.engine.publish_track("pub", &mid.to_string(), "TR_sim").unwrap();
    w.engine.subscribe("sub", "TR_sim", "PA_pub|TR_sim").unwrap();
    let offer = negotiate_sub(&mut w);
    assert!(!offer.contains("a=simulcast"), "subscriber gets one layer: {offer}");
    w.pump(Duration::from_millis(100));

    // Default HIGH: the first keyframe of any layer up to f starts the picture (q's
    // comes first in the round), then f from its keyframe on.
    round(&mut w, &mut layers, false, 1);
    round(&mut w, &mut layers, true, 2);
    round(&mut w, &mut layers, false, 3);
    w.pump(Duration::from_millis(100));
    assert_eq!(tags(&w.clients[SUB]), vec![0x12, 0x32, 0x33]);

    // Switch to LOW: f continues until q has a keyframe, then q only.
    w.engine.set_layer("sub", "TR_sim", 0).unwrap();
    round(&mut w, &mut layers, false, 4);
    round(&mut w, &mut layers, true, 5);
    round(&mut w, &mut layers, false, 6);
    w.pump(Duration::from_millis(100));
    assert_eq!(tags(&w.clients[SUB]), vec![0x12, 0x32, 0x33, 0x34, 0x15, 0x16]);
    let seqs: Vec<u64> = w.clients[SUB].rtp_received().iter().map(|p| p.0).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "continuous seq across switch: {seqs:?}");
    // VP8 PictureID and TL0PICIDX continue across the switch too (one packet per frame).
    let vp8: Vec<(u16, u8)> = w.clients[SUB]
        .rtp_received()
        .iter()
        .map(|(_, _, p)| (u16::from(p[2] & 0x7f) << 8 | u16::from(p[3]), p[4]))
        .collect();
    assert!(
        vp8.windows(2).all(|p| p[1].0 == (p[0].0 + 1) & 0x7fff && p[1].1 == p[0].1.wrapping_add(1)),
        "continuous VP8 numbering across switch: {vp8:?}"
    );
    assert!(w.engine.set_layer("sub", "TR_sim", 7).is_err());
    w.engine.close();
}

/// (mid, direction, msid) of each video m-section of an SDP.
fn video_sections(sdp: &str) -> Vec<(String, String, String)> {
    sdp.split("m=")
        .filter(|s| s.starts_with("video"))
        .map(|s| {
            let attr = |name: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let dir = ["sendonly", "recvonly", "sendrecv", "inactive"]
                .iter()
                .find(|d| s.lines().any(|l| l.trim() == format!("a={d}")))
                .unwrap_or(&"")
                .to_string();
            (attr("a=mid:"), dir, attr("a=msid:"))
        })
        .collect()
}

#[test]
fn resubscribe_uses_a_fresh_m_line() {
    let (mut w, mid, _) = setup();
    let mut s = Sender { seq: 100, ts: 1000, rid: None, pid: None };
    send_frames(&mut w, &mut s, mid, &[(true, 1)]);
    w.engine.publish_track("pub", &mid.to_string(), "TR_v").unwrap();
    w.engine.subscribe("sub", "TR_v", "PA_pub|TR_v").unwrap();
    let first = video_sections(&negotiate_sub(&mut w));
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].1.as_str(), first[0].2.as_str()), ("sendonly", "PA_pub|TR_v TR_v"));
    send_frames(&mut w, &mut s, mid, &[(true, 2), (false, 3)]);

    w.engine.unsubscribe("sub", "TR_v").unwrap();
    let second = video_sections(&negotiate_sub(&mut w));
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].0.as_str(), second[0].1.as_str()), (first[0].0.as_str(), "inactive"));

    // SDKs announce a (mid, stream) pair once per PeerConnection: the track comes
    // back on a new m-line, with an msid no other m-line repeats (libwebrtc
    // rejects duplicates) but the same stream id (the SDKs read the sid from it).
    w.engine.subscribe("sub", "TR_v", "PA_pub|TR_v").unwrap();
    let third = video_sections(&negotiate_sub(&mut w));
    assert_eq!(third.len(), 2, "{third:?}");
    assert_eq!((third[0].0.as_str(), third[0].1.as_str()), (first[0].0.as_str(), "inactive"));
    assert_ne!(third[1].0, first[0].0);
    assert_eq!(third[1].1, "sendonly");
    assert!(third[1].2.starts_with("PA_pub|TR_v "), "{third:?}");
    assert_ne!(third[1].2, third[0].2, "msid repeated: {third:?}");

    send_frames(&mut w, &mut s, mid, &[(false, 4), (true, 5), (false, 6)]);
    assert_eq!(tags(&w.clients[SUB]), vec![2, 3, 5, 6]);
    let ssrcs: Vec<u32> = w.clients[SUB]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::RtpPacket(p) => Some(*p.header.ssrc),
            _ => None,
        })
        .collect();
    assert_eq!(ssrcs[0], ssrcs[1]);
    assert_ne!(ssrcs[1], ssrcs[2], "a fresh m-line sends on a fresh SSRC");

    // Unsubscribe and resubscribe before any renegotiation: still one new m-line.
    w.engine.unsubscribe("sub", "TR_v").unwrap();
    w.engine.subscribe("sub", "TR_v", "PA_pub|TR_v").unwrap();
    let fourth = video_sections(&negotiate_sub(&mut w));
    assert_eq!(fourth.len(), 3, "{fourth:?}");
    assert_eq!(fourth.iter().filter(|s| s.1 == "sendonly").count(), 1, "{fourth:?}");
    let mut msids: Vec<&str> = fourth.iter().map(|s| s.2.as_str()).collect();
    msids.sort();
    msids.dedup();
    assert_eq!(msids.len(), 3, "{fourth:?}");
    w.engine.close();
}

/// Issue 11: the run loop read at most 64 datagrams per wake-up and then slept
/// until a timer (mio readiness is edge-triggered), so a backlog drained at 64
/// datagrams per 100 ms. Here the engine thread is held by a slow command while
/// 5000 datagrams queue up, then released.
#[test]
fn a_backlog_drains_without_waiting_for_timers() {
    const BACKLOG: u64 = 5000;
    let engine = Engine::start(EngineConfig::new("127.0.0.1".parse().unwrap()))
    .unwrap();
    let target = engine.local_addr();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            engine
                .call_on(0, move |_, _| {
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        });
        held_rx.recv().unwrap();
        // RTP-looking bytes from a stranger: read, classified and dropped.
        let junk = [0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4];
        for _ in 0..BACKLOG {
            sender.send_to(&junk, target).unwrap();
        }
        release_tx.send(()).unwrap();
    });
    let released = Instant::now();
    let stat = |name: &str| engine.stats().unwrap().into_iter().find(|(k, _)| *k == name).unwrap().1;
    // Each stats call wakes the engine too; 25 ms apart they would drain 64 per
    // call before the fix, far from 5000 in the bound.
    while stat("packets_in") < BACKLOG && released.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(25));
    }
    let took = released.elapsed();
    eprintln!("backlog of {BACKLOG} drained in {took:?}");
    assert_eq!(stat("packets_in"), BACKLOG, "every datagram of the backlog was read");
    assert_eq!(stat("dropped_unknown_source"), BACKLOG);
    assert!(took < Duration::from_millis(500), "backlog took {took:?}");
}
