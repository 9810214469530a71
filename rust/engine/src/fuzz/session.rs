//! Targets `datagram` and `router`: a live [`Core`] with one publisher and two
//! subscribers, negotiated by str0m clients, ICE-nominated by real STUN binding
//! requests, and given known SRTP keys (str0m's test exports) instead of a DTLS
//! handshake, so fuzzed RTP and RTCP get past SRTP authentication and reach the
//! parsers, the forwarder and the keyframe logic.
//!
//! `datagram` mostly feeds datagrams from fuzzed addresses: raw bytes (STUN, DTLS,
//! RTP and RTCP headers are parsed before any authentication), well-formed SRTP
//! with fuzzed headers, extensions and payloads, authenticated SRTCP compounds
//! (SR, RR, SDES, BYE, NACK, PLI, FIR, REMB, TWCC, APP), STUN binding requests.
//! `router` mostly drives publish/unpublish/subscribe/unsubscribe/mute/layer/
//! renegotiation/peer-reset events between publisher packets and checks, against
//! a reference model, that a packet only reaches current, unmuted subscribers of
//! its track, on that track's current m-line.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::_internal_test_exports::TestSrtp;
use str0m::change::SdpOffer;
use str0m::crypto::dtls::{KeyingMaterial, SrtpProfile};
use str0m::crypto::CryptoProvider;
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::rtp::{ExtensionMap, ExtensionValues, RtpHeader, VideoOrientation};
use str0m::Rtc;

use super::reader::{Reader, Writer};
use crate::core::Core;
use crate::error::EngineError;
use crate::keyframe::CodecKind;
use crate::peer::Role;
pub(super) use crate::testkit::{NullSink, VecSink};

/// HMAC-SHA1 through str0m's crypto provider (STUN integrity, SRTCP tags).
pub fn sha1_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    str0m::crypto::from_feature_flags().sha1_hmac_provider.sha1_hmac(key, parts)
}

pub(super) const ENGINE: ([u8; 4], u16) = ([10, 0, 0, 1], 5000);
pub(super) const PUB_ADDR: ([u8; 4], u16) = ([10, 0, 1, 1], 40000);
pub(super) const SUB_ADDRS: [([u8; 4], u16); 2] = [([10, 0, 2, 1], 40000), ([10, 0, 2, 2], 40000)];
pub(super) const SUB_IDS: [&str; 2] = ["sub0", "sub1"];
pub(super) const TRACKS: [&str; 4] = ["T0", "T1", "T2", "T3"];
/// Publisher SSRCs the fuzzer picks from.
const PUB_SSRCS: [u32; 6] = [0x1111_0001, 0x1111_0002, 0x1111_0003, 0x2222_0001, 0x2222_0002, 0x3333_0001];
const RIDS: [Option<&str>; 5] = [None, Some("q"), Some("h"), Some("f"), Some("x")];

/// A client in RTP mode (it only negotiates; it never connects).
pub(super) fn client(now: Instant) -> Rtc {
    crate::testkit::client_config().build(now)
}

