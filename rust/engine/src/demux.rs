//! Demultiplexing the shared UDP socket and the ICE-TCP connections: (transport,
//! remote address) to peer, with STUN binding requests (routed by the local ufrag)
//! teaching new addresses. A client's UDP and TCP paths are separate entries, so
//! the same peer is reachable over either and one never shadows the other.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use str0m::ice::StunMessage;

use crate::PeerKey;

/// Addresses remembered per peer. A client checks each of its candidates against
/// our single host candidate (a handful), and NAT rebinding adds one at a time; a
/// participant spraying binding requests from fresh ports or IPv6 addresses must
/// not grow the table without bound, so the earliest taught is forgotten (a live
/// one is taught again by its next consent check).
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// Local ufrags remembered per peer. An ICE restart gives a peer a new one; the
/// previous stays routable while checks naming it may still be in flight, and a
/// restart offer the client never answered must not push out the live one.
pub const MAX_UFRAGS_PER_PEER: usize = 4;

/// How a packet reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// ICE over TCP (RFC 4571 framed).
    Tcp,
}

/// A remote end: its transport and address.
pub type Remote = (Transport, SocketAddr);

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Peer(PeerKey),
    Drop(Drop),
}

/// Why a datagram reached no peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not STUN, DTLS, RTP or RTCP by its first byte (RFC 7983), from anyone.
    NotWebrtc,
    /// STUN from an unknown address that is no binding request naming a local ufrag.
    UnknownUfrag,
    /// DTLS, RTP or RTCP from an address no peer has used.
    UnknownSource,
}

/// RFC 7983 demultiplexing by the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Stun,
    Dtls,
    Rtp,
}

impl Class {
    fn of(datagram: &[u8]) -> Option<Self> {
        match datagram.first()? {
            0..=3 => Some(Self::Stun),
            20..=63 => Some(Self::Dtls),
            128..=191 => Some(Self::Rtp),
            _ => None,
        }
    }
}

const STUN_HEADER: usize = 20;
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const STUN_USERNAME: u16 = 0x0006;

/// The local part of a binding request's USERNAME ("<ours>:<theirs>"), found by
/// walking the attribute headers only: a pre-filter, so that a flood naming ufrags
/// we do not have never reaches the full parser.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < STUN_HEADER || datagram[0..2] != STUN_BINDING_REQUEST || datagram[4..8] != STUN_MAGIC {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if declared + STUN_HEADER != datagram.len() {
        return None;
    }
    let mut at = STUN_HEADER;
    while at + 4 <= datagram.len() {
        let typ = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value = datagram.get(at + 4..at + 4 + len)?;
        if typ == STUN_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(local, _)| local);
        }
        at += 4 + len.next_multiple_of(4);
    }
    None
}

/// Address and ufrag tables. Removing a peer removes all of its entries.
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<Remote, PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
    /// Invariant: `ufrags[k]` holds exactly the ufrags `u` with `by_ufrag[u] == k`,
    /// oldest first, at most `MAX_UFRAGS_PER_PEER` of them.
    ufrags: HashMap<PeerKey, VecDeque<String>>,
    /// Invariant: `addrs[k]` holds exactly the addresses `a` with `by_addr[a] == k`,
    /// in the order taught, at most `MAX_ADDRS_PER_PEER` of them.
    addrs: HashMap<PeerKey, VecDeque<Remote>>,
}

impl Demux {
    /// Register a peer under its local ICE ufrag.
    pub fn add_peer(&mut self, ufrag: String, key: PeerKey) {
        self.add_ufrag(key, ufrag);
    }

    /// Route binding requests naming `ufrag` to `key` too (an ICE restart), forgetting
    /// the peer's oldest ufrag beyond the cap. A ufrag taken from another peer is
    /// that peer's no more.
    pub fn add_ufrag(&mut self, key: PeerKey, ufrag: String) {
        if self.by_ufrag.get(&ufrag) == Some(&key) {
            return;
        }
        if let Some(old) = self.by_ufrag.insert(ufrag.clone(), key) {
            if let Some(list) = self.ufrags.get_mut(&old) {
                list.retain(|u| *u != ufrag);
            }
        }
        let list = self.ufrags.entry(key).or_default();
        list.push_back(ufrag);
        while list.len() > MAX_UFRAGS_PER_PEER {
            if let Some(u) = list.pop_front() {
                self.by_ufrag.remove(&u);
            }
        }
    }

    /// Forget a peer.
    pub fn remove_peer(&mut self, key: PeerKey) {
        for a in self.addrs.remove(&key).unwrap_or_default() {
            self.by_addr.remove(&a);
        }
        for u in self.ufrags.remove(&key).unwrap_or_default() {
            self.by_ufrag.remove(&u);
        }
    }

