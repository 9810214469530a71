//! The engine thread: one UDP socket (mio), the ICE-TCP listener and its
//! connections (`net::tcp`), a command channel with a waker, and the sans-IO `Core`
//! in between.
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::batch::{Batch, MAX_BATCH};
use crate::core::Core;
use crate::event::EventQueue;
use crate::net::tcp::TcpPlane;
use crate::net::udp::PktInfoSocket;
use crate::peer::Sink;
use crate::pump::{self, RECV_BUFFER_BYTES};

pub(crate) const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
pub(crate) const TCP_LISTENER: Token = Token(2);
/// ICE-TCP connections take tokens from here up.
pub(crate) const FIRST_TCP_CONNECTION: usize = 3;

/// A job run on the engine thread with exclusive access to the core.
pub(crate) type Job = Box<dyn FnOnce(&mut Core<UdpSink>, Instant) + Send>;

/// Sends on the shared socket, batched per run-loop turn (see `batch`); a full
/// send buffer drops datagrams.
pub struct UdpSink {
    pub(crate) socket: UdpSocket,
    pub(crate) batch: Batch,
    pub(crate) send_errors: u64,
    pub(crate) send_syscalls: u64,
    /// The socket is IPv6 (dual-stack when bound to `::`): IPv4 destinations go out
    /// as IPv4-mapped addresses.
    pub(crate) v6: bool,
    /// ICE over TCP, when a TCP port is configured (on shard 0 only).
    pub(crate) tcp: Option<TcpPlane>,
    /// Shards without the TCP plane: frames for shard 0's connections.
    pub(crate) stream_out: Option<Vec<(SocketAddr, Vec<u8>)>>,
}

impl UdpSink {
    pub(crate) fn new(socket: UdpSocket) -> Self {
        let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        Self { socket, batch: Batch::default(), send_errors: 0, send_syscalls: 0, v6, tcp: None, stream_out: None }
    }

    /// Send what the turn queued.
    pub(crate) fn flush(&mut self) {
        let sent = self.batch.send(self.socket.as_raw_fd());
        self.send_errors += sent.dropped;
        self.send_syscalls += sent.syscalls;
    }
}

impl Sink for UdpSink {
    fn send(&mut self, dest: SocketAddr, data: &[u8]) {
        let dest = match dest.ip() {
            IpAddr::V4(v4) if self.v6 => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dest.port()),
            _ => dest,
        };
        self.batch.push(dest, data);
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    fn send_stream(&mut self, dest: SocketAddr, data: &[u8]) {
        if let Some(tcp) = &mut self.tcp {
            tcp.send(dest, data);
        } else if let Some(out) = &mut self.stream_out {
            out.push((dest, data.to_vec()));
        }
    }

    fn stream_frames(&mut self) -> Option<Vec<(SocketAddr, Vec<u8>)>> {
        self.stream_out.as_mut().filter(|o| !o.is_empty()).map(std::mem::take)
    }
}

/// The engine thread. `inbound` is the shared socket's receiving handle (a
/// duplicate of the sink's fd), so reading and the core's sending do not borrow
/// each other.
pub(crate) fn run(
    mut poll: Poll,
    mut core: Core<UdpSink>,
    inbound: UdpSocket,
    jobs: Receiver<Job>,
    queue: Arc<EventQueue>,
) {
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut inbound = PktInfoSocket(inbound);
    if let Err(e) = poll
        .registry()
        .register(&mut inbound.0, SOCKET, Interest::READABLE)
    {
        tracing::error!("cannot register UDP socket: {e}");
        return;
    }
    if let Some(tcp) = &mut core.sink_mut().tcp {
        if let Err(e) = tcp.register(poll.registry(), TCP_LISTENER) {
            tracing::error!("cannot register TCP listener: {e}");
            return;
        }
    }
    let mut frames = Vec::new();
    // False while the socket may still hold datagrams: readiness is edge-triggered,
    // so leftovers raise no new event and the next wait must not sleep.
    let mut drained = true;
    loop {
        let now = Instant::now();
        let tcp_backlog = core.sink_mut().tcp.as_ref().is_some_and(|t| t.has_backlog());
        let wait = if drained && !tcp_backlog {
            core.next_timeout(now).saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!("poll failed: {e}");
                return;
            }
        }
        // Commands first: they are rare and the caller is blocked on them.
        loop {
            match jobs.try_recv() {
                Ok(job) => {
                    let now = Instant::now();
                    job(&mut core, now);
                    core.flush(now);
                }
                Err(TryRecvError::Empty) => break,
                // The handle is gone: shut down.
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // Other shards' messages: handed-over datagrams, relayed media, requests.
        if let Some(link) = core.shard_link() {
            let msgs = link.fabric.inbox(link.id).take();
            for msg in msgs {
                let now = Instant::now();
                core.handle_cross(msg, now);
                if core.flush_due(now) {
                    core.flush(now);
                }
            }
        }
        // ICE-TCP: accept, read (a bounded budget per connection), write what waits.
        if let Some(tcp) = &mut core.sink_mut().tcp {
            let now = Instant::now();
            let registry = poll.registry();
            for ev in events.iter() {
                if ev.token() == TCP_LISTENER {
                    tcp.accept(registry, now);
                } else if tcp.owns(ev.token()) {
                    let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    tcp.ready(registry, ev.token(), readable, ev.is_writable(), &mut frames, now);
                }
            }
            tcp.read_backlog(registry, &mut frames, now);
        }
        for f in frames.drain(..) {
            core.handle_tcp_frame(f.remote, f.local, &f.data, Instant::now());
        }
        // A bounded burst of reads, then forwarded RTP, timers and sends; if the
        // socket still holds datagrams, round again without sleeping.
        drained = pump::turn(&mut core, &mut inbound, &mut buf, &mut Instant::now).drained;
        core.sink_mut().flush();
        if let Some(tcp) = &mut core.sink_mut().tcp {
            tcp.flush(poll.registry(), Instant::now());
        }
        queue.push_all(&mut core.events);
        core.deliver_outbox();
    }
}
