//! pysfu's media data plane. Knows peers and tracks, never rooms.
//!
//! # Run loop
//! One engine thread owns a UDP socket shared by all peers and a [`core::Core`]:
//! str0m `Rtc` instances in RTP mode with ICE-lite, one per PeerConnection.
//! Datagrams are routed to peers by remote address; a STUN binding request whose
//! USERNAME names a peer's local ufrag teaches (or re-teaches) an address.
//! Every input to an `Rtc` is followed by a full drain of its output, as str0m
//! requires. Incoming RTP is fanned out by the [`router`]: the payload is shared
//! (`Arc<[u8]>`), each subscriber rewrites SSRC/seq/timestamp and pays only its
//! own SRTP and send.
//!
//! # The door
//! [`Engine`] is the handle: commands run as closures on the engine thread and
//! block the caller until done; events go back through an [`EventQueue`] whose
//! wake fd turns readable when events are pending.
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
//! bandwidth estimate, multi-threaded sharding.
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
mod resume_tests;
#[cfg(test)]
mod single_pc_tests;
pub mod rewrite;
pub mod router;
mod runloop;
pub mod sdp;
mod socket_buffers;

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::core::Core;
pub use crate::error::{EngineError, Result};
pub use crate::event::{EventQueue, MediaEvent};
pub use crate::peer::{Role, Sink};

/// Version of the engine crate, reported by the Python side.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Engine-internal peer index (the control plane uses string ids).
pub type PeerKey = u32;

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
    /// choice. Off by default: str0m then paces every subscriber's media to its
    /// estimate, which costs CPU per packet (docs/performance.md).
    pub bandwidth_estimation: bool,
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
            bandwidth_estimation: false,
        }
    }
}

