//! Shards: several engine threads behind one media port.
//!
//! Each shard is a [`Core`](crate::core::Core) on its own thread with its own
//! socket bound to the same port (`SO_REUSEPORT`), so the kernel spreads incoming
//! datagrams over the shards by their 4-tuple and every shard sends from the
//! port the clients know. The control plane places each peer on a shard; the
//! kernel knows nothing of that placement, so a datagram that reaches a shard
//! whose tables do not know it is looked up in the shared [`Fabric`] directory
//! and handed to the owning shard.
//!
//! A room's subscribers may sit on several shards. The publisher's shard (the
//! track's *home*) decrypts each packet once; for every other shard that has
//! subscribers of the track it sends one [`Relayed`] message whose payload is
//! the same `Arc<[u8]>`, and that shard's *mirror* of the track fans it out to
//! its own subscribers. Keyframe requests travel the other way.
//!
//! # Keys
//! Peer keys are unique across shards: shard `s` of `n` hands out keys
//! `s + 1, s + 1 + n, …`, so a key names its shard ([`shard_of`]) and the shared
//! directory is a plain [`Demux`] over all peers.
//!
//! # Invariants
//! - A message is handled on the shard it names; cross-shard traffic never
//!   blocks (inboxes are unbounded batches drained every run-loop turn; each
//!   producer is bounded by what its own socket delivers).
//! - The directory holds exactly the ufrags of live peers (and the addresses
//!   taught by datagrams that reached a foreign shard, capped per peer).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use str0m::media::Rid;
use str0m::rtp::{ExtensionValues, Ssrc};

use crate::demux::{Demux, Route, Transport};
use crate::PeerKey;

/// Index of a shard (0-based).
pub type ShardId = usize;

/// The shard a peer key belongs to, with `shards` shards.
pub fn shard_of(key: PeerKey, shards: usize) -> ShardId {
    (key.saturating_sub(1) as usize) % shards.max(1)
}

/// One incoming RTP packet, as the fan-out needs it (str0m's `RtpPacket` is not
/// `Clone`, and a relayed packet has no `Rtc` behind it).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    pub pt: str0m::media::Pt,
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub ext: ExtensionValues,
    pub payload: Arc<[u8]>,
    /// When the home shard received it (str0m stamps outgoing packets with it).
    pub received: std::time::Instant,
}

/// RTP of a track homed on another shard, for this shard's mirror of it.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub track: Arc<str>,
    pub packet: Incoming,
}

/// What one shard tells another.
#[derive(Debug)]
pub enum CrossMsg {
    /// A datagram (or ICE-TCP frame) that reached the wrong shard's socket.
    Datagram { transport: Transport, source: SocketAddr, destination: SocketAddr, data: Vec<u8> },
    /// Media of a track homed on the sender, for the receiver's subscribers.
    Rtp(Relayed),
    /// The receiver homes `track`; a subscriber on the sender wants a keyframe.
    Keyframe { track: Arc<str>, rid: Option<Rid> },
    /// The sender stopped homing `track`: the receiver drops its mirror.
    TrackGone { track: Arc<str> },
    /// A frame for an ICE-TCP connection the receiver holds (shard 0 owns TCP).
    StreamOut { dest: SocketAddr, data: Vec<u8> },
}

/// A shard's incoming batch, with the waker of its run loop.
pub struct Inbox {
    pending: Mutex<Vec<CrossMsg>>,
    /// Set while a wake is outstanding, so a burst costs one wake-up.
    signaled: AtomicBool,
    waker: Option<Arc<mio::Waker>>,
}

impl Inbox {
    /// An inbox that wakes `waker` (none: the owner polls, as tests do).
    pub fn new(waker: Option<Arc<mio::Waker>>) -> Self {
        Self { pending: Mutex::new(Vec::new()), signaled: AtomicBool::new(false), waker }
    }

