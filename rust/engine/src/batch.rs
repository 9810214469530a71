//! Outgoing datagrams batched per run-loop turn: one `sendmmsg` for the whole
//! batch, and runs of equal-sized datagrams to one destination (the packets of a
//! video frame to one subscriber) coalesced into one UDP GSO message.
//!
//! The kernel's per-datagram cost (syscall, route lookup, the loopback or NIC
//! path) dominated the engine's CPU under fan-out; batching pays it per message
//! instead, and GSO lets the stack carry a frame's packets as one buffer.
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams held before a batch is sent regardless of the run loop.
pub const MAX_BATCH: usize = 256;
/// Linux accepts at most 64 segments per GSO message (UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = 64;
/// A GSO message carries at most one IP packet's worth of payload.
const MAX_GSO_BYTES: usize = 65_000;
const UDP_SEGMENT: libc::c_int = 103;

/// One message of a batch: `count` datagrams to `dest` starting at datagram
/// `first`, each `segment` bytes except possibly a shorter last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub dest: SocketAddr,
    pub first: usize,
    pub count: usize,
    pub segment: usize,
}

/// Split datagrams (destination, length), in send order, into messages. Order
/// per destination is kept; only neighbours are coalesced, and only where GSO
/// can carry them: all but the last of a run exactly `segment` long, the last no
/// longer.
pub fn plan_runs(datagrams: &[(SocketAddr, usize)], gso: bool) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, &(dest, len)) in datagrams.iter().enumerate() {
        if let Some(run) = runs.last_mut() {
            let last_len = datagrams[run.first + run.count - 1].1;
            let joinable = gso
                && run.dest == dest
                && last_len == run.segment
                && len <= run.segment
                && run.count < MAX_SEGMENTS
                && (run.count + 1) * run.segment <= MAX_GSO_BYTES;
            if joinable {
                run.count += 1;
                continue;
            }
        }
        runs.push(Run { dest, first: i, count: 1, segment: len });
    }
    runs
}

/// Datagrams waiting for the next `send`, in one contiguous buffer.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    datagrams: Vec<(SocketAddr, usize)>,
    /// Cleared when the kernel refuses GSO; then every datagram is its own message.
    gso_off: bool,
}

/// What one `send` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: u64,
    pub dropped: u64,
    pub syscalls: u64,
}

