//! pysfu's media data plane. Knows peers and tracks, never rooms.
//!
//! # Run loop
//! Each engine thread (a shard, see [`shard`]) owns a UDP socket shared by its
//! peers and a [`core::Core`]:
//! str0m `Rtc` instances in RTP mode with ICE-lite, one per PeerConnection.
//! Datagrams are routed to peers by remote address; a STUN binding request whose
//! USERNAME names a peer's local ufrag teaches (or re-teaches) an address.
//! Every input to an `Rtc` is followed by a full drain of its output, as str0m
//! requires. Incoming RTP is fanned out by the [`router`]: the payload is shared
//! (`Arc<[u8]>`), each subscriber rewrites SSRC/seq/timestamp and pays only its
//! own SRTP and send.
//!
//! # The door
//! [`Engine`] is the handle: commands run as closures on the thread of the shard
//! they concern (the peer's, or the track's home) and block the caller until done
//! (`bind_many`/`set_layers` batch many in one round trip per shard); events of
//! every shard go back through one [`EventQueue`] whose wake fd turns readable
//! when events are pending.
//!
//! # Invariants
//! - Remote bytes never panic; a bad datagram is counted and dropped.
//! - A removed peer leaves no routing entries, tracks or subscriptions behind.
//!
//! # Addresses and transports
//! Bound to a wildcard address, the socket serves every interface: the control
//! plane lists the addresses to advertise (`EngineConfig::advertise_ips`), each
//! becomes a host candidate, and each datagram's destination address (IP_PKTINFO)
//! tells str0m which candidate it reached. Bound to `::` the socket is dual-stack.
//! With a TCP port, every advertised address is also a passive ICE-TCP host
//! candidate (`net::tcp`, RFC 4571); demux keys paths by (transport, address).
//!
//! # Out of scope (for now)
//! TURN (the control plane runs it: pysfu/media/turn.py), dependency-descriptor forwarding, VP9/AV1 picture-id rewriting on
//! layer switches (VP8's is done), RED, pausing down tracks that do not fit the
//! bandwidth estimate.
//!
//! # Quality
//! `router::forwarder` decides per packet and down track; `router::allocator` caps
//! each subscriber's layers within its TWCC estimate (when
//! `EngineConfig::bandwidth_estimation`); `router::audio` and `link_stats` summarise
//! levels and links for the control plane (`AudioLevels`, `LinkStats` events).
pub mod batch;
pub mod core;
pub mod demux;
pub mod error;
pub mod event;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod keyframe;
pub mod net;
pub mod link_stats;
pub mod peer;
pub mod pump;
#[cfg(test)]
mod red_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod single_pc_tests;
pub mod rewrite;
pub mod router;
mod runloop;
pub mod sdp;
pub mod shard;
mod socket_buffers;
pub mod testkit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::core::Core;
pub use crate::error::{EngineError, Result};
pub use crate::event::{EventQueue, MediaEvent};
pub use crate::peer::{Role, Sink};
pub use crate::shard::ShardId;
use crate::shard::{Fabric, Inbox, ShardLink};

/// Version of the engine crate, reported by the Python side.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Engine-internal peer index (the control plane uses string ids).
pub type PeerKey = u32;

/// What a subscriber wants of one down track (`Engine::set_layers`): subscriber
/// peer, track id, quality (0 LOW .. 2 HIGH), disabled, frame rate (0: any) and
/// priority (1 the highest, 0 unset).
pub type LayerSettings = (String, String, i64, bool, u32, u32);