/// SRTP master keys and salts, both directions (the layout DTLS exports).
fn keying_material() -> Vec<u8> {
    (0..60u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect()
}

/// RFC 3711 key derivation (AES-CM PRF) of one session key from the left half.
fn derive(crypto: &CryptoProvider, mat: &[u8], label: u8, out: &mut [u8]) {
    let master = &mat[0..16];
    let mut input = [0u8; 16];
    input[..14].copy_from_slice(&mat[32..46]);
    input[7] ^= label;
    let mut done = 0;
    let mut round: u16 = 0;
    while done < out.len() {
        input[14..].copy_from_slice(&round.to_be_bytes());
        let mut buf = [0u8; 32];
        crypto.srtp_provider.srtp_aes_128_ecb_round(master, &input, &mut buf);
        let n = (out.len() - done).min(16);
        out[done..done + n].copy_from_slice(&buf[..n]);
        done += n;
        round += 1;
    }
}

/// Per subscriber: the client that answers our offers, and what the latest offer says.
pub(super) struct Sub {
    pub(super) client: Rtc,
    /// Primary SSRC of each m-line in the latest offer -> (track id, sending).
    pub(super) ssrcs: HashMap<u32, (String, bool)>,
}

#[derive(Debug, Default)]
struct MTrack {
    mid: usize,
    muted: bool,
    /// Active subscription per subscriber.
    subs: [bool; 2],
}

pub(super) struct World {
    pub(super) core: Core<VecSink>,
    pub(super) now: Instant,
    pub(super) mat: Vec<u8>,
    srtp: TestSrtp,
    rtcp_auth: [u8; 20],
    srtcp_index: u32,
    exts: ExtensionMap,
    pub(super) mids: Vec<Mid>,
    pts: Vec<(u8, CodecKind)>,
    pub(super) subs: Vec<Sub>,
    model: HashMap<&'static str, MTrack>,
    /// (seq, ts, picture id) per publisher SSRC.
    streams: HashMap<u32, (u64, u32, u16)>,
    tag: u32,
}

pub(super) fn addr(a: ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::from(a)
}

/// Which m-line each primary SSRC of an offer belongs to, with its msid track
/// (generation suffix `~n` stripped) and whether the m-line sends.
fn offer_ssrcs(sdp: &str) -> HashMap<u32, (String, bool)> {
    let mut out = HashMap::new();
    for section in sdp.split("\r\nm=").skip(1) {
        let mut track = None;
        let mut sending = true;
        let mut rtx = Vec::new();
        let mut ssrcs = Vec::new();
        for line in section.lines() {
            if let Some(v) = line.strip_prefix("a=msid:") {
                track = v.split_whitespace().nth(1).map(|t| t.split('~').next().unwrap_or(t).to_string());
            } else if line == "a=inactive" || line == "a=recvonly" {
                sending = false;
            } else if let Some(v) = line.strip_prefix("a=ssrc-group:FID ") {
                rtx.extend(v.split_whitespace().skip(1).filter_map(|s| s.parse::<u32>().ok()));
            } else if let Some(v) = line.strip_prefix("a=ssrc:") {
                if let Some(n) = v.split_whitespace().next().and_then(|s| s.parse::<u32>().ok()) {
                    ssrcs.push(n);
                }
            }
        }
        if let Some(t) = track {
            for s in ssrcs.into_iter().filter(|s| !rtx.contains(s)) {
                out.insert(s, (t.clone(), sending));
            }
        }
    }
    out
}

impl World {
    pub(super) fn new() -> Self {
        Self::new_on(None)
    }

    /// A world whose core is one shard of several (`crate::shard`).
    pub(super) fn new_on(link: Option<crate::shard::ShardLink>) -> Self {
        let now = Instant::now();
        let crypto = str0m::crypto::from_feature_flags();
        let mat = keying_material();
        let mut rtcp_auth = [0u8; 20];
        derive(&crypto, &mat, 4, &mut rtcp_auth);
        let srtp = TestSrtp::new(&crypto, SrtpProfile::AES128_CM_SHA1_80, &KeyingMaterial::new(&mat));
        let mut core = Core::new(VecSink::default(), addr(ENGINE));
        if let Some(link) = link {
            core.set_shard(link);
        }
        core.add_peer("pub", Role::Publisher, now).expect("fresh id");

        // The publisher: audio (Opus with RED, as browsers offer it), simulcast
        // video, plain video, as a LiveKit client. The subscribers take no RED, so
        // RED packets reach them as their primary, with lost ones recovered.
        let mut client = crate::testkit::client_config().enable_opus(true, true).build(now);
        let mut api = client.sdp_api();
        let mut mids = vec![api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA".into()), Some("TA".into()), None)];
        let mut sim = Simulcast::new();
        for rid in ["q", "h", "f"] {
            sim.add_send_layer(SimulcastLayer::new(rid));
        }
        mids.push(api.add_media(MediaKind::Video, Direction::SendOnly, Some("PA".into()), Some("TV".into()), Some(sim)));
        mids.push(api.add_media(MediaKind::Video, Direction::SendOnly, Some("PA".into()), Some("TW".into()), None));
        let (offer, _) = api.apply().expect("media was added");
        let pub_ufrag = client.direct_api().local_ice_credentials().ufrag;
        core.accept_offer("pub", &offer.to_sdp_string(), now).expect("engine accepts a str0m offer");
        let rtc = core._rtc_mut("pub").expect("added above");
        let exts = rtc._exts().clone();
        // Each negotiated payload type, and RED's, which str0m folds onto Opus.
        let pts = rtc
            .codec_config()
            .params()
            .iter()
            .flat_map(|p| {
                let red = p.red().map(|red| (*red, CodecKind::Red));
                std::iter::once((*p.pt(), CodecKind::from_codec(p.spec().codec))).chain(red)
            })
            .collect();
        let mut w = Self {
            core,
            now,
            mat,
            srtp,
            rtcp_auth,
            srtcp_index: 0,
            exts,
            mids,
            pts,
            subs: Vec::new(),
            model: HashMap::new(),
            streams: HashMap::new(),
            tag: 0,
        };
        w.connect("pub", addr(PUB_ADDR), &pub_ufrag);
        for i in 0..2 {
            let sub = w.new_sub(i);
            w.subs.push(sub);
        }
        w.core.sink_mut().0.clear();
        w
    }

    /// A subscriber peer, negotiated (data channels only) and connected.
    fn new_sub(&mut self, i: usize) -> Sub {
        self.core.add_peer(SUB_IDS[i], Role::Subscriber, self.now).expect("fresh id");
        let mut sub = Sub { client: client(self.now), ssrcs: HashMap::new() };
        negotiate(&mut self.core, self.now, i, &mut sub);
        let ufrag = sub.client.direct_api().local_ice_credentials().ufrag;
        self.connect(SUB_IDS[i], addr(SUB_ADDRS[i]), &ufrag);
        sub
    }

    /// ICE by a STUN binding request with USE-CANDIDATE, then the known SRTP keys.
    fn connect(&mut self, peer: &str, from: SocketAddr, remote_ufrag: &str) {
        connect(&mut self.core, &self.mat, self.now, peer, from, remote_ufrag);
    }

    fn pick_addr(&self, r: &mut Reader) -> SocketAddr {
        match r.below(6) {
            0 | 1 => addr(PUB_ADDR),
            2 => addr(SUB_ADDRS[0]),
            3 => addr(SUB_ADDRS[1]),
            4 => SocketAddr::from(([10, 9, r.u8(), r.u8()], r.u16())),
            _ => SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, u16::from(r.u8())], r.u16())),
        }
    }

    /// Authenticated, unencrypted SRTCP (E=0) around a compound packet.
    fn srtcp(&mut self, compound: &[u8]) -> Vec<u8> {
        let mut buf = compound.to_vec();
        if buf.len() < 8 {
            buf.resize(8, 0);
        }
        buf.extend_from_slice(&(self.srtcp_index & 0x7fff_ffff).to_be_bytes());
        self.srtcp_index = self.srtcp_index.wrapping_add(1);
        let tag = sha1_hmac(&self.rtcp_auth, &[&buf]);
        buf.extend_from_slice(&tag[..10]);
        buf
    }

    /// One publisher RTP packet on a fuzzed m-line, SRTP-protected with the
    /// engine's receive keys.
    pub(super) fn rtp(&mut self, r: &mut Reader) -> (usize, Vec<u8>) {
        let mid_i = r.below(self.mids.len());
        let ssrc = r.pick(&PUB_SSRCS);
        let rid = r.pick(&RIDS);
        // Mostly a payload type of the m-line's kind (m-line 0 is audio).
        let fitting: Vec<(u8, CodecKind)> = self
            .pts
            .iter()
            .copied()
            .filter(|(_, c)| matches!(c, CodecKind::Opus | CodecKind::Red) == (mid_i == 0))
            .collect();
        let (pt, codec) = match r.u8() {
            0..=199 if !fitting.is_empty() => fitting[r.below(fitting.len())],
            200..=239 if !self.pts.is_empty() => self.pts[r.below(self.pts.len())],
            _ => (r.u8() & 0x7f, CodecKind::Other),
        };
        let st = self.streams.entry(ssrc).or_insert((u64::from(r.u16()), r.u32(), r.u16() & 0x7fff));
        st.0 = st.0.saturating_add_signed(i64::from(r.u8() as i8)).max(1);
        st.1 = st.1.wrapping_add(u32::from(r.u16()));
        let new_frame = r.bool();
        if new_frame {
            st.2 = (st.2 + 1) & 0x7fff;
        }
        let (seq, ts, pid) = *st;
        let key = r.bool();
        self.tag = self.tag.wrapping_add(1);
        let mut payload = match codec {
            CodecKind::Vp8 => {
                // TL0PICIDX, then TID / Y / KEYIDX (any TID: fps limits drop frames).
                let mut p = vec![0x90, 0xe0, 0x80 | (pid >> 8) as u8, pid as u8, r.u8(), r.u8()];
                p.push(u8::from(!key));
                p
            }
            CodecKind::H264 => vec![if key { 0x65 } else { 0x41 }],
            CodecKind::Vp9 => vec![if key { 0x08 } else { 0x48 }],
            CodecKind::Av1 => vec![if key { 0x18 } else { 0x10 }],
            CodecKind::Red => {
                // Up to two earlier frames, as the encoders send them; the tag
                // appended below is the primary.
                use str0m::rtp::{RedEncoder, RedundantBlock};
                let opus = self.pts.iter().find(|(_, c)| *c == CodecKind::Opus).map_or(111, |(pt, _)| *pt);
                let blocks: Vec<_> = (1..=r.below(3) as u32)
                    .rev()
                    .map(|back| RedundantBlock { pt: opus, timestamp_offset: 960 * back, payload: vec![back as u8; 3] })
                    .collect();
                RedEncoder::encode(opus, &[], &blocks)
            }
            _ => Vec::new(),
        };
        if r.u8() > 200 {
            payload = r.chunk(64).to_vec();
        }
        payload.extend_from_slice(&self.tag.to_be_bytes());
        let mut ext = ExtensionValues { mid: Some(self.mids[mid_i]), ..Default::default() };
        ext.rid = rid.map(Into::into);
        let flags = r.u8();
        if flags & 1 != 0 {
            ext.audio_level = Some(-((r.u8() & 0x7f) as i8));
            ext.voice_activity = Some(r.bool());
        }
        if flags & 2 != 0 {
            ext.video_orientation = Some(match r.below(4) {
                0 => VideoOrientation::Deg0,
                1 => VideoOrientation::Deg90,
                2 => VideoOrientation::Deg180,
                _ => VideoOrientation::Deg270,
            });
        }
        if flags & 4 != 0 {
            ext.transport_cc = Some(r.u16());
        }
        if flags & 8 != 0 {
            ext.mid = None;
        }
        if flags & 16 != 0 {
            ext.rid_repair = ext.rid.take();
        }
        let header = RtpHeader {
            payload_type: pt.into(),
            sequence_number: seq as u16,
            timestamp: ts,
            ssrc: ssrc.into(),
            marker: r.bool(),
            ext_vals: ext,
            ..Default::default()
        };
        (mid_i, self.srtp.protect(header, seq, &payload, &self.exts))
    }

    /// A compound RTCP packet of fuzzed kinds, with SSRCs the engine knows.
    fn rtcp_compound(&mut self, r: &mut Reader) -> Vec<u8> {
        let mut known: Vec<u32> = PUB_SSRCS.to_vec();
        for s in &self.subs {
            known.extend(s.ssrcs.keys());
        }
        let ssrc = |r: &mut Reader| if r.u8() < 230 { known[r.below(known.len())] } else { r.u32() };
        let mut out = Vec::new();
        for _ in 0..=r.below(4) {
            let mut body = Vec::new();
            let (count, pt): (u8, u8) = match r.below(11) {
                0 => {
                    // SR: sender info + report blocks.
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(r.bytes(20));
                    body.resize(24, 0);
                    let n = r.below(3) as u8;
                    for _ in 0..n {
                        body.extend(ssrc(r).to_be_bytes());
                        body.extend(r.bytes(20));
                        body.resize(body.len().next_multiple_of(4), 0);
                    }
                    (n, 200)
                }
                1 => {
                    body.extend(ssrc(r).to_be_bytes());
                    let n = r.below(3) as u8;
                    for _ in 0..n {
                        body.extend(ssrc(r).to_be_bytes());
                        let mut blk = r.bytes(20).to_vec();
                        blk.resize(20, 0);
                        body.extend(blk);
                    }
                    (n, 201)
                }
                2 => {
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend([1, 4]);
                    body.extend(r.bytes(4));
                    body.push(0);
                    body.resize(body.len().next_multiple_of(4), 0);
                    (1, 202)
                }
                3 => {
                    body.extend(ssrc(r).to_be_bytes());
                    (1, 203)
                }
                4 => {
                    // Generic NACK.
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(ssrc(r).to_be_bytes());
                    for _ in 0..=r.below(3) {
                        body.extend(r.u16().to_be_bytes());
                        body.extend(r.u16().to_be_bytes());
                    }
                    (1, 205)
                }
                5 => {
                    // TWCC: base seq, status count, reference time, fb count, chunks, deltas.
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(r.bytes(8));
                    body.extend(r.chunk(32));
                    body.resize(body.len().next_multiple_of(4), 0);
                    (15, 205)
                }
                6 => {
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(ssrc(r).to_be_bytes());
                    (1, 206) // PLI
                }
                7 => {
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(0u32.to_be_bytes());
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend([r.u8(), 0, 0, 0]);
                    (4, 206) // FIR
                }
                8 => {
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(0u32.to_be_bytes());
                    body.extend(b"REMB");
                    let n = r.below(3) as u8;
                    body.push(n);
                    body.extend(r.bytes(3));
                    body.resize(16, 0);
                    for _ in 0..n {
                        body.extend(ssrc(r).to_be_bytes());
                    }
                    (15, 206)
                }
                9 => {
                    body.extend(ssrc(r).to_be_bytes());
                    body.extend(b"name");
                    body.extend(r.chunk(16));
                    body.resize(body.len().next_multiple_of(4), 0);
                    (r.u8() & 0x1f, 204)
                }
                _ => {
                    out.extend(r.chunk(64));
                    continue;
                }
            };
            let words = (body.len() / 4) as u16;
            let len = if r.u8() < 250 { words } else { r.u16() };
            out.push(0x80 | (count & 0x1f));
            out.push(pt);
            out.extend(len.to_be_bytes());
            out.extend(body);
        }
        out
    }
}

