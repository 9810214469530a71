//! One turn of the run loop, apart from the wait: a bounded burst of reads, then
//! forwarded RTP and due timers. Sans-IO over [`Inbound`], so the fuzz harness
//! drives the same code the engine thread runs.
//!
//! # Why bursts, and why "drained" matters
//! mio's readiness is edge-triggered: a socket that still holds datagrams when we
//! stop reading raises no new event. So a turn that stops at the read cap reports
//! `drained == false`, and the run loop polls again with a zero timeout instead of
//! sleeping until a timer. The cap is what keeps a flood fair: after every
//! `MAX_READS_PER_TURN` datagrams the forwarded packets go out, timers run, and
//! commands get their turn, and then reading continues.
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::core::Core;
use crate::peer::Sink;

/// Datagrams read per turn before forwarding, timers and commands get a turn.
pub const MAX_READS_PER_TURN: usize = 64;

/// Largest datagram we accept; WebRTC stays far below.
pub const RECV_BUFFER_BYTES: usize = 2048;

/// Where a turn reads datagrams: the engine's UDP socket, or a test queue.
pub trait Inbound {
    /// One datagram into `buf`, as `recv_from`: `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;

    /// `recv`, with the local address the datagram was sent to when known (a socket
    /// bound to a wildcard address serves several host candidates).
    fn recv_to(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        self.recv(buf).map(|(n, source)| (n, source, None))
    }
}

impl Inbound for mio::net::UdpSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }
}

/// What one turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Datagrams (and receive errors) taken off the socket.
    pub reads: usize,
    /// The socket said `WouldBlock`: nothing is left, sleeping is safe.
    pub drained: bool,
    /// Peer timers were due and ran.
    pub timers_ran: bool,
}

/// Read up to `MAX_READS_PER_TURN` datagrams into `core`, then flush forwarded RTP
/// and run due timers. `clock` stamps each datagram (str0m's receive times feed
/// congestion control, so a burst is not stamped as one instant).
pub fn turn<S: Sink>(
    core: &mut Core<S>,
    inbound: &mut impl Inbound,
    buf: &mut [u8],
    clock: &mut impl FnMut() -> Instant,
) -> Turn {
    let mut reads = 0;
    let mut drained = false;
    while reads < MAX_READS_PER_TURN {
        match inbound.recv_to(buf) {
            Ok((n, source, dest)) => {
                reads += 1;
                let now = clock();
                core.handle_datagram_to(source, dest, &buf[..n], now);
                if core.flush_due(now) {
                    core.flush(now);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                drained = true;
                break;
            }
            // ICMP errors (ECONNREFUSED) surface here on Linux: skip them, but
            // count them against the cap so an error storm cannot starve timers.
            Err(_) => reads += 1,
        }
    }
    let now = clock();
    core.flush(now);
    let timers_ran = core.next_timeout(now) <= now;
    if timers_ran {
        core.handle_timeout(now);
    }
    Turn {
        reads,
        drained,
        timers_ran,
    }
}