/// Monotonic counters, reported by `stats()`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rtp_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_dropped: u64,
    pub keyframe_requests: u64,
    /// RTCP feedback from subscribers (`_in`) and to publishers (`_out`).
    pub nacks_in: u64,
    pub nacks_out: u64,
    /// Audio packets sent again because a subscriber NACKed them.
    pub audio_resent: u64,
    /// Audio packets lost from a publisher and given back to subscribers without
    /// RED from a later packet's redundancy (one per packet, not per subscriber).
    pub rtp_red_recovered: u64,
    pub plis_in: u64,
    pub plis_out: u64,
    pub firs_in: u64,
    pub firs_out: u64,
    /// Media packets lost from publishers (estimated from the loss fraction of our
    /// receiver reports) and to subscribers (as their receiver reports say).
    pub packets_lost_in: u64,
    pub packets_lost_out: u64,
    /// Datagrams no peer got (the sum of the three `dropped_*`).
    pub unroutable: u64,
    /// Not STUN, DTLS, RTP or RTCP by the first byte.
    pub dropped_not_webrtc: u64,
    /// STUN from an unknown address naming no local ufrag (or no binding request).
    pub dropped_unknown_ufrag: u64,
    /// DTLS/RTP/RTCP from an address no peer has used.
    pub dropped_unknown_source: u64,
    pub bad_datagrams: u64,
    /// Datagrams this shard's socket got for a peer of another shard (handed over).
    pub handed_over: u64,
    /// Packets of tracks homed here relayed to other shards' mirrors (one per
    /// packet and follower shard, whatever its subscriber count).
    pub rtp_relayed: u64,
}

/// Engine start-up settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Address to bind the UDP socket on.
    pub bind_ip: IpAddr,
    /// UDP port; 0 picks an ephemeral one.
    pub udp_port: u16,
    /// Address put in candidates; defaults to `bind_ip` (or a guessed local
    /// address when binding the unspecified address).
    pub advertise_ip: Option<IpAddr>,
    /// How long a peer's ICE may stay Disconnected before the peer is closed
    /// (`core::ICE_DISCONNECTED_GRACE` by default).
    pub ice_disconnected_grace: Duration,
    /// Addresses put in candidates; when not empty, they replace `advertise_ip`.
    pub advertise_ips: Vec<IpAddr>,
    /// ICE-TCP port (passive host candidates); `Some(0)` picks an ephemeral one,
    /// `None` offers UDP only.
    pub tcp_port: Option<u16>,
    /// Per-subscriber bandwidth estimation (TWCC) and bandwidth-driven layer
    /// choice, as the reference's congestion control. str0m then paces every
    /// subscriber's media to its estimate, which costs CPU per packet
    /// (docs/performance.md).
    pub bandwidth_estimation: bool,
    /// With bandwidth estimation: pause video whose lowest layer does not fit
    /// (`Core::set_allow_pause`); off, as the reference's `allow_pause`.
    pub allow_pause: bool,
    /// Engine threads (shards) behind the one port; 0 = one per core.
    pub workers: usize,
    /// Audio NACK: Opus negotiated with `nack`, lost publisher audio NACKed,
    /// subscribers' audio NACKs answered (`core::audio_nack`). On by default; the
    /// NACK lists come from str0m's raw packet events, which copy every packet.
    pub audio_nack: bool,
}

impl EngineConfig {
    /// `bind_ip` with an ephemeral port, no advertised address and the default grace.
    pub fn new(bind_ip: IpAddr) -> Self {
        Self {
            bind_ip,
            udp_port: 0,
            advertise_ip: None,
            ice_disconnected_grace: core::ICE_DISCONNECTED_GRACE,
            advertise_ips: Vec::new(),
            tcp_port: None,
            bandwidth_estimation: true,
            allow_pause: false,
            workers: 1,
            audio_nack: true,
        }
    }
}