/// ICE by a STUN binding request with USE-CANDIDATE, then the known SRTP keys.
pub(super) fn connect(core: &mut Core<VecSink>, mat: &[u8], now: Instant, peer: &str, from: SocketAddr, remote_ufrag: &str) {
    let rtc = core._rtc_mut(peer).expect("peer exists");
    let creds = rtc.direct_api().local_ice_credentials();
    rtc._set_srtp_keys(KeyingMaterial::new(mat), SrtpProfile::AES128_CM_SHA1_80, false);
    let username = format!("{}:{remote_ufrag}", creds.ufrag);
    let dg = stun(&username, true, Some(creds.pass.as_bytes()));
    core.handle_datagram(from, &dg, now);
    core._mark_connected(peer);
}

/// Offer from the engine, answer from the subscriber's client.
pub(super) fn negotiate(core: &mut Core<VecSink>, now: Instant, i: usize, sub: &mut Sub) {
    let offer = match core.create_offer(SUB_IDS[i], now) {
        Ok(o) => o,
        Err(EngineError::NothingToNegotiate(_)) => return,
        Err(e) => panic!("create_offer: {e}"),
    };
    let parsed = SdpOffer::from_sdp_string(&offer).expect("engine offer parses");
    let Ok(answer) = sub.client.sdp_api().accept_offer(parsed) else {
        // A repeated offer the client already applied; the engine ignores its answer.
        return;
    };
    sub.ssrcs = offer_ssrcs(&offer);
    core.accept_answer(SUB_IDS[i], &answer.to_sdp_string(), now)
        .expect("engine accepts the client's answer to its own offer");
}

