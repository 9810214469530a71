//! ICE over TCP: passive host candidates on one listening port, RFC 4571 framing
//! (each STUN/DTLS/RTP packet prefixed by its 16-bit length).
//!
//! # Bounds
//! - At most `MAX_CONNECTIONS` connections; more are closed on accept.
//! - A connection's receive buffer holds at most one frame (64 KiB + 2); a turn
//!   reads at most `READ_BUDGET` bytes from one connection, then others get theirs
//!   (a connection with more waiting is listed in `backlog` and read next turn).
//! - A connection's send buffer holds at most `MAX_SEND_BUFFER` bytes; frames beyond
//!   are dropped (counted), as a full UDP send buffer drops datagrams: a client that
//!   does not read only loses its own media and never blocks the engine thread.
//! - A connection that delivered no frame for `IDLE_TIMEOUT` is closed (ICE consent
//!   checks arrive every few seconds on a live one).
use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::udp::canonical;

pub const MAX_CONNECTIONS: usize = 1024;
pub const READ_BUDGET: usize = 64 * 1024;
pub const MAX_SEND_BUFFER: usize = 256 * 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_FRAME: usize = u16::MAX as usize;

/// Splits an RFC 4571 byte stream into frames. Pure, so the fuzz harness and tests
/// drive it without sockets.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Bytes of a partial frame held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Append received bytes and hand every complete frame to `frame`. Empty frames
    /// are skipped. Never holds more than one partial frame.
    pub fn push(&mut self, mut data: &[u8], frame: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            // Fast path: whole frames straight from `data` without copying.
            if self.buf.is_empty() {
                if let Some(len) = data.get(..2).map(|h| u16::from_be_bytes([h[0], h[1]]) as usize) {
                    if data.len() >= 2 + len {
                        if len > 0 {
                            frame(&data[2..2 + len]);
                        }
                        data = &data[2 + len..];
                        continue;
                    }
                }
            }
            let want = if self.buf.len() < 2 {
                2 - self.buf.len()
            } else {
                2 + u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize - self.buf.len()
            };
            let take = want.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= 2 {
                let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() == 2 + len {
                    if len > 0 {
                        frame(&self.buf[2..]);
                    }
                    self.buf.clear();
                }
            }
        }
        debug_assert!(self.buf.len() <= 2 + MAX_FRAME);
    }
}

/// Frame `data` for the wire: 16-bit length then the packet. None when too long.
pub fn frame(data: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok()?;
    let mut out = Vec::with_capacity(2 + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Some(out)
}

struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    framer: Framer,
    out: Vec<u8>,
    last_rx: Instant,
}

/// A packet received over TCP: from `remote`, on the local `local` address.
#[derive(Debug)]
pub struct Frame {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub data: Vec<u8>,
}

/// Counters for `stats()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpCounters {
    pub accepted: u64,
    pub refused: u64,
    pub closed: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
}

/// The listener and its connections, keyed by mio token and by remote address.
pub struct TcpPlane {
    listener: TcpListener,
    first_token: usize,
    next_token: usize,
    conns: HashMap<Token, Conn>,
    by_remote: HashMap<SocketAddr, Token>,
    /// Connections with bytes left to read (their budget ran out).
    backlog: HashSet<Token>,
    /// Connections with bytes left to send.
    pending_out: HashSet<Token>,
    swept_at: Option<Instant>,
    pub counters: TcpCounters,
}

