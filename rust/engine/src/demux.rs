//! Demultiplexing the shared UDP socket: remote address to peer, with STUN
//! binding requests (routed by the local ufrag) teaching new addresses.
use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::ice::StunMessage;

use crate::PeerKey;

/// Address and ufrag tables. Removing a peer removes all of its entries.
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
}

impl Demux {
    /// Register a peer under its local ICE ufrag.
    pub fn add_peer(&mut self, ufrag: String, key: PeerKey) {
        self.by_ufrag.insert(ufrag, key);
    }

    /// Forget a peer.
    pub fn remove_peer(&mut self, key: PeerKey) {
        self.by_addr.retain(|_, k| *k != key);
        self.by_ufrag.retain(|_, k| *k != key);
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
                self.by_addr.insert(source, key);
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