pub(super) fn stun(username: &str, use_candidate: bool, password: Option<&[u8]>) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 0x6e00_1eff, use_candidate);
    let mut buf = vec![0u8; 1500];
    let n = msg.to_bytes(password, &mut buf, sha1_hmac).expect("a small request fits 1500 bytes");
    buf.truncate(n);
    buf
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Advance,
    Raw,
    Rtp,
    Rtcp,
    Stun,
    Publish,
    Unpublish,
    Subscribe,
    Unsubscribe,
    Mute,
    Layer,
    Negotiate,
    ResetSub,
    Candidate,
    SendData,
}

const DATAGRAM_OPS: &[Op] = &[
    Op::Raw,
    Op::Raw,
    Op::Rtp,
    Op::Rtp,
    Op::Rtp,
    Op::Rtcp,
    Op::Rtcp,
    Op::Rtcp,
    Op::Stun,
    Op::Advance,
    Op::Subscribe,
    Op::Negotiate,
    Op::Publish,
    Op::Mute,
    Op::Layer,
    Op::Candidate,
];

const ROUTER_OPS: &[Op] = &[
    Op::Rtp,
    Op::Rtp,
    Op::Rtp,
    Op::Rtp,
    Op::Publish,
    Op::Unpublish,
    Op::Subscribe,
    Op::Subscribe,
    Op::Unsubscribe,
    Op::Mute,
    Op::Layer,
    Op::Negotiate,
    Op::Negotiate,
    Op::ResetSub,
    Op::Advance,
    Op::Rtcp,
    Op::SendData,
];