impl TcpPlane {
    /// Take over a bound listener; connection tokens start at `first_token`.
    pub fn new(listener: std::net::TcpListener, first_token: usize) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: TcpListener::from_std(listener),
            first_token,
            next_token: first_token,
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            backlog: HashSet::new(),
            pending_out: HashSet::new(),
            swept_at: None,
            counters: TcpCounters::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    /// Whether `token` is one of our connections.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token
    }

    /// Connections whose reads were cut short: the run loop must not sleep.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Accept every waiting connection.
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, remote)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        self.counters.refused += 1;
                        continue;
                    }
                    let remote = canonical(remote);
                    let Ok(local) = stream.local_addr().map(canonical) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let token = self.take_token();
                    if registry
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.counters.accepted += 1;
                    // A reconnect from the same address replaces the old connection.
                    if let Some(old) = self.by_remote.insert(remote, token) {
                        self.close(registry, old);
                    }
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            remote,
                            local,
                            framer: Framer::default(),
                            out: Vec::new(),
                            last_rx: now,
                        },
                    );
                    // Bytes may already wait; edge-triggered readiness would not say so again.
                    self.backlog.insert(token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("tcp accept: {e}");
                    return;
                }
            }
        }
    }

    fn take_token(&mut self) -> Token {
        loop {
            let t = Token(self.next_token);
            self.next_token = self.next_token.checked_add(1).unwrap_or(self.first_token);
            if !self.conns.contains_key(&t) {
                return t;
            }
        }
    }

    /// A readiness event for a connection.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        readable: bool,
        writable: bool,
        out: &mut Vec<Frame>,
        now: Instant,
    ) {
        if writable {
            self.pending_out.insert(token);
            self.write(registry, token);
        }
        if readable {
            self.read(registry, token, out, now);
        }
    }

    /// Read the connections whose budget ran out last turn.
    pub fn read_backlog(&mut self, registry: &Registry, out: &mut Vec<Frame>, now: Instant) {
        for token in std::mem::take(&mut self.backlog) {
            self.read(registry, token, out, now);
        }
    }

    fn read(&mut self, registry: &Registry, token: Token, out: &mut Vec<Frame>, now: Instant) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let mut chunk = [0u8; 8192];
        let mut budget = READ_BUDGET;
        let mut gone = false;
        loop {
            if budget == 0 {
                self.backlog.insert(token);
                break;
            }
            match conn.stream.read(&mut chunk[..budget.min(8192)]) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    let (remote, local) = (conn.remote, conn.local);
                    let mut got = 0;
                    conn.framer.push(&chunk[..n], &mut |f| {
                        got += 1;
                        out.push(Frame {
                            remote,
                            local,
                            data: f.to_vec(),
                        });
                    });
                    if got > 0 {
                        conn.last_rx = now;
                        self.counters.frames_in += got;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            self.close(registry, token);
        }
    }

    /// Queue one packet for `remote`. Dropped when no connection from there is open
    /// or its send buffer is full.
    pub fn send(&mut self, remote: SocketAddr, data: &[u8]) {
        let Some(&token) = self.by_remote.get(&remote) else {
            self.counters.frames_dropped += 1;
            return;
        };
        let Some(conn) = self.conns.get_mut(&token) else { return };
        if data.len() > MAX_FRAME || conn.out.len() + 2 + data.len() > MAX_SEND_BUFFER {
            self.counters.frames_dropped += 1;
            return;
        }
        conn.out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        conn.out.extend_from_slice(data);
        self.counters.frames_out += 1;
        self.pending_out.insert(token);
    }

    /// Write what is queued, as far as the sockets take it; close idle connections.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        for token in std::mem::take(&mut self.pending_out) {
            self.write(registry, token);
        }
        if self.swept_at.is_none_or(|t| now >= t + Duration::from_secs(1)) {
            self.swept_at = Some(now);
            let idle: Vec<Token> = self
                .conns
                .iter()
                .filter(|(_, c)| now >= c.last_rx + IDLE_TIMEOUT)
                .map(|(t, _)| *t)
                .collect();
            for t in idle {
                self.close(registry, t);
            }
        }
    }

    fn write(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let mut written = 0;
        let mut gone = false;
        while written < conn.out.len() {
            match conn.stream.write(&conn.out[written..]) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => written += n,
                // Writable readiness brings us back.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        conn.out.drain(..written);
        if gone {
            self.close(registry, token);
        }
    }

    fn close(&mut self, registry: &Registry, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = registry.deregister(&mut conn.stream);
            if self.by_remote.get(&conn.remote) == Some(&token) {
                self.by_remote.remove(&conn.remote);
            }
            self.counters.closed += 1;
        }
        self.backlog.remove(&token);
        self.pending_out.remove(&token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut |x| out.push(x.to_vec()));
        }
        out
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut wire = Vec::new();
        for p in [&b"abc"[..], b"", b"defgh", &[7u8; 1500]] {
            wire.extend(frame(p).unwrap());
        }
        let whole = frames_of(&[&wire]);
        assert_eq!(whole.len(), 3, "the empty frame is skipped");
        for cut in 0..wire.len() {
            assert_eq!(frames_of(&[&wire[..cut], &wire[cut..]]), whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(frames_of(&bytewise), whole);
    }

    #[test]
    fn oversized_packets_are_not_framed() {
        assert!(frame(&vec![0u8; 70_000]).is_none());
        assert_eq!(frame(b"x").unwrap(), vec![0, 1, b'x']);
    }

    /// A client that stops reading loses its own frames beyond the bounded send
    /// buffer; the engine thread never blocks on it, and another connection's frames
    /// keep flowing (issue 13: slow readers do not stall other peers).
    #[test]
    fn a_slow_reader_only_loses_its_own_frames() {
        use std::io::Read as _;
        let poll = mio::Poll::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut plane = TcpPlane::new(listener, 10).unwrap();
        plane.register(poll.registry(), Token(9)).unwrap();
        let slow = std::net::TcpStream::connect(addr).unwrap();
        let mut fast = std::net::TcpStream::connect(addr).unwrap();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        while plane.connection_count() < 2 {
            assert!(Instant::now() < deadline, "connections not accepted");
            plane.accept(poll.registry(), now);
        }
        let packet = [0x80u8; 1200];
        let started = Instant::now();
        for _ in 0..20_000 {
            plane.send(slow.local_addr().unwrap(), &packet);
            plane.flush(poll.registry(), now);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "sending to a slow reader blocked");
        assert!(plane.counters.frames_dropped > 0, "24 MB cannot all fit");
        let held: usize = plane.conns.values().map(|c| c.out.len()).sum();
        assert!(held <= MAX_SEND_BUFFER, "send buffer grew to {held}");
        plane.send(fast.local_addr().unwrap(), b"hello");
        plane.flush(poll.registry(), now);
        fast.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 7];
        fast.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x00\x05hello");
        drop(slow);
    }
}