/// Handle to the engine thread. Dropping it (or `close`) stops the thread.
pub struct Engine {
    jobs: Mutex<Option<SyncSender<runloop::Job>>>,
    waker: Arc<mio::Waker>,
    queue: Arc<EventQueue>,
    thread: Mutex<Option<JoinHandle<()>>>,
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

impl Engine {
    /// Bind the socket and start the engine thread.
    pub fn start(config: EngineConfig) -> Result<Self> {
        let std_socket = StdUdpSocket::bind(SocketAddr::new(config.bind_ip, config.udp_port))?;
        std_socket.set_nonblocking(true)?;
        socket_buffers::enlarge(&std_socket);
        let bound = std_socket.local_addr()?;
        if bound.ip().is_unspecified() {
            use std::os::fd::AsRawFd;
            net::udp::enable_pktinfo(std_socket.as_raw_fd(), bound.is_ipv6())?;
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
        let tcp = match config.tcp_port {
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
        let inbound = mio::net::UdpSocket::from_std(std_socket.try_clone()?);
        let socket = mio::net::UdpSocket::from_std(std_socket);
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), runloop::WAKER)?);
        let queue = Arc::new(EventQueue::new()?);
        let mut sink = runloop::UdpSink::new(socket);
        sink.tcp = tcp;
        let mut core = Core::new(sink, local_addr);
        core.set_addresses(udp_addrs.clone(), tcp_addrs.clone());
        core.set_ice_disconnected_grace(config.ice_disconnected_grace);
        core.set_bandwidth_estimation(config.bandwidth_estimation);
        let (tx, rx) = sync_channel(JOB_QUEUE_DEPTH);
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("pysfu-media".into())
            .spawn(move || runloop::run(poll, core, inbound, rx, q))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            waker,
            queue,
            thread: Mutex::new(Some(thread)),
            local_addr,
            udp_addrs,
            tcp_addrs,
        })
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

    /// Run `f` on the engine thread and wait for its result.
    pub fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Core<runloop::UdpSink>, Instant) -> Result<R> + Send + 'static,
    {
        let (reply_tx, reply_rx) = sync_channel(1);
        let job: runloop::Job = Box::new(move |core, now| {
            let _ = reply_tx.send(f(core, now));
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let tx = jobs.as_ref().ok_or(EngineError::Closed)?;
            tx.send(job).map_err(|_| EngineError::Closed)?;
        }
        self.waker.wake()?;
        reply_rx.recv().map_err(|_| EngineError::Closed)?
    }

    /// Add a peer.
    pub fn add_peer(&self, peer_id: &str, role: Role) -> Result<()> {
        let id = peer_id.to_string();
        self.call(move |c, now| c.add_peer(&id, role, now))
    }

    /// Remove a peer; idempotent.
    pub fn remove_peer(&self, peer_id: &str) -> Result<()> {
        let id = peer_id.to_string();
        self.call(move |c, now| {
            c.remove_peer(&id, now);
            Ok(())
        })
    }

    /// Publisher: offer in, answer out.
    pub fn accept_offer(&self, peer_id: &str, sdp: &str) -> Result<String> {
        let (id, sdp) = (peer_id.to_string(), sdp.to_string());
        self.call(move |c, now| c.accept_offer(&id, &sdp, now))
    }

    /// Subscriber: create an offer.
    pub fn create_offer(&self, peer_id: &str) -> Result<String> {
        let id = peer_id.to_string();
        self.call(move |c, now| c.create_offer(&id, now))
    }

    /// Subscriber: an offer that restarts ICE (new credentials); see
    /// `Core::create_ice_restart_offer`.
    pub fn create_ice_restart_offer(&self, peer_id: &str) -> Result<String> {
        let id = peer_id.to_string();
        self.call(move |c, now| c.create_ice_restart_offer(&id, now))
    }

    /// Subscriber: apply the answer.
    pub fn accept_answer(&self, peer_id: &str, sdp: &str) -> Result<()> {
        let (id, sdp) = (peer_id.to_string(), sdp.to_string());
        self.call(move |c, now| c.accept_answer(&id, &sdp, now))
    }

    /// Add a trickled remote candidate.
    pub fn add_remote_candidate(&self, peer_id: &str, candidate: &str) -> Result<()> {
        let (id, cand) = (peer_id.to_string(), candidate.to_string());
        self.call(move |c, now| c.add_remote_candidate(&id, &cand, now))
    }

    /// Our candidates.
    pub fn local_candidates(&self, peer_id: &str) -> Result<Vec<String>> {
        let id = peer_id.to_string();
        self.call(move |c, _| c.local_candidates(&id))
    }

    /// Bind a publisher m-line to a track id.
    pub fn publish_track(&self, publisher: &str, mid: &str, track_id: &str) -> Result<()> {
        let (p, m, t) = (publisher.to_string(), mid.to_string(), track_id.to_string());
        self.call(move |c, now| c.publish_track(&p, &m, &t, now))
    }

    /// Forget a track.
    pub fn unpublish_track(&self, track_id: &str) -> Result<()> {
        let t = track_id.to_string();
        self.call(move |c, _| c.unpublish_track(&t))
    }

    /// Forward a track to a subscriber.
    pub fn subscribe(&self, subscriber: &str, track_id: &str, stream_id: &str) -> Result<()> {
        let (s, t, st) = (subscriber.to_string(), track_id.to_string(), stream_id.to_string());
        self.call(move |c, now| c.subscribe(&s, &t, &st, now))
    }

    /// Single PeerConnection: forward a track on a client-offered m-line.
    pub fn subscribe_on_mid(&self, subscriber: &str, track_id: &str, stream_id: &str, mid: &str) -> Result<()> {
        let (s, t, st, m) = (subscriber.to_string(), track_id.to_string(), stream_id.to_string(), mid.to_string());
        self.call(move |c, now| c.subscribe_on_mid(&s, &t, &st, &m, now))
    }

    /// Stop forwarding a track to a subscriber.
    pub fn unsubscribe(&self, subscriber: &str, track_id: &str) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(move |c, _| c.unsubscribe(&s, &t))
    }

    /// Mute or unmute a track.
    pub fn set_muted(&self, track_id: &str, muted: bool) -> Result<()> {
        let t = track_id.to_string();
        self.call(move |c, now| c.set_muted(&t, muted, now))
    }

    /// Pick a simulcast quality for one subscriber.
    pub fn set_layer(&self, subscriber: &str, track_id: &str, quality: i64) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(move |c, now| c.set_layer(&s, &t, quality, now))
    }

    /// Disable or enable one subscriber's forwarding of a track.
    pub fn set_disabled(&self, subscriber: &str, track_id: &str, disabled: bool) -> Result<()> {
        let (s, t) = (subscriber.to_string(), track_id.to_string());
        self.call(move |c, now| c.set_disabled(&s, &t, disabled, now))
    }

    /// Send on a data channel.
    pub fn send_data(&self, peer_id: &str, reliable: bool, payload: Vec<u8>) -> Result<()> {
        let id = peer_id.to_string();
        self.call(move |c, now| c.send_data(&id, reliable, &payload, now))
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>> {
        let dropped = self.queue.dropped();
        self.call(move |c, _| {
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
            s.push(("events_dropped", dropped));
            Ok(s)
        })
    }

    /// Stop the engine thread and close the socket. Idempotent.
    pub fn close(&self) {
        let tx = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
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