fn run(data: &[u8], ops: &[Op]) {
    let mut r = Reader::new(data);
    let mut w = World::new();
    let mut steps = 0;
    while !r.is_empty() && steps < 96 {
        steps += 1;
        let op = ops[r.below(ops.len())];
        if std::env::var_os("FUZZ_TRACE").is_some() {
            eprintln!("op {op:?} model {:?}", w.model);
        }
        let mut forwarded_mid = None;
        match op {
            Op::Advance => {
                w.now += Duration::from_millis(u64::from(r.u16() % 3000));
                w.core.handle_timeout(w.now);
            }
            Op::Raw => {
                let from = w.pick_addr(&mut r);
                let mut dg = r.chunk(1200).to_vec();
                if let Some(b) = dg.first_mut() {
                    // Steer the first byte into one of RFC 7983's ranges now and then.
                    match r.below(8) {
                        0 => *b &= 0x01,              // STUN
                        1 => *b = 20 + (*b % 44),     // DTLS
                        2 => *b = 0x80 | (*b & 0x3f), // RTP/RTCP
                        _ => {}
                    }
                }
                w.core.handle_datagram(from, &dg, w.now);
            }
            Op::Rtp => {
                let from = if r.u8() < 240 { addr(PUB_ADDR) } else { w.pick_addr(&mut r) };
                let (_, dg) = w.rtp(&mut r);
                w.core.handle_datagram(from, &dg, w.now);
                // The packet's m-line is the one str0m bound its SSRC to (the
                // first mid it came with), whatever its mid extension says now.
                let ssrc = u32::from_be_bytes([dg[8], dg[9], dg[10], dg[11]]);
                let rtc = w.core._rtc_mut("pub").expect("publisher stays");
                let bound = rtc.direct_api().stream_rx(&ssrc.into()).map(|s| s.mid());
                forwarded_mid = bound.and_then(|m| w.mids.iter().position(|x| *x == m));
            }
            Op::Rtcp => {
                let from = w.pick_addr(&mut r);
                let compound = w.rtcp_compound(&mut r);
                let dg = if r.u8() < 240 { w.srtcp(&compound) } else { compound };
                w.core.handle_datagram(from, &dg, w.now);
            }
            Op::Stun => {
                let from = w.pick_addr(&mut r);
                let peer = r.pick(&["pub", "sub0", "sub1", "nobody"]);
                let creds = w.core._rtc_mut(peer).map(|rtc| rtc.direct_api().local_ice_credentials());
                let (ufrag, pass) = creds.map(|c| (c.ufrag, c.pass)).unwrap_or_else(|| ("zzzz".into(), "pw".into()));
                let username = match r.below(4) {
                    0 => ufrag.clone(),
                    1 => format!("{ufrag}:"),
                    _ => format!("{ufrag}:remote"),
                };
                let password = match r.below(4) {
                    0 => None,
                    1 => Some(b"wrong".to_vec()),
                    _ => Some(pass.into_bytes()),
                };
                let dg = stun(&username, r.bool(), password.as_deref());
                w.core.handle_datagram(from, &dg, w.now);
            }
            Op::Publish => {
                let mid_i = r.below(w.mids.len());
                let tid = r.pick(&TRACKS);
                let got = w.core.publish_track("pub", &w.mids[mid_i].to_string(), tid, w.now);
                let exists = w.model.contains_key(tid);
                assert_eq!(got.is_ok(), !exists, "publish {tid}: {got:?}");
                if got.is_ok() {
                    w.model.retain(|_, t| t.mid != mid_i);
                    w.model.insert(tid, MTrack { mid: mid_i, ..Default::default() });
                }
            }
            Op::Unpublish => {
                let tid = r.pick(&TRACKS);
                let got = w.core.unpublish_track(tid);
                assert_eq!(got.is_ok(), w.model.remove(tid).is_some(), "unpublish {tid}: {got:?}");
            }
            Op::Subscribe | Op::Unsubscribe => {
                let i = r.below(2);
                let tid = r.pick(&TRACKS);
                let sub = matches!(op, Op::Subscribe);
                let got = if sub {
                    w.core.subscribe(SUB_IDS[i], tid, &format!("PA|{tid}"), w.now)
                } else {
                    w.core.unsubscribe(SUB_IDS[i], tid)
                };
                let t = w.model.get_mut(tid);
                assert_eq!(got.is_ok(), t.is_some(), "{op:?} {tid}: {got:?}");
                if let Some(t) = t {
                    t.subs[i] = sub;
                }
            }
            Op::Mute => {
                let tid = r.pick(&TRACKS);
                let muted = r.bool();
                let got = w.core.set_muted(tid, muted, w.now);
                let t = w.model.get_mut(tid);
                assert_eq!(got.is_ok(), t.is_some(), "mute {tid}: {got:?}");
                if let Some(t) = t {
                    t.muted = muted;
                }
            }
            Op::Layer => {
                let q = i64::from(r.u8() % 5) - 1;
                let (sub, track) = (SUB_IDS[r.below(2)], r.pick(&TRACKS));
                let got = w.core.set_layer(sub, track, q, w.now);
                if !(0..=2).contains(&q) {
                    assert_eq!(got, Err(EngineError::BadLayer(q)));
                }
                if r.bool() {
                    let fps = [0, 1, 8, 15, 30, u32::MAX][r.below(6)];
                    let set = w.core.set_fps(sub, track, fps);
                    // Both need the same down track.
                    if (0..=2).contains(&q) {
                        assert_eq!(set.is_ok(), got.is_ok(), "set_fps {set:?} beside set_layer {got:?}");
                    }
                }
            }
            Op::Negotiate => {
                let i = r.below(2);
                negotiate(&mut w.core, w.now, i, &mut w.subs[i]);
            }
            Op::ResetSub => {
                let i = r.below(2);
                w.core.remove_peer(SUB_IDS[i], w.now);
                for t in w.model.values_mut() {
                    t.subs[i] = false;
                }
                w.subs[i] = w.new_sub(i);
            }
            Op::Candidate => {
                let peer = r.pick(&["pub", "sub0", "sub1"]);
                let line = String::from_utf8_lossy(r.chunk(160)).into_owned();
                let _ = w.core.add_remote_candidate(peer, &line, w.now);
            }
            Op::SendData => {
                let peer = r.pick(&["pub", "sub0", "sub1"]);
                let payload = r.chunk(300).to_vec();
                // No DTLS, so no SCTP: the channels never open.
                let got = w.core.send_data(peer, r.bool(), &payload, w.now);
                assert!(matches!(got, Err(EngineError::ChannelNotOpen { .. })), "{got:?}");
            }
        }
        w.core.flush(w.now);
        let sent = std::mem::take(&mut w.core.sink_mut().0);
        if matches!(op, Op::Rtp) {
            w.check_sent(&sent, forwarded_mid);
        }
        w.core.events.clear();
    }
}

