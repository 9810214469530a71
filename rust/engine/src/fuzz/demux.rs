//! Target `demux`: the address/ufrag tables under peer churn, ICE restarts
//! (a live peer's new ufrag) and hostile datagrams. Invariants: a datagram never routes to a removed peer; a STUN
//! binding request naming a live peer's ufrag routes to it and teaches the
//! address; anything else from an unknown address is unroutable.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use str0m::ice::{StunMessage, TransId};

use super::reader::{Reader, Writer};
use crate::demux::{Demux, Drop, Route, MAX_ADDRS_PER_PEER, MAX_UFRAGS_PER_PEER};
use crate::PeerKey;

const UFRAGS: [&str; 4] = ["aaaa", "bbbb", "aaaab", "c:d"];

fn addr(r: &mut Reader) -> SocketAddr {
    match r.below(4) {
        0 => SocketAddr::from(([10, 0, 0, r.u8() % 4], 5000)),
        1 => SocketAddr::from(([0u16, 0, 0, 0, 0, 0xffff, 0x0a00, u16::from(r.u8() % 4)], 5000)),
        _ => SocketAddr::from(([192, 0, 2, r.u8()], r.u16())),
    }
}

fn stun(username: &str, use_candidate: bool, password: Option<&[u8]>) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 100, use_candidate);
    let mut buf = vec![0u8; 1500];
    let hmac = |key: &[u8], parts: &[&[u8]]| crate::fuzz::session::sha1_hmac(key, parts);
    let n = msg.to_bytes(password, &mut buf, hmac).expect("a small request fits 1500 bytes");
    buf.truncate(n);
    buf
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut demux = Demux::default();
    // Model: live peers and their ufrags (a later add of the same ufrag wins).
    let mut live: HashMap<PeerKey, &str> = HashMap::new();
    let mut by_ufrag: HashMap<&str, PeerKey> = HashMap::new();
    let mut by_addr: HashMap<SocketAddr, PeerKey> = HashMap::new();
    // Per peer, in the order taught (the engine caps these).
    let mut order: HashMap<PeerKey, VecDeque<SocketAddr>> = HashMap::new();
    let teach = |by_addr: &mut HashMap<SocketAddr, PeerKey>,
                 order: &mut HashMap<PeerKey, VecDeque<SocketAddr>>,
                 source: SocketAddr,
                 k: PeerKey| {
        if by_addr.get(&source) == Some(&k) {
            return;
        }
        if let Some(old) = by_addr.insert(source, k) {
            order.entry(old).or_default().retain(|a| *a != source);
        }
        let list = order.entry(k).or_default();
        list.push_back(source);
        if list.len() > MAX_ADDRS_PER_PEER {
            let gone = list.pop_front().expect("longer than the cap");
            by_addr.remove(&gone);
        }
    };
    // Per peer, its ufrags oldest first (an ICE restart adds one; the engine caps them).
    let mut ufrags: HashMap<PeerKey, VecDeque<&str>> = HashMap::new();
    let add_ufrag = |by_ufrag: &mut HashMap<&'static str, PeerKey>,
                     ufrags: &mut HashMap<PeerKey, VecDeque<&'static str>>,
                     ufrag: &'static str,
                     k: PeerKey| {
        if by_ufrag.get(ufrag) == Some(&k) {
            return;
        }
        if let Some(old) = by_ufrag.insert(ufrag, k) {
            ufrags.entry(old).or_default().retain(|u| *u != ufrag);
        }
        let list = ufrags.entry(k).or_default();
        list.push_back(ufrag);
        if list.len() > MAX_UFRAGS_PER_PEER {
            let gone = list.pop_front().expect("longer than the cap");
            by_ufrag.remove(gone);
        }
    };
    let mut ops = 0;
    while !r.is_empty() && ops < 256 {
        ops += 1;
        match r.below(5) {
            0 => {
                let key = PeerKey::from(r.u8() % 8);
                let ufrag = r.pick(&UFRAGS);
                if let std::collections::hash_map::Entry::Vacant(e) = live.entry(key) {
                    demux.add_peer(ufrag.to_string(), key);
                    e.insert(ufrag);
                } else {
                    // An ICE restart: the live peer gets another local ufrag.
                    demux.add_ufrag(key, ufrag.to_string());
                }
                add_ufrag(&mut by_ufrag, &mut ufrags, ufrag, key);
            }
            1 => {
                let key = PeerKey::from(r.u8() % 8);
                demux.remove_peer(key);
                live.remove(&key);
                by_ufrag.retain(|_, k| *k != key);
                ufrags.remove(&key);
                by_addr.retain(|_, k| *k != key);
                order.remove(&key);
            }
            2 => {
                // A well-formed binding request, USERNAME "<ufrag>:<remote>".
                let source = addr(&mut r);
                let local = r.pick(&UFRAGS);
                let remote = if r.bool() { "zz" } else { "" };
                let username = format!("{local}:{remote}");
                let pw = r.bool().then_some(&b"password"[..]);
                let dg = stun(&username, r.bool(), pw);
                let got = demux.route(source, &dg);
                // USERNAME splits at the first ':'; an empty remote part is refused.
                // Binding requests without MESSAGE-INTEGRITY do not parse.
                let local_part = match username.split_once(':') {
                    Some((l, rest)) if !rest.is_empty() && pw.is_some() => Some(l),
                    _ => None,
                };
                let want = match local_part.and_then(|l| by_ufrag.get(l)) {
                    Some(&k) => {
                        teach(&mut by_addr, &mut order, source, k);
                        Some(k)
                    }
                    None => by_addr.get(&source).copied(),
                };
                assert_eq!(got, want, "STUN {username:?} from {source}");
            }
            _ => {
                let source = addr(&mut r);
                let mut dg = r.chunk(600).to_vec();
                if r.bool() && dg.len() >= 8 {
                    // Help the fuzzer past the STUN magic cookie.
                    dg[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                    dg[0] &= 0x01;
                }
                let got = demux.classify(source, &dg);
                // RFC 7983: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191; the rest is
                // nobody's, even from a peer's address.
                let webrtc = matches!(dg.first(), Some(0..=3 | 20..=63 | 128..=191));
                match got {
                    Route::Peer(k) => {
                        assert!(webrtc, "non-WebRTC bytes {:?} routed", dg.first());
                        assert!(live.contains_key(&k), "routed to removed peer {k}");
                        teach(&mut by_addr, &mut order, source, k);
                    }
                    Route::Drop(Drop::NotWebrtc) => assert!(!webrtc, "WebRTC bytes dropped as junk"),
                    Route::Drop(why) => {
                        assert!(webrtc, "{why:?} for non-WebRTC bytes");
                        assert_eq!(by_addr.get(&source), None, "known address {source} unroutable ({why:?})");
                        let stun = dg.first().is_some_and(|b| *b <= 3);
                        assert_eq!(why == Drop::UnknownUfrag, stun, "{why:?} for first byte {:?}", dg.first());
                    }
                }
            }
        }
        assert_eq!(demux.addr_count(), by_addr.len(), "address table size");
        assert_eq!(demux.ufrag_count(), by_ufrag.len(), "ufrag table size");
        assert!(order.values().all(|l| l.len() <= MAX_ADDRS_PER_PEER));
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut add_route = Writer::default();
    // add peer 1 "aaaa", add peer 2 "bbbb", STUN to aaaa, junk from same address, remove 1.
    add_route.u8(0).u8(1).u8(0).u8(0).u8(2).u8(1);
    add_route.u8(2).u8(0).u8(1).u8(0).u8(1).u8(1).u8(1);
    add_route.u8(3).u8(0).u8(1).chunk(&[0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    add_route.u8(1).u8(1);
    add_route.u8(3).u8(0).u8(1).chunk(&[0x16, 0xfe, 0xfd, 0, 0]);
    let mut raw_stun = Writer::default();
    raw_stun.u8(0).u8(3).u8(0);
    raw_stun.u8(3).u8(2).u8(9).u16(4000).chunk(&stun("aaaa:zz", true, Some(b"pw")));
    vec![("add_route_remove".into(), add_route.0), ("raw_stun".into(), raw_stun.0)]
}