    fn push_all(&self, msgs: &mut Vec<CrossMsg>) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).append(msgs);
        if !self.signaled.swap(true, Ordering::AcqRel) {
            if let Some(w) = &self.waker {
                let _ = w.wake();
            }
        }
    }

    /// Everything sent so far.
    pub fn take(&self) -> Vec<CrossMsg> {
        // Cleared first: a push racing with us either lands in the batch we take or
        // sees `false` and wakes us again.
        self.signaled.store(false, Ordering::Release);
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the shards share: their inboxes and the directory of all peers.
pub struct Fabric {
    inboxes: Vec<Inbox>,
    /// Read-locked per unknown datagram (floods of them hit every shard at once),
    /// write-locked to learn an address or change the peers.
    directory: RwLock<Demux>,
}

impl Fabric {
    /// A fabric over one inbox per shard.
    pub fn new(inboxes: Vec<Inbox>) -> Self {
        Self { inboxes, directory: RwLock::new(Demux::default()) }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Shard `shard`'s inbox.
    pub fn inbox(&self, shard: ShardId) -> &Inbox {
        &self.inboxes[shard]
    }

    fn directory(&self) -> std::sync::RwLockWriteGuard<'_, Demux> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Route binding requests naming `ufrag` to peer `key` from any shard.
    pub fn add_ufrag(&self, key: PeerKey, ufrag: String) {
        self.directory().add_ufrag(key, ufrag);
    }

    /// Ufrags the directory routes (tests and fuzzing check it against the peers).
    pub fn ufrag_count(&self) -> usize {
        self.directory.read().unwrap_or_else(|p| p.into_inner()).ufrag_count()
    }

    /// Forget peer `key` everywhere.
    pub fn remove_peer(&self, key: PeerKey) {
        self.directory().remove_peer(key);
    }

    /// The peer (any shard) a datagram a shard did not know belongs to; teaches
    /// the directory its address as the shard's own demux would.
    pub fn owner(&self, transport: Transport, source: SocketAddr, datagram: &[u8]) -> Route {
        let (route, learn) = self.directory.read().unwrap_or_else(|p| p.into_inner()).peek_on(transport, source, datagram);
        if let (Route::Peer(key), true) = (route, learn) {
            self.directory().learn(transport, source, key);
        }
        route
    }

    /// Deliver a turn's outgoing messages, one batch (and at most one wake) per
    /// destination shard.
    pub fn deliver(&self, outbox: &mut Vec<(ShardId, CrossMsg)>) {
        if outbox.is_empty() {
            return;
        }
        let mut per_shard: Vec<Vec<CrossMsg>> = (0..self.inboxes.len()).map(|_| Vec::new()).collect();
        for (to, msg) in outbox.drain(..) {
            if let Some(batch) = per_shard.get_mut(to) {
                batch.push(msg);
            }
        }
        for (to, mut batch) in per_shard.into_iter().enumerate() {
            if !batch.is_empty() {
                self.inboxes[to].push_all(&mut batch);
            }
        }
    }
}

/// A core's place among the shards.
#[derive(Clone)]
pub struct ShardLink {
    pub id: ShardId,
    pub fabric: Arc<Fabric>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_shard() {
        for shards in 1..5usize {
            for (i, key) in (1..200u32).enumerate() {
                assert_eq!(shard_of(key, shards), i % shards);
            }
        }
    }

    #[test]
    fn delivery_batches_per_shard_and_keeps_order() {
        let fabric = Fabric::new(vec![Inbox::new(None), Inbox::new(None)]);
        let gone = |t: &str| CrossMsg::TrackGone { track: t.into() };
        let mut out = vec![(1, gone("a")), (0, gone("b")), (1, gone("c"))];
        fabric.deliver(&mut out);
        assert!(out.is_empty());
        let names = |msgs: Vec<CrossMsg>| -> Vec<String> {
            msgs.into_iter()
                .map(|m| match m {
                    CrossMsg::TrackGone { track } => track.to_string(),
                    _ => unreachable!(),
                })
                .collect()
        };
        assert_eq!(names(fabric.inbox(1).take()), ["a", "c"]);
        assert_eq!(names(fabric.inbox(0).take()), ["b"]);
        assert!(fabric.inbox(1).take().is_empty());
    }
}