impl World {
    fn check_sent(&self, sent: &[(SocketAddr, Vec<u8>)], mid_i: Option<usize>) {
        let track = mid_i.and_then(|m| self.model.iter().find(|(_, t)| t.mid == m));
        for (dest, dg) in sent {
            if dg.len() < 12 || dg[0] >> 6 != 2 || (192..=223).contains(&dg[1]) {
                continue;
            }
            let ssrc = u32::from_be_bytes([dg[8], dg[9], dg[10], dg[11]]);
            for (i, sub) in self.subs.iter().enumerate() {
                let Some((tid, sending)) = sub.ssrcs.get(&ssrc) else { continue };
                let ok = match track {
                    Some((id, t)) => *id == tid && *sending && t.subs[i] && !t.muted,
                    None => false,
                };
                assert!(
                    ok,
                    "RTP to {dest} on {}'s m-line of {tid} (sending: {sending}); the packet's track: {track:?}",
                    SUB_IDS[i]
                );
            }
        }
    }
}

pub fn run_datagram(data: &[u8]) {
    run(data, DATAGRAM_OPS)
}

pub fn run_router(data: &[u8]) {
    run(data, ROUTER_OPS)
}

/// Index of `op` in `ops` (seed building).
fn op_byte(ops: &[Op], op: Op) -> u8 {
    ops.iter().position(|o| std::mem::discriminant(o) == std::mem::discriminant(&op)).expect("op in table") as u8
}