impl Batch {
    pub fn push(&mut self, dest: SocketAddr, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.datagrams.push((dest, data.len()));
    }

    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Send everything queued on `fd` and empty the batch. A full socket buffer
    /// drops what did not fit, as a congested network would.
    pub fn send(&mut self, fd: RawFd) -> Sent {
        let mut sent = Sent::default();
        if self.datagrams.is_empty() {
            return sent;
        }
        let mut runs = plan_runs(&self.datagrams, !self.gso_off);
        let mut offsets = Vec::with_capacity(self.datagrams.len() + 1);
        let mut at = 0;
        for &(_, len) in &self.datagrams {
            offsets.push(at);
            at += len;
        }
        offsets.push(at);
        let mut next = 0;
        while next < runs.len() {
            let result = send_runs(fd, &self.bytes, &offsets, &runs[next..]);
            sent.syscalls += 1;
            match result {
                Ok(n) => {
                    for run in &runs[next..next + n] {
                        sent.datagrams += run.count as u64;
                    }
                    next += n;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if runs[next].count > 1 && gso_refused(&e) => {
                    // No GSO here (old kernel, a device without checksum offload):
                    // the rest goes one datagram per message, from now on too.
                    tracing::info!("UDP GSO unavailable ({e}); sending datagrams singly");
                    self.gso_off = true;
                    let first = runs[next].first;
                    runs.truncate(next);
                    runs.extend(plan_runs(&self.datagrams[first..], false).into_iter().map(|r| Run {
                        first: r.first + first,
                        ..r
                    }));
                }
                Err(_) => {
                    // EAGAIN (buffer full) or an error for this destination (e.g.
                    // ICMP unreachable surfacing as ECONNREFUSED): drop it, go on.
                    sent.dropped += runs[next].count as u64;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.datagrams.clear();
        sent
    }
}

fn gso_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP))
}

/// Room for one UDP_SEGMENT control message (a u16 payload).
#[repr(C)]
union CmsgSpace {
    _align: libc::cmsghdr,
    _buf: [u8; 32],
}

pub(crate) fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// One `sendmmsg` of as many runs as fit; returns how many runs went out.
fn send_runs(fd: RawFd, bytes: &[u8], offsets: &[usize], runs: &[Run]) -> io::Result<usize> {
    let n = runs.len().min(MAX_BATCH);
    let runs = &runs[..n];
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = runs.iter().map(|r| sockaddr_of(&r.dest)).collect();
    let mut iovs: Vec<libc::iovec> = runs
        .iter()
        .map(|r| {
            let start = offsets[r.first];
            let end = offsets[r.first + r.count];
            libc::iovec { iov_base: bytes[start..end].as_ptr() as *mut libc::c_void, iov_len: end - start }
        })
        .collect();
    // SAFETY: CmsgSpace is plain old data.
    let mut cmsgs: Vec<CmsgSpace> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(n);
    for (i, run) in runs.iter().enumerate() {
        // SAFETY: msghdr is plain old data; the pointers set below stay valid
        // (addrs, iovs, cmsgs outlive the sendmmsg call and are not moved).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = &mut addrs[i].0 as *mut _ as *mut libc::c_void;
        hdr.msg_namelen = addrs[i].1;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
        if run.count > 1 {
            let space = &mut cmsgs[i] as *mut CmsgSpace as *mut libc::c_void;
            hdr.msg_control = space;
            // SAFETY: CMSG_SPACE only computes a size.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
            // SAFETY: msg_control points at a zeroed, aligned buffer of at least
            // CMSG_SPACE(2) bytes, so the first header and its data fit.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, run.segment as u16);
            }
        }
        msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
    }
    // SAFETY: msgs holds n initialised headers whose buffers live until return.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn equal_neighbours_to_one_destination_coalesce() {
        let d = [(a(1), 1200), (a(1), 1200), (a(1), 800), (a(2), 1200), (a(1), 1200)];
        let runs = plan_runs(&d, true);
        assert_eq!(
            runs,
            vec![
                Run { dest: a(1), first: 0, count: 3, segment: 1200 },
                Run { dest: a(2), first: 3, count: 1, segment: 1200 },
                Run { dest: a(1), first: 4, count: 1, segment: 1200 },
            ]
        );
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_a_longer_one_starts_one() {
        let d = [(a(1), 500), (a(1), 1200), (a(1), 1200), (a(1), 300), (a(1), 300)];
        let runs = plan_runs(&d, true);
        let shapes: Vec<(usize, usize)> = runs.iter().map(|r| (r.count, r.segment)).collect();
        assert_eq!(shapes, vec![(1, 500), (3, 1200), (1, 300)]);
    }

    #[test]
    fn runs_respect_the_kernel_limits_and_gso_off() {
        let d = vec![(a(1), 100); MAX_SEGMENTS + 5];
        let counts: Vec<usize> = plan_runs(&d, true).iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![MAX_SEGMENTS, 5]);
        let big = vec![(a(1), 1400); 60];
        assert!(plan_runs(&big, true).iter().all(|r| r.count * 1400 <= MAX_GSO_BYTES));
        assert!(plan_runs(&d, false).iter().all(|r| r.count == 1));
    }

    #[test]
    fn a_batch_arrives_as_the_datagrams_pushed_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        for r in [&rx1, &rx2] {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        let mut batch = Batch::default();
        let mut expect1 = Vec::new();
        for i in 0..10u8 {
            let len = if i == 9 { 700 } else { 1200 };
            let data = vec![i; len];
            batch.push(rx1.local_addr().unwrap(), &data);
            expect1.push(data);
        }
        batch.push(rx2.local_addr().unwrap(), b"other");
        let sent = batch.send(tx.as_raw_fd());
        assert_eq!((sent.datagrams, sent.dropped), (11, 0));
        assert!(batch.is_empty());
        // Linux loopback takes GSO: one frame-like run plus one datagram, one call.
        assert_eq!((sent.syscalls, batch.gso_off), (1, false));
        let mut buf = [0u8; 2048];
        for want in expect1 {
            let n = rx1.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want.as_slice(), "segment boundaries and order survive");
        }
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"other");
    }
}
