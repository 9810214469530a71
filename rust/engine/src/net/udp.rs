//! Which local address a datagram reached. A socket bound to a wildcard address
//! serves every interface, but str0m only accepts a STUN request whose destination
//! is one of the peer's host candidates, so each datagram must carry the address
//! it was sent to: IP_PKTINFO / IPV6_RECVPKTINFO ancillary data.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use crate::pump::Inbound;

/// Ask the kernel to report each datagram's destination address. On a dual-stack
/// IPv6 socket both options apply (IPv4 datagrams arrive with IP_PKTINFO).
pub fn enable_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: setsockopt reads `on` for its length; fd is an open socket.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &on as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        // Best effort: an IPv6-only socket refuses it, and then needs no IPv4 info.
        let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as the
/// IPv4 address it is, so candidates, demux and str0m see one spelling.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One datagram with its source and the local address it was sent to (when the
/// kernel reported it).
pub fn recv_with_destination(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage, msghdr and cmsg buffer.
    let mut from: libc::sockaddr_storage = unsafe { zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let source = sockaddr_to(&from).ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut dest = None;
    // SAFETY: the CMSG_* walk stays within msg_control as the kernel filled it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                dest = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                dest = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)).to_canonical());
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, canonical(source), dest))
}

fn sockaddr_to(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The engine's receiving handle: datagrams with their destination address.
pub struct PktInfoSocket(pub mio::net::UdpSocket);

impl Inbound for PktInfoSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_to(buf).map(|(n, s, _)| (n, s))
    }

    fn recv_to(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        recv_with_destination(self.0.as_raw_fd(), buf)
    }
}

/// A UDP socket on `addr` that other sockets of this process may bind too
/// (`SO_REUSEPORT`): the shards' sockets share one port, and the kernel spreads
/// datagrams over them by 4-tuple. Blocking; the caller sets the mode.
pub fn bind_shared(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned by the UdpSocket built below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; the UdpSocket closes it on every path.
    let socket = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` for its length; fd is an open socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &on as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let (storage, len) = crate::batch::sockaddr_of(&addr);
    // SAFETY: storage holds a sockaddr of `len` bytes for `domain`.
    let r = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_socket_reports_the_address_a_datagram_reached() {
        let server = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_pktinfo(server.as_raw_fd(), false).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, source, dest) = recv_with_destination(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(source, client.local_addr().unwrap());
        assert_eq!(dest, Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn a_dual_stack_socket_reports_ipv4_peers_as_ipv4() {
        let Ok(server) = std::net::UdpSocket::bind("[::]:0") else {
            return;
        };
        enable_pktinfo(server.as_raw_fd(), true).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"v4", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let (_, source, dest) = recv_with_destination(server.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(source, client.local_addr().unwrap());
        assert_eq!(dest, Some("127.0.0.1".parse().unwrap()));
    }
}
