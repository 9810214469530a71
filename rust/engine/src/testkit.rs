//! The one str0m test world: client PeerConnections as a LiveKit client makes
//! them, and an in-memory network that joins them to a [`Core`] on the caller's
//! clock (virtual time in unit tests, real time in `bench/forward.rs`).
//!
//! The unit tests, the fuzz worlds, the loopback tests, the forwarding benchmark and
//! the load generator's clients all start from [`client_config`], so a change to how
//! a client is configured (codecs, RTP mode, the certificate) lands in one place. The
//! worlds that run a core against clients in memory use [`MemNet`] for the datagram
//! choreography (clients' output into the core, the core's timeout, its output back
//! to whichever client holds the destination address).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::core::Core;
use crate::error::{EngineError, Result};
use crate::event::MediaEvent;
use crate::peer::Sink;

thread_local! {
    /// One certificate per thread for every client: generating one costs a key
    /// pair, and a world of hundreds of clients would spend its set-up there.
    static CLIENT_CERT: Option<str0m::crypto::dtls::DtlsCert> =
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate();
}

/// A client PeerConnection's configuration: RTP mode (the client writes and reads
/// RTP packets, as an SFU's peer does), the crypto provider str0m was built with,
/// and the thread's shared DTLS certificate.
pub fn client_config() -> RtcConfig {
    let mut b = Rtc::builder()
        .set_rtp_mode(true)
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()));
    if let Some(cert) = CLIENT_CERT.with(Clone::clone) {
        b = b.set_dtls_cert(cert);
    }
    b
}

/// A client PeerConnection with one UDP host candidate at `addr`.
pub fn client_rtc(addr: SocketAddr, now: Instant) -> Rtc {
    client_rtc_with(client_config(), addr, now)
}

/// `client_rtc` built from `config` (say, `client_config()` with other codecs).
pub fn client_rtc_with(config: RtcConfig, addr: SocketAddr, now: Instant) -> Rtc {
    let mut rtc = config.build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
    rtc
}

/// Drops everything.
pub struct NullSink;

impl Sink for NullSink {
    fn send(&mut self, _dest: SocketAddr, _data: &[u8]) {}
}

/// Keeps everything sent.
#[derive(Default)]
pub struct VecSink(pub Vec<(SocketAddr, Vec<u8>)>);

impl Sink for VecSink {
    fn send(&mut self, dest: SocketAddr, data: &[u8]) {
        self.0.push((dest, data.to_vec()));
    }
}

/// A sink whose datagrams a [`MemNet`] carries to the clients.
pub trait Outbox: Sink {
    /// What was sent since the last call, in order.
    fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)>;
}

impl Outbox for VecSink {
    fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.0)
    }
}

/// A client on the in-memory network: its PeerConnection and the one address it
/// sends from and receives at (a datagram from or to any other address of it is
/// lost: that network is gone).
pub struct MemClient {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    /// RTP packets received: (sequence number, RTP timestamp, payload).
    pub rtp: Vec<(u64, u32, Arc<[u8]>)>,
}

impl MemClient {
    pub fn new(addr: SocketAddr, now: Instant) -> Self {
        Self::with_config(client_config(), addr, now)
    }

    /// A client built from `config` (say, `client_config()` with other codecs).
    pub fn with_config(config: RtcConfig, addr: SocketAddr, now: Instant) -> Self {
        Self { rtc: client_rtc_with(config, addr, now), addr, rtp: Vec::new() }
    }

    /// The client's network changed: only `addr` works from now on.
    pub fn move_to(&mut self, addr: SocketAddr) {
        self.addr = addr;
        self.rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
    }

