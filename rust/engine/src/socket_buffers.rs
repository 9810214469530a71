//! Kernel buffers of the shared UDP socket, sized for fan-out bursts.
//!
//! One socket carries every peer. While the engine fans a keyframe out to hundreds
//! of subscribers (tens of milliseconds of sending), their RTCP and the publishers'
//! next packets queue up on the receive side; the default 208 KiB overflowed there
//! and dropped publisher packets, which every subscriber then lost or NACKed.
use std::os::fd::AsRawFd;

/// What we ask for in each direction; the kernel caps it at net.core.[rw]mem_max
/// unless the process may force it (CAP_NET_ADMIN).
pub const WANTED_BYTES: libc::c_int = 8 * 1024 * 1024;

/// Ask for `WANTED_BYTES` of receive and send buffer; log what was granted.
pub fn enlarge(socket: &impl AsRawFd) {
    let fd = socket.as_raw_fd();
    for (name, force, plain) in [
        ("receive", libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ("send", libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if !set(fd, force, WANTED_BYTES) {
            set(fd, plain, WANTED_BYTES);
        }
        let got = get(fd, plain);
        tracing::info!("UDP {name} buffer: {got} bytes");
    }
}

fn set(fd: libc::c_int, option: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from `value`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The buffer size in effect (Linux reports twice the requested size: it counts
/// its bookkeeping overhead).
pub fn get(fd: libc::c_int, option: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, option, &mut value as *mut libc::c_int as *mut libc::c_void, &mut len)
    };
    if rc == 0 {
        value
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_beyond_the_kernel_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = socket.as_raw_fd();
        let before = get(fd, libc::SO_RCVBUF);
        enlarge(&socket);
        let after = get(fd, libc::SO_RCVBUF);
        // Whatever the cap, asking for more never leaves the buffer smaller; root
        // may force the whole size (Linux reports it doubled).
        assert!(after >= before, "{after} < {before}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(after >= WANTED_BYTES, "buffer stayed at {after}");
        }
    }
}
