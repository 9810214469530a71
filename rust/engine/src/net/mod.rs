//! Sockets beside the shared UDP one: which local address a datagram reached
//! (`udp`), the host's interface addresses (`interfaces`), and ICE over TCP with
//! RFC 4571 framing (`tcp`).
pub mod interfaces;
pub mod tcp;
pub mod udp;