fn rtp_op(w: &mut Writer, ops: &[Op], mid: u8, ssrc_i: u8, pt_sel: u8, key: bool) {
    w.u8(op_byte(ops, Op::Rtp)).u8(0).u8(mid);
    // rtp(): mid, ssrc, rid, pt choice (<240 -> negotiated), pt index,
    // new stream (seq, ts, pid), seq delta, ts delta, new frame, key,
    // codec fields (vp8: tl0, keyidx), raw payload switch, ext flags, marker.
    w.u8(ssrc_i).u8(0).u8(0).u8(pt_sel);
    w.u16(100).u32(1000).u16(10).u8(1).u16(3000).u8(1).u8(u8::from(key));
    w.u8(0).u8(0).u8(0).u8(1).u8(100).u8(1).u8(0);
}

/// An audio packet on RED (the second audio payload type, after Opus) carrying
/// two earlier frames, `seq_delta` after the stream's last.
fn red_op(w: &mut Writer, ops: &[Op], seq_delta: u8) {
    w.u8(op_byte(ops, Op::Rtp)).u8(0).u8(0);
    w.u8(0).u8(0).u8(0).u8(1);
    w.u16(100).u32(1000).u16(10).u8(seq_delta).u16(960).u8(1).u8(1);
    // Two redundant blocks, no raw payload, no extensions, marker.
    w.u8(2).u8(0).u8(0).u8(1);
}

pub fn seeds_router() -> Vec<(String, Vec<u8>)> {
    let ops = ROUTER_OPS;
    let mut out = Vec::new();
    // RED audio to a subscriber without RED, two packets lost on the way in.
    let mut w = Writer::default();
    w.u8(op_byte(ops, Op::Publish)).u8(0).u8(0);
    w.u8(op_byte(ops, Op::Subscribe)).u8(0).u8(0);
    w.u8(op_byte(ops, Op::Negotiate)).u8(0);
    for delta in [1, 1, 3, 1, 2, 1] {
        red_op(&mut w, ops, delta);
    }
    out.push(("red_loss".to_string(), w.0));
    for (name, mid) in [("audio", 0u8), ("video", 2u8)] {
        let mut w = Writer::default();
        // publish T0 on the mid, sub0 subscribes, negotiate, packets, mute, packets,
        // unsubscribe, packet.
        w.u8(op_byte(ops, Op::Publish)).u8(mid).u8(0);
        w.u8(op_byte(ops, Op::Subscribe)).u8(0).u8(0);
        w.u8(op_byte(ops, Op::Negotiate)).u8(0);
        for k in 0..3u8 {
            rtp_op(&mut w, ops, mid, 0, k, true);
        }
        w.u8(op_byte(ops, Op::Mute)).u8(0).u8(1);
        rtp_op(&mut w, ops, mid, 0, 0, true);
        w.u8(op_byte(ops, Op::Mute)).u8(0).u8(0);
        rtp_op(&mut w, ops, mid, 0, 0, true);
        w.u8(op_byte(ops, Op::Unsubscribe)).u8(0).u8(0);
        rtp_op(&mut w, ops, mid, 0, 0, true);
        w.u8(op_byte(ops, Op::Subscribe)).u8(0).u8(0);
        w.u8(op_byte(ops, Op::Negotiate)).u8(0);
        rtp_op(&mut w, ops, mid, 0, 0, true);
        w.u8(op_byte(ops, Op::ResetSub)).u8(0);
        rtp_op(&mut w, ops, mid, 0, 0, true);
        out.push((format!("pub_sub_mute_{name}"), w.0));
    }
    out
}

