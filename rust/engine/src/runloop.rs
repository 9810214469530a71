//! The engine thread: one UDP socket (mio), a command channel with a waker, and
//! the sans-IO `Core` in between.
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::batch::{Batch, MAX_BATCH};
use crate::core::Core;
use crate::event::EventQueue;
use crate::peer::Sink;
use crate::pump::{self, RECV_BUFFER_BYTES};

pub(crate) const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);

/// A job run on the engine thread with exclusive access to the core.
pub(crate) type Job = Box<dyn FnOnce(&mut Core<UdpSink>, Instant) + Send>;

/// Sends on the shared socket, batched per run-loop turn (see `batch`); a full
/// send buffer drops datagrams.
pub struct UdpSink {
    pub(crate) socket: UdpSocket,
    pub(crate) batch: Batch,
    pub(crate) send_errors: u64,
    pub(crate) send_syscalls: u64,
}

impl UdpSink {
    pub(crate) fn new(socket: UdpSocket) -> Self {
        Self { socket, batch: Batch::default(), send_errors: 0, send_syscalls: 0 }
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
        self.batch.push(dest, data);
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }
}

/// The engine thread. `inbound` is the shared socket's receiving handle (a
/// duplicate of the sink's fd), so reading and the core's sending do not borrow
/// each other.
pub(crate) fn run(
    mut poll: Poll,
    mut core: Core<UdpSink>,
    mut inbound: UdpSocket,
    jobs: Receiver<Job>,
    queue: Arc<EventQueue>,
) {
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    if let Err(e) = poll
        .registry()
        .register(&mut inbound, SOCKET, Interest::READABLE)
    {
        tracing::error!("cannot register UDP socket: {e}");
        return;
    }
    // False while the socket may still hold datagrams: readiness is edge-triggered,
    // so leftovers raise no new event and the next wait must not sleep.
    let mut drained = true;
    loop {
        let now = Instant::now();
        let wait = if drained { core.next_timeout(now).saturating_duration_since(now) } else { Duration::ZERO };
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
        // A bounded burst of reads, then forwarded RTP, timers and sends; if the
        // socket still holds datagrams, round again without sleeping.
        drained = pump::turn(&mut core, &mut inbound, &mut buf, &mut Instant::now).drained;
        core.sink_mut().flush();
        queue.push_all(&mut core.events);
    }
}