/// One engine thread: its command channel, waker and join handle.
struct ShardHandle {
    jobs: Mutex<Option<SyncSender<runloop::Job>>>,
    waker: Arc<mio::Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Where the façade routes commands: each peer's shard, each track's home.
#[derive(Default)]
struct Placement {
    peers: HashMap<String, ShardId>,
    /// Track id → (home shard, publisher peer id).
    homes: HashMap<String, (ShardId, String)>,
}

/// Handle to the engine threads (one per shard). Dropping it (or `close`) stops
/// them.
pub struct Engine {
    shards: Vec<ShardHandle>,
    placement: Mutex<Placement>,
    queue: Arc<EventQueue>,
    local_addr: SocketAddr,
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
}

/// Queue depth of pending commands; callers block beyond it.
const JOB_QUEUE_DEPTH: usize = 1024;

fn guess_local_ip() -> IpAddr {
    // connect() on UDP sends nothing; it only asks the kernel for a route.
    StdUdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Shards for `workers` (0: one per core the process may use).
pub fn shard_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Engine {
    /// Bind the sockets and start the engine threads.
    pub fn start(config: EngineConfig) -> Result<Self> {
        let n = shard_count(config.workers);
        let addr = SocketAddr::new(config.bind_ip, config.udp_port);
        let first = if n > 1 { net::udp::bind_shared(addr)? } else { StdUdpSocket::bind(addr)? };
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..n {
            sockets.push(net::udp::bind_shared(bound)?);
        }
        for s in &sockets {
            s.set_nonblocking(true)?;
            socket_buffers::enlarge(s);
            if bound.ip().is_unspecified() {
                use std::os::fd::AsRawFd;
                net::udp::enable_pktinfo(s.as_raw_fd(), bound.is_ipv6())?;
            }
        }
        let ips = if !config.advertise_ips.is_empty() {
            config.advertise_ips.clone()
        } else {
            vec![config.advertise_ip.unwrap_or(if bound.ip().is_unspecified() {
                guess_local_ip()
            } else {
                bound.ip()
            })]
        };
        let udp_addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, bound.port())).collect();
        let local_addr = udp_addrs[0];
        // ICE-TCP is rare (UDP-blocked clients): one listener, on shard 0; other
        // shards' peers send through it (`shard::CrossMsg::StreamOut`).
        let mut tcp = match config.tcp_port {
            Some(port) => {
                let listener = std::net::TcpListener::bind(SocketAddr::new(config.bind_ip, port))?;
                Some(net::tcp::TcpPlane::new(listener, runloop::FIRST_TCP_CONNECTION)?)
            }
            None => None,
        };
        let tcp_addrs: Vec<SocketAddr> = match &tcp {
            Some(t) => {
                let port = t.local_addr()?.port();
                ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
            }
            None => Vec::new(),
        };
        let queue = Arc::new(EventQueue::new()?);
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..n {
            let poll = mio::Poll::new()?;
            wakers.push(Arc::new(mio::Waker::new(poll.registry(), runloop::WAKER)?));
            polls.push(poll);
        }
        let fabric = Arc::new(Fabric::new(wakers.iter().map(|w| Inbox::new(Some(w.clone()))).collect()));
        let mut shards = Vec::new();
        for (id, (poll, std_socket)) in polls.into_iter().zip(sockets).enumerate() {
            let inbound = mio::net::UdpSocket::from_std(std_socket.try_clone()?);
            let socket = mio::net::UdpSocket::from_std(std_socket);
            let mut sink = runloop::UdpSink::new(socket);
            if id == 0 {
                sink.tcp = tcp.take();
            } else if config.tcp_port.is_some() {
                sink.stream_out = Some(Vec::new());
            }
            let mut core = Core::new(sink, local_addr);
            if n > 1 {
                core.set_shard(ShardLink { id, fabric: fabric.clone() });
            }
            core.set_addresses(udp_addrs.clone(), tcp_addrs.clone());
            core.set_ice_disconnected_grace(config.ice_disconnected_grace);
            core.set_bandwidth_estimation(config.bandwidth_estimation);
            core.set_allow_pause(config.allow_pause);
            core.set_audio_nack(config.audio_nack);
            let (tx, rx) = sync_channel(JOB_QUEUE_DEPTH);
            let q = queue.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pysfu-media-{id}"))
                .spawn(move || runloop::run(poll, core, inbound, rx, q))?;
            shards.push(ShardHandle {
                jobs: Mutex::new(Some(tx)),
                waker: wakers[id].clone(),
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Self {
            shards,
            placement: Mutex::new(Placement::default()),
            queue,
            local_addr,
            udp_addrs,
            tcp_addrs,
        })
    }

    /// Number of shards (engine threads).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Advertised UDP host candidate addresses (the first is `local_addr`).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// Advertised passive ICE-TCP host candidate addresses (empty without TCP).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The advertised address and the bound port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fd that turns readable when events are pending.
    pub fn wake_fd(&self) -> i32 {
        self.queue.wake_fd()
    }

    /// Take all pending events; never blocks.
    pub fn drain_events(&self) -> Vec<MediaEvent> {
        self.queue.drain()
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on shard `shard`'s thread and wait for its result.
    pub fn call_on<R, F>(&self, shard: ShardId, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core<runloop::UdpSink>, Instant) -> Result<R> + Send + 'static,
    {
        let handle = self.shards.get(shard).ok_or(EngineError::Closed)?;
        let (reply_tx, reply_rx) = sync_channel(1);
        let job: runloop::Job = Box::new(move |core, now| {
            let _ = reply_tx.send(f(core, now));
        });
        {
            let jobs = handle.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let tx = jobs.as_ref().ok_or(EngineError::Closed)?;
            tx.send(job).map_err(|_| EngineError::Closed)?;
        }
        handle.waker.wake()?;
        reply_rx.recv().map_err(|_| EngineError::Closed)?
    }

    /// Run `f` on the shard of peer `peer_id`.
    pub fn call<R, F>(&self, peer_id: &str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core<runloop::UdpSink>, Instant) -> Result<R> + Send + 'static,
    {
        let shard = self.shard_of_peer(peer_id)?;
        self.call_on(shard, f)
    }

    /// The shard peer `peer_id` was placed on.
    pub fn shard_of_peer(&self, peer_id: &str) -> Result<ShardId> {
        self.placement()
            .peers
            .get(peer_id)
            .copied()
            .ok_or_else(|| EngineError::UnknownPeer(peer_id.to_string()))
    }

    fn home_of(&self, track_id: &str) -> Result<ShardId> {
        self.placement()
            .homes
            .get(track_id)
            .map(|(s, _)| *s)
            .ok_or_else(|| EngineError::UnknownTrack(track_id.to_string()))
    }

    /// Add a peer on `shard` (`None`: the shard with the fewest peers). The control
    /// plane places peers: it knows rooms, and a room kept on one shard needs no
    /// relaying.
    pub fn add_peer(&self, peer_id: &str, role: Role, shard: Option<ShardId>) -> Result<()> {
        let shard = {
            let mut p = self.placement();
            if p.peers.contains_key(peer_id) {
                return Err(EngineError::PeerExists(peer_id.to_string()));
            }
            let shard = match shard {
                Some(s) if s < self.shards.len() => s,
                Some(s) => return Err(EngineError::BadShard(s)),
                None => {
                    let mut load = vec![0usize; self.shards.len()];
                    for s in p.peers.values() {
                        load[*s] += 1;
                    }
                    (0..load.len()).min_by_key(|s| load[*s]).unwrap_or(0)
                }
            };
            p.peers.insert(peer_id.to_string(), shard);
            shard
        };
        let id = peer_id.to_string();
        let r = self.call_on(shard, move |c, now| c.add_peer(&id, role, now));
        if r.is_err() {
            self.placement().peers.remove(peer_id);
        }
        r
    }

    /// Remove a peer; idempotent.
    pub fn remove_peer(&self, peer_id: &str) -> Result<()> {
        let Ok(shard) = self.shard_of_peer(peer_id) else { return Ok(()) };
        let id = peer_id.to_string();
        let r = self.call_on(shard, move |c, now| {
            c.remove_peer(&id, now);
            Ok(())
        });
        let gone: Vec<String> = {
            let mut p = self.placement();
            p.peers.remove(peer_id);
            let gone = p.homes.iter().filter(|(_, (_, publisher))| publisher == peer_id).map(|(t, _)| t.clone());
            let gone: Vec<String> = gone.collect();
            for t in &gone {
                p.homes.remove(t);
            }
            gone
        };
        // Its tracks went with it; their mirrors go now, not when the home's word
        // arrives, so the next offer to their subscribers already leaves them out.
        self.drop_mirrors(shard, gone);
        r
    }

    /// Remove the mirrors of `tracks` (homed on `home`) from every other shard.
    fn drop_mirrors(&self, home: ShardId, tracks: Vec<String>) {
        if tracks.is_empty() {
            return;
        }
        for shard in (0..self.shards.len()).filter(|s| *s != home) {
            let tracks = tracks.clone();
            let _ = self.call_on(shard, move |c, _| {
                for t in &tracks {
                    // UnknownTrack where the shard had no mirror: nothing to do.
                    let _ = c.unpublish_track(t);
                }
                Ok(())
            });
        }
    }

    /// Publisher: offer in, answer out.
    pub fn accept_offer(&self, peer_id: &str, sdp: &str) -> Result<String> {
        let (id, sdp) = (peer_id.to_string(), sdp.to_string());
        self.call(peer_id, move |c, now| c.accept_offer(&id, &sdp, now))
    }

    /// Subscriber: create an offer.
    pub fn create_offer(&self, peer_id: &str) -> Result<String> {
        let id = peer_id.to_string();
        self.call(peer_id, move |c, now| c.create_offer(&id, now))
    }

    /// Subscriber: an offer that restarts ICE (new credentials); see
    /// `Core::create_ice_restart_offer`.
    pub fn create_ice_restart_offer(&self, peer_id: &str) -> Result<String> {
        let id = peer_id.to_string();
        self.call(peer_id, move |c, now| c.create_ice_restart_offer(&id, now))
    }

    /// Subscriber: apply the answer.
    pub fn accept_answer(&self, peer_id: &str, sdp: &str) -> Result<()> {
        let (id, sdp) = (peer_id.to_string(), sdp.to_string());
        self.call(peer_id, move |c, now| c.accept_answer(&id, &sdp, now))
    }

    /// Add a trickled remote candidate.
    pub fn add_remote_candidate(&self, peer_id: &str, candidate: &str) -> Result<()> {
        let (id, cand) = (peer_id.to_string(), candidate.to_string());
        self.call(peer_id, move |c, now| c.add_remote_candidate(&id, &cand, now))
    }

    /// Our candidates.
    pub fn local_candidates(&self, peer_id: &str) -> Result<Vec<String>> {
        let id = peer_id.to_string();
        self.call(peer_id, move |c, _| c.local_candidates(&id))
    }

    /// Bind a publisher m-line to a track id; the publisher's shard is its home.
    pub fn publish_track(&self, publisher: &str, mid: &str, track_id: &str) -> Result<()> {
        let shard = self.shard_of_peer(publisher)?;
        let (p, m, t) = (publisher.to_string(), mid.to_string(), track_id.to_string());
        self.call_on(shard, move |c, now| c.publish_track(&p, &m, &t, now))?;
        self.placement()
            .homes
            .insert(track_id.to_string(), (shard, publisher.to_string()));
        Ok(())
    }

    /// Forget a track (its mirrors go with it).
    pub fn unpublish_track(&self, track_id: &str) -> Result<()> {
        let home = self.home_of(track_id)?;
        let t = track_id.to_string();
        let r = self.call_on(home, move |c, _| c.unpublish_track(&t));
        self.placement().homes.remove(track_id);
        self.drop_mirrors(home, vec![track_id.to_string()]);
        r
    }

    /// Make sure shard `shard` can forward `track_id`: the home itself, or a
    /// mirror fed by the home.
    fn reach(&self, track_id: &str, shard: ShardId) -> Result<()> {
        let home = self.home_of(track_id)?;
        if home == shard {
            return Ok(());
        }
        let t = track_id.to_string();
        let export = self.call_on(home, move |c, _| c.follow_track(&t, shard))?;
        self.call_on(shard, move |c, now| {
            c.mirror_track(export, now);
            Ok(())
        })
    }

    /// Forward a track to a subscriber.
    pub fn subscribe(&self, subscriber: &str, track_id: &str, stream_id: &str) -> Result<()> {
        let shard = self.shard_of_peer(subscriber)?;
        self.reach(track_id, shard)?;
        let (s, t, st) = (subscriber.to_string(), track_id.to_string(), stream_id.to_string());
        self.call_on(shard, move |c, now| c.subscribe(&s, &t, &st, now))
    }

    /// Single PeerConnection: forward a track on a client-offered m-line.
    pub fn subscribe_on_mid(&self, subscriber: &str, track_id: &str, stream_id: &str, mid: &str) -> Result<()> {
        let shard = self.shard_of_peer(subscriber)?;
        self.reach(track_id, shard)?;
        let (s, t, st, m) = (subscriber.to_string(), track_id.to_string(), stream_id.to_string(), mid.to_string());
        self.call_on(shard, move |c, now| c.subscribe_on_mid(&s, &t, &st, &m, now))
    }

    /// Many subscribes and unsubscribes (`stream_id` None) in one round trip per
    /// shard, in order per subscriber; one result per item. A room's new publisher
    /// binds its track to every subscriber at once, and one call each would hold
    /// the control plane for a round trip per subscriber.
    pub fn bind_many(&self, items: Vec<(String, String, Option<String>)>) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = (0..items.len()).map(|_| Ok(())).collect();
        let mut routed = Vec::new();
        let mut reached: Vec<(String, ShardId)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let shard = match self.shard_of_peer(&item.0) {
                Ok(s) => s,
                Err(e) => {
                    results[i] = Err(e);
                    continue;
                }
            };
            let (_, track, stream) = &item;
            if stream.is_some() && !reached.iter().any(|(t, s)| t == track && *s == shard) {
                if let Err(e) = self.reach(track, shard) {
                    results[i] = Err(e);
                    continue;
                }
                reached.push((track.clone(), shard));
            }
            routed.push((i, shard, item));
        }
        self.scatter(routed, results, |c, (sub, track, stream), now| match stream {
            Some(stream) => c.subscribe(&sub, &track, &stream, now),
            None => c.unsubscribe(&sub, &track),
        })
    }

    /// Many (quality, disabled, fps, priority) choices for subscribers' down tracks,
    /// one round trip per shard; one result per item.
    pub fn set_layers(&self, items: Vec<LayerSettings>) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = (0..items.len()).map(|_| Ok(())).collect();
        let mut routed = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match self.shard_of_peer(&item.0) {
                Ok(shard) => routed.push((i, shard, item)),
                Err(e) => results[i] = Err(e),
            }
        }
        self.scatter(routed, results, |c, (sub, track, quality, disabled, fps, priority), now| {
            c.set_layer(&sub, &track, quality, now)?;
            c.set_fps(&sub, &track, fps)?;
            c.set_priority(&sub, &track, priority)?;
            c.set_disabled(&sub, &track, disabled, now)
        })
    }

    /// Run `run` on each `(index, shard, item)` in one job per shard (items in
    /// order), writing each outcome to `results[index]`.
    fn scatter<T: Send + 'static>(
        &self,
        routed: Vec<(usize, ShardId, T)>,
        mut results: Vec<Result<()>>,
        run: fn(&mut Core<runloop::UdpSink>, T, Instant) -> Result<()>,
    ) -> Vec<Result<()>> {
        let mut per_shard: Vec<Vec<(usize, T)>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for (i, shard, item) in routed {
            per_shard[shard].push((i, item));
        }
        for (shard, batch) in per_shard.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            let (indices, items): (Vec<usize>, Vec<T>) = batch.into_iter().unzip();
            let done = self.call_on(shard, move |c, now| Ok(items.into_iter().map(|t| run(c, t, now)).collect::<Vec<_>>()));
            match done {
                Ok(rs) => indices.into_iter().zip(rs).for_each(|(i, r)| results[i] = r),
                Err(e) => indices.into_iter().for_each(|i| results[i] = Err(e.clone())),
            }
        }
        results
    }

    /// Stop forwarding a track to a subscriber.
    pub fn unsubscribe(&self, subscriber: &str, track_id: &str) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(subscriber, move |c, _| c.unsubscribe(&s, &t))
    }

    /// Mute or unmute a track: at home, and on every shard that mirrors it (their
    /// subscribers wait for a keyframe after an unmute, as the home's do).
    pub fn set_muted(&self, track_id: &str, muted: bool) -> Result<()> {
        let home = self.home_of(track_id)?;
        let t = track_id.to_string();
        self.call_on(home, move |c, now| c.set_muted(&t, muted, now))?;
        for shard in (0..self.shards.len()).filter(|s| *s != home) {
            let t = track_id.to_string();
            // Shards without a mirror say UnknownTrack: nothing to do there.
            let _ = self.call_on(shard, move |c, now| c.set_muted(&t, muted, now));
        }
        Ok(())
    }

    /// Pick a simulcast quality for one subscriber.
    pub fn set_layer(&self, subscriber: &str, track_id: &str, quality: i64) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(subscriber, move |c, now| c.set_layer(&s, &t, quality, now))
    }

    /// Disable or enable one subscriber's forwarding of a track.
    pub fn set_disabled(&self, subscriber: &str, track_id: &str, disabled: bool) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(subscriber, move |c, now| c.set_disabled(&s, &t, disabled, now))
    }

    /// Send on a data channel.
    pub fn send_data(&self, peer_id: &str, reliable: bool, payload: Vec<u8>) -> Result<()> {
        let id = peer_id.to_string();
        self.call(peer_id, move |c, now| c.send_data(&id, reliable, &payload, now))
    }

    /// Counters and gauges, summed over the shards.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>> {
        let mut total: Vec<(&'static str, u64)> = Vec::new();
        for shard in 0..self.shards.len() {
            let part = self.call_on(shard, move |c, _| {
                let mut s = c.stats();
                s.push(("send_errors", c.sink_mut().send_errors));
                s.push(("send_syscalls", c.sink_mut().send_syscalls));
                if let Some(t) = &c.sink_mut().tcp {
                    let k = t.counters;
                    s.push(("tcp_connections", t.connection_count() as u64));
                    s.push(("tcp_accepted", k.accepted));
                    s.push(("tcp_refused", k.refused));
                    s.push(("tcp_frames_in", k.frames_in));
                    s.push(("tcp_frames_out", k.frames_out));
                    s.push(("tcp_frames_dropped", k.frames_dropped));
                }
                Ok(s)
            })?;
            for (name, v) in part {
                match total.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, t)) => *t += v,
                    None => total.push((name, v)),
                }
            }
        }
        total.push(("events_dropped", self.queue.dropped()));
        total.push(("shards", self.shards.len() as u64));
        Ok(total)
    }

    /// Stop the engine threads and close the sockets. Idempotent.
    pub fn close(&self) {
        for h in &self.shards {
            drop(h.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
            let _ = h.waker.wake();
        }
        for h in &self.shards {
            if let Some(t) = h.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

#[doc(hidden)]
pub fn _now() -> Instant {
    Instant::now()
}