pub fn seeds_datagram() -> Vec<(String, Vec<u8>)> {
    let ops = DATAGRAM_OPS;
    let mut out = Vec::new();
    // Subscribe + RTCP kinds from the subscriber (after a packet so SSRCs exist).
    for kind in 0..11u8 {
        let mut w = Writer::default();
        w.u8(op_byte(ops, Op::Publish)).u8(2).u8(0);
        w.u8(op_byte(ops, Op::Subscribe)).u8(0).u8(0);
        w.u8(op_byte(ops, Op::Negotiate)).u8(0);
        rtp_op(&mut w, ops, 2, 0, 0, true);
        w.u8(op_byte(ops, Op::Rtcp)).u8(2).u8(0).u8(kind);
        w.bytes(&[0; 40]);
        out.push((format!("rtcp_kind_{kind}"), w.0));
    }
    // Raw datagrams of each class.
    let raws: [(&str, Vec<u8>); 4] = [
        ("dtls_client_hello", {
            let mut v = vec![0x16, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x30, 1, 0, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0x24, 0xfe, 0xfd];
            v.extend([0u8; 40]);
            v
        }),
        ("rtp_plain", vec![0x90, 0x60, 0, 1, 0, 0, 0, 1, 0x11, 0x11, 0, 1, 0xbe, 0xde, 0, 1, 0x10, 0x30, 0, 0, 1, 2, 3]),
        ("rtcp_rr", vec![0x81, 201, 0, 7, 0, 0, 0, 1, 0x11, 0x11, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("stun_garbage", vec![0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 6, 0, 4, b'a', b'b', b':', b'c']),
    ];
    for (name, dg) in raws {
        let mut w = Writer::default();
        w.u8(op_byte(ops, Op::Raw)).u8(0).chunk(&dg).u8(7);
        out.push((format!("raw_{name}"), w.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FLUSH_WITHIN;

    /// The world is live: a subscribed, negotiated subscriber gets the packet,
    /// on the m-line the offer announced; otherwise the targets test nothing.
    #[test]
    fn forwarded_rtp_waits_at_most_a_millisecond_for_its_flush() {
        let mut w = World::new();
        let tid = TRACKS[0];
        w.core.publish_track("pub", &w.mids[0].to_string(), tid, w.now).unwrap();
        w.core.subscribe("sub0", tid, "PA|x", w.now).unwrap();
        negotiate(&mut w.core, w.now, 0, &mut w.subs[0]);
        let bytes = [0u8, 0, 0, 0, 0, 0, 100, 0, 0, 0, 1, 0, 10, 1, 0, 100, 1, 1, 0, 0, 0, 0, 0];
        let (_, dg) = w.rtp(&mut Reader::new(&bytes));
        assert!(!w.core.flush_due(w.now), "nothing written yet");
        w.core.handle_datagram(addr(PUB_ADDR), &dg, w.now);
        assert!(!w.core.flush_due(w.now + FLUSH_WITHIN / 2));
        // A turn still reading must send it now.
        assert!(w.core.flush_due(w.now + FLUSH_WITHIN));
        w.core.flush(w.now + FLUSH_WITHIN);
        assert!(!w.core.flush_due(w.now + FLUSH_WITHIN * 10));
    }

    #[test]
    fn world_forwards_to_a_subscriber() {
        let mut w = World::new();
        for mid_i in [0usize, 2] {
            let tid = TRACKS[mid_i];
            w.core.publish_track("pub", &w.mids[mid_i].to_string(), tid, w.now).unwrap();
            w.core.subscribe("sub0", tid, "PA|x", w.now).unwrap();
            negotiate(&mut w.core, w.now, 0, &mut w.subs[0]);
            let before = w.core.counters.rtp_forwarded;
            // mid, ssrc, rid None, fitting pt #0, stream init, deltas, new frame, keyframe.
            let mut bytes = vec![mid_i as u8, mid_i as u8, 0, 0, 0];
            bytes.extend([0, 100, 0, 0, 0, 1, 0, 10, 1, 0, 100, 1, 1, 0, 0, 0, 0, 0]);
            let (m, dg) = w.rtp(&mut Reader::new(&bytes));
            assert_eq!(m, mid_i);
            w.core.handle_datagram(addr(PUB_ADDR), &dg, w.now);
            w.core.flush(w.now);
            assert_eq!(w.core.counters.rtp_forwarded, before + 1, "{:?}", w.core.stats());
            let sent = std::mem::take(&mut w.core.sink_mut().0);
            let to_sub: Vec<_> = sent
                .iter()
                .filter(|(d, dg)| *d == addr(SUB_ADDRS[0]) && dg[0] >> 6 == 2 && !(192..=223).contains(&dg[1]))
                .collect();
            assert_eq!(to_sub.len(), 1, "{sent:?}");
            let ssrc = u32::from_be_bytes(to_sub[0].1[8..12].try_into().unwrap());
            assert_eq!(w.subs[0].ssrcs.get(&ssrc), Some(&(tid.to_string(), true)));
            w.model.insert(tid, MTrack { mid: mid_i, muted: false, subs: [true, false] });
            w.check_sent(&sent, Some(mid_i));
        }
    }
}
