//! The engine thread: one UDP socket (mio), a command channel with a waker, and
//! the sans-IO `Core` in between.
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::batch::{Batch, MAX_BATCH};
use crate::core::Core;
use crate::event::EventQueue;
use crate::peer::Sink;

pub(crate) const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);

/// Datagrams read per wake-up before commands and timers get a turn.
const MAX_READS_PER_TURN: usize = 64;

/// Largest datagram we accept; WebRTC stays far below.
const RECV_BUFFER_BYTES: usize = 2048;

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

pub(crate) fn run(mut poll: Poll, mut core: Core<UdpSink>, jobs: Receiver<Job>, queue: Arc<EventQueue>) {
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    if let Err(e) = poll
        .registry()
        .register(&mut core.sink_mut().socket, SOCKET, Interest::READABLE)
    {
        tracing::error!("cannot register UDP socket: {e}");
        return;
    }
    loop {
        let now = Instant::now();
        let deadline = core.next_timeout(now);
        let wait = deadline.saturating_duration_since(now);
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
        for _ in 0..MAX_READS_PER_TURN {
            match core.sink_mut().socket.recv_from(&mut buf) {
                Ok((n, source)) => core.handle_datagram(source, &buf[..n], Instant::now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors (ECONNREFUSED) surface here on Linux: skip them.
                Err(_) => continue,
            }
        }
        let now = Instant::now();
        core.flush(now);
        if core.next_timeout(now) <= now {
            core.handle_timeout(now);
        }
        core.sink_mut().flush();
        queue.push_all(&mut core.events);
    }
}