    /// Bind `source` to `key`, forgetting the peer's oldest address beyond the cap.
    fn teach(&mut self, source: Remote, key: PeerKey) {
        if self.by_addr.get(&source) == Some(&key) {
            return;
        }
        if let Some(old) = self.by_addr.insert(source, key) {
            if let Some(list) = self.addrs.get_mut(&old) {
                list.retain(|a| *a != source);
            }
        }
        let list = self.addrs.entry(key).or_default();
        list.push_back(source);
        while list.len() > MAX_ADDRS_PER_PEER {
            if let Some(a) = list.pop_front() {
                self.by_addr.remove(&a);
            }
        }
    }

    /// Which peer a datagram from `source` belongs to. A STUN binding request whose
    /// USERNAME starts with a known local ufrag (re)binds the address, which covers
    /// first contact and NAT rebinding; anything else needs a known address.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<PeerKey> {
        match self.classify(source, datagram) {
            Route::Peer(key) => Some(key),
            Route::Drop(_) => None,
        }
    }

    /// `route`, saying why a datagram is dropped. The media port is public, so
    /// this runs for every datagram anyone sends: whatever is dropped is dropped
    /// after a table lookup and a scan of the STUN header at most, without
    /// parsing or allocating.
    pub fn classify(&mut self, source: SocketAddr, datagram: &[u8]) -> Route {
        self.classify_on(Transport::Udp, source, datagram)
    }

    /// `classify` for a packet that came over `transport`.
    pub fn classify_on(&mut self, transport: Transport, source: SocketAddr, datagram: &[u8]) -> Route {
        let (route, teach) = self.peek_on(transport, source, datagram);
        if let (Route::Peer(key), true) = (route, teach) {
            self.teach((transport, source), key);
        }
        route
    }

    /// `classify_on` without learning: the route, and whether it is a binding
    /// request that would (re)bind `source` to that peer (`learn` does). Shared
    /// tables look up under a read lock and take the write lock only to learn.
    pub fn peek_on(&self, transport: Transport, source: SocketAddr, datagram: &[u8]) -> (Route, bool) {
        let source = (transport, source);
        let Some(class) = Class::of(datagram) else {
            return (Route::Drop(Drop::NotWebrtc), false);
        };
        if class == Class::Stun {
            let ours = stun_local_ufrag(datagram).is_some_and(|local| self.by_ufrag.contains_key(local));
            // Only a request naming one of ours pays for a full parse.
            if let Some(key) = ours.then(|| self.route_stun(datagram)).flatten() {
                let known = self.by_addr.get(&source) == Some(&key);
                return (Route::Peer(key), !known);
            }
            return match self.by_addr.get(&source) {
                Some(&key) => (Route::Peer(key), false),
                None => (Route::Drop(Drop::UnknownUfrag), false),
            };
        }
        match self.by_addr.get(&source) {
            Some(&key) => (Route::Peer(key), false),
            None => (Route::Drop(Drop::UnknownSource), false),
        }
    }

    /// Bind `source` to `key`, as a binding request `peek_on` routed would.
    pub fn learn(&mut self, transport: Transport, source: SocketAddr, key: PeerKey) {
        self.teach((transport, source), key);
    }

    fn route_stun(&self, datagram: &[u8]) -> Option<PeerKey> {
        let msg = StunMessage::parse(datagram).ok()?;
        if !msg.is_binding_request() {
            return None;
        }
        // USERNAME is "<receiver ufrag>:<sender ufrag>"; we are the receiver.
        let (local, _) = msg.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// Number of ufrags routed (tests).
    pub fn ufrag_count(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Number of known addresses (stats).
    pub fn addr_count(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;

    fn binding_request(username: &str) -> Vec<u8> {
        let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 100, true);
        let mut buf = vec![0u8; 1500];
        let hmac = |k: &[u8], p: &[&[u8]]| crate::fuzz::sha1_hmac(k, p);
        let n = msg.to_bytes(Some(b"pw"), &mut buf, hmac).unwrap();
        buf.truncate(n);
        buf
    }

    /// Found while writing the `demux` fuzz target: every binding request naming a
    /// live ufrag from a fresh source address added an entry for the peer's whole
    /// lifetime, so one participant could grow the table without bound.
    #[test]
    fn addresses_per_peer_are_capped() {
        let mut d = Demux::default();
        d.add_peer("ufrag".into(), 1);
        d.add_peer("other".into(), 2);
        let req = binding_request("ufrag:remote");
        for port in 0..1000u16 {
            assert_eq!(d.route(SocketAddr::from(([192, 0, 2, 1], 1000 + port)), &req), Some(1));
        }
        assert_eq!(d.addr_count(), MAX_ADDRS_PER_PEER);
        // The latest addresses still route without STUN; the oldest were forgotten.
        assert_eq!(d.route(SocketAddr::from(([192, 0, 2, 1], 1999)), b"\x80junk"), Some(1));
        assert_eq!(d.route(SocketAddr::from(([192, 0, 2, 1], 1000)), b"\x80junk"), None);
        // An address taken over by another peer leaves the first peer's list.
        let other = binding_request("other:remote");
        d.route(SocketAddr::from(([192, 0, 2, 1], 1999)), &other);
        assert_eq!(d.addr_count(), MAX_ADDRS_PER_PEER);
        d.remove_peer(1);
        assert_eq!(d.addr_count(), 1);
        d.remove_peer(2);
        assert_eq!(d.addr_count(), 0);
    }

    /// Issue 11: junk and STUN naming no peer are told apart and dropped before
    /// any parsing; the pre-filter reads USERNAME as str0m's parser does.
    #[test]
    fn strangers_are_dropped_by_reason() {
        let mut d = Demux::default();
        d.add_peer("ufrag".into(), 1);
        let known = SocketAddr::from(([192, 0, 2, 1], 1000));
        let stranger = SocketAddr::from(([192, 0, 2, 9], 9000));
        let ours = binding_request("ufrag:remote");
        assert_eq!(stun_local_ufrag(&ours), Some("ufrag"));
        assert_eq!(d.classify(known, &ours), Route::Peer(1));
        let theirs = binding_request("other:remote");
        assert_eq!(stun_local_ufrag(&theirs), Some("other"));
        assert_eq!(d.classify(stranger, &theirs), Route::Drop(Drop::UnknownUfrag));
        // From a peer's address, STUN still reaches the peer (str0m answers or not).
        assert_eq!(d.classify(known, &theirs), Route::Peer(1));
        assert_eq!(d.classify(stranger, b"\x80\x60rtp"), Route::Drop(Drop::UnknownSource));
        assert_eq!(d.classify(stranger, b"\x16\xfe\xfd"), Route::Drop(Drop::UnknownSource));
        for junk in [&b""[..], b"\x04", b"\x40 channel data", b"\xff"] {
            assert_eq!(d.classify(known, junk), Route::Drop(Drop::NotWebrtc), "{junk:?}");
        }
        // Truncated or inconsistent headers never reach the parser.
        assert_eq!(stun_local_ufrag(&ours[..ours.len() - 4]), None);
        let mut bad_len = ours.clone();
        bad_len[22..24].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(stun_local_ufrag(&bad_len), None);
        assert_eq!(d.addr_count(), 1, "only the request naming a peer taught an address");
    }

    /// An ICE restart gives a peer a new local ufrag: binding requests naming it
    /// reach the peer from a new address, the previous ufrag keeps working for a
    /// while, and the table stays bounded and clean.
    #[test]
    fn restarted_ufrags_route_and_stay_bounded() {
        let mut d = Demux::default();
        d.add_peer("first".into(), 1);
        d.add_ufrag(1, "second".into());
        let moved = SocketAddr::from(([198, 51, 100, 7], 4000));
        assert_eq!(d.classify(moved, &binding_request("second:remote")), Route::Peer(1));
        assert_eq!(d.classify(moved, &binding_request("first:remote")), Route::Peer(1));
        for i in 0..10 {
            d.add_ufrag(1, format!("u{i}"));
        }
        assert_eq!(d.ufrag_count(), MAX_UFRAGS_PER_PEER);
        let elsewhere = SocketAddr::from(([198, 51, 100, 8], 4000));
        assert_eq!(d.classify(elsewhere, &binding_request("first:remote")), Route::Drop(Drop::UnknownUfrag));
        assert_eq!(d.classify(elsewhere, &binding_request("u9:remote")), Route::Peer(1));
        d.remove_peer(1);
        assert_eq!((d.ufrag_count(), d.addr_count()), (0, 0));
    }

    /// Issue 13: the same remote address over UDP and over TCP are two paths; an
    /// address taught over one transport does not route packets of the other.
    #[test]
    fn udp_and_tcp_paths_are_told_apart() {
        let mut d = Demux::default();
        d.add_peer("ufrag".into(), 1);
        let client = SocketAddr::from(([192, 0, 2, 1], 5000));
        assert_eq!(d.classify_on(Transport::Tcp, client, &binding_request("ufrag:remote")), Route::Peer(1));
        assert_eq!(d.classify_on(Transport::Tcp, client, b"\x16\xfe\xfd"), Route::Peer(1));
        assert_eq!(d.classify(client, b"\x16\xfe\xfd"), Route::Drop(Drop::UnknownSource));
        assert_eq!(d.classify(client, &binding_request("ufrag:remote")), Route::Peer(1));
        assert_eq!(d.addr_count(), 2);
        d.remove_peer(1);
        assert_eq!(d.addr_count(), 0);
    }
}
