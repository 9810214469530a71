//! Synthetic LiveKit participants' media, for `pysfu loadtest`.
//!
//! The Python side speaks the signaling protocol; this crate is each simulated
//! participant's PeerConnection. One thread drives every peer: a str0m client
//! (full ICE, DTLS, SRTP, RTP mode) on its own UDP socket, because a server's
//! single media port cannot be demultiplexed by 5-tuple if peers shared one.
//! Publishers send synthetic RTP ([`synth`]); subscribers read the trailer at
//! the end of every payload to count loss and forwarding latency ([`measure`]).
//!
//! The handle mirrors `pysfu_engine::Engine`: commands are closures run on the
//! thread, the caller blocks until done.
pub mod client;
pub mod measure;
mod runloop;
pub mod synth;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Interest, Token};

pub use pysfu_engine::{EngineError, Result};

use crate::client::ClientPeer;
use crate::measure::Totals;
use crate::runloop::{Job, State};
use crate::synth::Kind;

const JOB_QUEUE_DEPTH: usize = 1024;

/// A track for [`LoadGen::publisher_offer`].
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub cid: String,
    pub kind: Kind,
    pub kbps: u32,
}

/// Handle to the generator thread. Dropping it (or `close`) stops the thread.
pub struct LoadGen {
    jobs: Mutex<Option<SyncSender<Job>>>,
    waker: Arc<mio::Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
    local_ip: IpAddr,
    epoch: Instant,
}

impl LoadGen {
    pub fn start(local_ip: IpAddr) -> Result<Self> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), runloop::WAKER)?);
        let registry = poll.registry().try_clone()?;
        let epoch = Instant::now();
        let state = State {
            peers: HashMap::new(),
            totals: Totals::new(epoch),
            registry,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            next_peer: 0,
            next_track: 0,
        };
        let (tx, rx) = sync_channel(JOB_QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("pysfu-loadgen".into())
            .spawn(move || runloop::run(poll, state, rx))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            waker,
            thread: Mutex::new(Some(thread)),
            local_ip,
            epoch,
        })
    }

    /// ns on the generator's clock (the base of every `*_ns` figure).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut State, Instant) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = sync_channel(1);
        let job: Job = Box::new(move |state, now| {
            let _ = reply.send(f(state, now));
        });
        {
            let jobs = self.jobs.lock().map_err(|_| EngineError::Closed)?;
            jobs.as_ref().ok_or(EngineError::Closed)?.send(job).map_err(|_| EngineError::Closed)?;
        }
        self.waker.wake()?;
        answer.recv().map_err(|_| EngineError::Closed)?
    }

    fn with_peer<T: Send + 'static>(
        &self,
        peer: u32,
        f: impl FnOnce(&mut ClientPeer, &mut Totals, Instant) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.call(move |state, now| {
            let p = state
                .peers
                .get_mut(&peer)
                .ok_or_else(|| EngineError::UnknownPeer(peer.to_string()))?;
            f(p, &mut state.totals, now)
        })
    }

    /// A new peer with its own socket.
    pub fn add_peer(&self) -> Result<u32> {
        let ip = self.local_ip;
        self.call(move |state, now| {
            let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
            std_socket.set_nonblocking(true)?;
            let mut socket = mio::net::UdpSocket::from_std(std_socket);
            let n = state.next_peer;
            state.registry.register(&mut socket, Token(n as usize), Interest::READABLE)?;
            let peer = ClientPeer::new(socket, state.crypto.clone(), now)?;
            state.next_peer += 1;
            state.peers.insert(n, peer);
            Ok(n)
        })
    }

    pub fn publisher_offer(&self, peer: u32, tracks: Vec<TrackSpec>) -> Result<String> {
        self.call(move |state, now| {
            let numbered: Vec<_> = tracks
                .into_iter()
                .map(|t| {
                    state.next_track += 1;
                    (t.cid, t.kind, t.kbps, state.next_track)
                })
                .collect();
            let p = state
                .peers
                .get_mut(&peer)
                .ok_or_else(|| EngineError::UnknownPeer(peer.to_string()))?;
            p.publisher_offer(&numbered, now)
        })
    }

    pub fn accept_answer(&self, peer: u32, sdp: String) -> Result<()> {
        self.with_peer(peer, move |p, totals, now| p.accept_answer(&sdp, now, totals))
    }

    pub fn accept_offer(&self, peer: u32, sdp: String) -> Result<String> {
        self.with_peer(peer, move |p, totals, now| p.accept_offer(&sdp, now, totals))
    }

    pub fn add_remote_candidate(&self, peer: u32, line: String) -> Result<()> {
        self.with_peer(peer, move |p, totals, now| p.add_remote_candidate(&line, now, totals))
    }

    /// Close a peer and its socket. Unknown peers are fine (idempotent).
    pub fn remove_peer(&self, peer: u32) -> Result<()> {
        self.call(move |state, _| {
            if let Some(mut p) = state.peers.remove(&peer) {
                p.disconnect();
                let _ = state.registry.deregister(&mut p.socket);
            }
            Ok(())
        })
    }

    /// connected_ns, first_media_ns (0: not yet), packets_received, packets_sent.
    pub fn peer_info(&self, peer: u32) -> Result<Vec<(&'static str, u64)>> {
        let epoch = self.epoch;
        self.with_peer(peer, move |p, _, _| {
            let ns = |t: Option<Instant>| t.map_or(0, |t| t.saturating_duration_since(epoch).as_nanos() as u64);
            Ok(vec![
                ("connected_ns", ns(p.connected_at)),
                ("first_media_ns", ns(p.first_media_at)),
                ("packets_received", p.packets_received),
                ("packets_sent", p.packets_sent),
            ])
        })
    }

    /// Totals of the current measurement window.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>> {
        self.call(|state, _| {
            let t = &state.totals;
            let expected: u64 = state.peers.values().map(ClientPeer::expected).sum();
            let reordered: u64 = state.peers.values().map(ClientPeer::reordered).sum();
            let connected = state.peers.values().filter(|p| p.connected_at.is_some() && p.alive).count();
            Ok(vec![
                ("packets_sent", t.packets_sent),
                ("bytes_sent", t.bytes_sent),
                ("packets_received", t.packets_received),
                ("bytes_received", t.bytes_received),
                ("packets_expected", expected),
                ("packets_reordered", reordered),
                ("latency_samples", t.latency.count()),
                ("latency_p50_us", t.latency.quantile_us(0.50)),
                ("latency_p95_us", t.latency.quantile_us(0.95)),
                ("latency_p99_us", t.latency.quantile_us(0.99)),
                ("latency_max_us", t.latency.max_us()),
                ("peers", state.peers.len() as u64),
                ("peers_connected", connected as u64),
            ])
        })
    }

    pub fn reset_stats(&self) -> Result<()> {
        self.call(|state, _| {
            state.totals.reset();
            for p in state.peers.values_mut() {
                p.clear_loss();
            }
            Ok(())
        })
    }

    /// Stop the thread; idempotent.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let _ = self.waker.wake();
        if let Ok(mut t) = self.thread.lock() {
            if let Some(t) = t.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.close();
    }
}
