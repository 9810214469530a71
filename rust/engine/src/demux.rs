//! Demultiplexing the shared UDP socket: remote address to peer, with STUN
//! binding requests (routed by the local ufrag) teaching new addresses.
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

/// Address and ufrag tables. Removing a peer removes all of its entries.
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
    /// Invariant: `addrs[k]` holds exactly the addresses `a` with `by_addr[a] == k`,
    /// in the order taught, at most `MAX_ADDRS_PER_PEER` of them.
    addrs: HashMap<PeerKey, VecDeque<SocketAddr>>,
}

impl Demux {
    /// Register a peer under its local ICE ufrag.
    pub fn add_peer(&mut self, ufrag: String, key: PeerKey) {
        self.by_ufrag.insert(ufrag, key);
    }

    /// Forget a peer.
    pub fn remove_peer(&mut self, key: PeerKey) {
        for a in self.addrs.remove(&key).unwrap_or_default() {
            self.by_addr.remove(&a);
        }
        self.by_ufrag.retain(|_, k| *k != key);
    }

    /// Bind `source` to `key`, forgetting the peer's oldest address beyond the cap.
    fn teach(&mut self, source: SocketAddr, key: PeerKey) {
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
        // STUN: first two bits zero, and magic cookie at bytes 4..8 (RFC 5389).
        let is_stun = datagram.len() >= 20
            && datagram[0] < 2
            && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42];
        if is_stun {
            if let Some(key) = self.route_stun(datagram) {
                self.teach(source, key);
                return Some(key);
            }
        }
        self.by_addr.get(&source).copied()
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
}