    /// The client's current ICE username fragment.
    pub fn ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }

    /// Run the client's timers to `now`; what it sends from its address goes to
    /// `out` (unless `online` is false).
    fn tick(&mut self, now: Instant, online: bool, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            panic!("client timeout: {e}");
        }
        self.drain(online, out);
    }

    fn drain(&mut self, online: bool, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Transmit(t)) if online && t.source == self.addr => {
                    out.push((t.source, t.contents.to_vec()));
                }
                Ok(Output::Transmit(_)) => {}
                Ok(Output::Event(Event::RtpPacket(p))) => self.rtp.push((*p.seq_no, p.header.timestamp, p.payload)),
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("client poll_output: {e}"),
            }
        }
    }

    /// A datagram from `source` reached this client.
    fn receive(&mut self, source: SocketAddr, data: &[u8], now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination: self.addr, contents });
        if let Err(e) = self.rtc.handle_input(input) {
            panic!("client receive: {e}");
        }
        self.drain(true, out);
    }
}

/// A core and its clients joined by memory: each [`step`](Self::step) moves the
/// clients' datagrams into the core, gives the core its timeout, and carries the
/// core's datagrams to the clients at their destination addresses.
pub struct MemNet<S: Outbox> {
    pub core: Core<S>,
    /// The address the core sends from.
    pub server: SocketAddr,
    pub clients: Vec<MemClient>,
    /// Every event the core emitted, in order.
    pub events: Vec<MediaEvent>,
    /// No datagram crosses either way (every client froze or lost its network).
    pub offline: bool,
}

impl<S: Outbox> MemNet<S> {
    pub fn new(core: Core<S>, server: SocketAddr) -> Self {
        Self { core, server, clients: Vec::new(), events: Vec::new(), offline: false }
    }

    /// Add a client at `addr`; its index in `clients`.
    pub fn add_client(&mut self, addr: SocketAddr, now: Instant) -> usize {
        self.add_client_with(client_config(), addr, now)
    }

    /// Add a client built from `config` at `addr`; its index in `clients`.
    pub fn add_client_with(&mut self, config: RtcConfig, addr: SocketAddr, now: Instant) -> usize {
        self.clients.push(MemClient::with_config(config, addr, now));
        self.clients.len() - 1
    }

    /// One round of the network at `now`.
    pub fn step(&mut self, now: Instant) {
        let online = !self.offline;
        let mut up = Vec::new();
        for c in &mut self.clients {
            c.tick(now, online, &mut up);
        }
        for (source, d) in up.drain(..) {
            self.core.handle_datagram(source, &d, now);
        }
        self.core.handle_timeout(now);
        for (dest, d) in self.core.sink_mut().take_sent() {
            if !online {
                continue;
            }
            if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dest) {
                c.receive(self.server, &d, now, &mut up);
            }
        }
        // What the clients answered goes in with the next round, as over a wire.
        for (source, d) in up {
            self.core.handle_datagram(source, &d, now);
        }
        self.events.append(&mut self.core.events);
    }

    /// The server offers to `peer_id` (a subscriber PeerConnection); the client at
    /// `client` answers.
    pub fn server_offer(&mut self, peer_id: &str, client: usize, now: Instant) -> Result<()> {
        let offer = self.core.create_offer(peer_id, now)?;
        let offer = SdpOffer::from_sdp_string(&offer).map_err(sdp_err)?;
        let answer = self.clients[client].rtc.sdp_api().accept_offer(offer).map_err(sdp_err)?;
        self.core.accept_answer(peer_id, &answer.to_sdp_string(), now)
    }

    /// The client at `client` offers what its SDP API has pending (a publisher
    /// PeerConnection); the core answers for `peer_id`.
    pub fn client_offer(
        &mut self,
        peer_id: &str,
        client: usize,
        (offer, pending): (SdpOffer, SdpPendingOffer),
        now: Instant,
    ) -> Result<()> {
        let answer = self.core.accept_offer(peer_id, &offer.to_sdp_string(), now)?;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(sdp_err)?;
        self.clients[client].rtc.sdp_api().accept_answer(pending, answer).map_err(sdp_err)
    }

    /// Peers the core reported connected so far.
    pub fn connected(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, MediaEvent::PeerConnected { .. })).count()
    }

    /// Peers the core closed so far: (peer id, reason).
    pub fn closed(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::PeerClosed { peer_id, reason } => Some((peer_id.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }
}

fn sdp_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Rtc(e.to_string())
}
