//! Target `burst`: the run loop's read turns ([`pump::turn`]) over an in-memory
//! socket, fed bursts of thousands of datagrams at once, as a flood or a backlog
//! after a stall delivers them: junk, unknown-ufrag STUN, DTLS/RTP/RTCP-looking
//! bytes from strangers, receive errors, and among them the publisher's real SRTP
//! and the peers' consent checks, on the live `Core` of the `datagram` target.
//!
//! Invariants:
//! - the loop only sleeps once the socket said `WouldBlock` (mio's readiness is
//!   edge-triggered: leftovers would wait for a timer), and it gets there within
//!   `ceil(n / MAX_READS_PER_TURN) + 1` turns, none reading more than the cap;
//! - every datagram is counted once (`packets_in`), and every one no peer gets is
//!   counted under the right `dropped_*` reason;
//! - junk costs no real packet: each of the publisher's audio packets in a burst
//!   is forwarded to the subscriber.
use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use super::reader::{Reader, Writer};
use super::session::{addr, negotiate, stun, World, PUB_ADDR, SUB_ADDRS, SUB_IDS, TRACKS};
use crate::pump::{self, Inbound, MAX_READS_PER_TURN, RECV_BUFFER_BYTES};

/// Largest burst one op queues (the engine's 8 MiB receive buffer holds a few thousand).
const MAX_BURST: usize = 6000;
/// Virtual time one datagram takes to arrive and be read.
const PER_DATAGRAM: Duration = Duration::from_micros(2);
/// Total virtual time of one input: within the ICE-disconnected grace, so the
/// peers stay open and forwarding stays exact.
const MAX_VIRTUAL: Duration = Duration::from_secs(4);

enum Item {
    Datagram(SocketAddr, Vec<u8>),
    Error(ErrorKind),
}

/// The socket's receive queue.
#[derive(Default)]
struct Queue(VecDeque<Item>);

impl Inbound for Queue {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.0.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Item::Error(kind)) => Err(kind.into()),
            Some(Item::Datagram(source, data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, source))
            }
        }
    }
}

/// What a burst should do to the counters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expect {
    packets_in: u64,
    not_webrtc: u64,
    unknown_ufrag: u64,
    unknown_source: u64,
    forwarded: u64,
}

/// xorshift64*, so a burst of thousands costs the fuzzer a few bytes.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A stranger: never one of the world's peers (10.0.x.x).
fn stranger(m: &mut Mix) -> SocketAddr {
    let v = m.next();
    if v & 1 == 0 {
        SocketAddr::from(([10, 9, (v >> 8) as u8, (v >> 16) as u8], (v >> 24) as u16))
    } else {
        SocketAddr::from((
            [0xfd00, 0, 0, 0, 0, 0, (v >> 8) as u16, (v >> 24) as u16],
            (v >> 40) as u16,
        ))
    }
}

/// One real audio packet from the publisher (sequential per call).
fn audio(w: &mut World) -> Vec<u8> {
    // mid 0 (audio), first SSRC, no rid, a fitting payload type, stream start,
    // seq +1, ts +960, new frame, no raw payload, no extensions.
    let bytes = [
        0u8, 0, 0, 0, 0, 0, 100, 0, 0, 0, 1, 0, 10, 1, 3, 192, 1, 0, 0, 0, 0,
    ];
    w.rtp(&mut Reader::new(&bytes)).1
}

/// A consent check (binding request with the right credentials) from a peer's address.
fn consent(w: &mut World, i: usize) -> (SocketAddr, Vec<u8>) {
    let (peer, from, remote) = if i == 0 {
        ("pub", addr(PUB_ADDR), "pubclient".to_string())
    } else {
        let s = &mut w.subs[i - 1];
        (
            SUB_IDS[i - 1],
            addr(SUB_ADDRS[i - 1]),
            s.client.direct_api().local_ice_credentials().ufrag,
        )
    };
    let creds = w
        .core
        ._rtc_mut(peer)
        .expect("peer exists")
        .direct_api()
        .local_ice_credentials();
    (
        from,
        stun(
            &format!("{}:{remote}", creds.ufrag),
            false,
            Some(creds.pass.as_bytes()),
        ),
    )
}

fn fill(w: &mut World, q: &mut Queue, r: &mut Reader, exp: &mut Expect) {
    let n = usize::from(r.u16()) % (MAX_BURST + 1);
    // Weights (out of 16) of real packets and errors; the rest is hostile.
    let real = u64::from(r.u8() % 17);
    let errors = u64::from(r.u8() % 3);
    let mut m = Mix(r.u64() | 1);
    let unknown_stun = stun("notours:x", true, Some(b"pw"));
    for _ in 0..n {
        let roll = m.next() % 16;
        if roll < real {
            if m.next().is_multiple_of(8) {
                let (from, dg) = consent(w, (m.next() % 3) as usize);
                q.0.push_back(Item::Datagram(from, dg));
            } else {
                exp.forwarded += 1;
                q.0.push_back(Item::Datagram(addr(PUB_ADDR), audio(w)));
            }
            exp.packets_in += 1;
            continue;
        }
        if roll < real + errors {
            q.0.push_back(Item::Error(if m.next().is_multiple_of(2) {
                ErrorKind::ConnectionRefused
            } else {
                ErrorKind::Interrupted
            }));
            continue;
        }
        exp.packets_in += 1;
        let len = (m.next() % 200) as usize;
        let mut dg: Vec<u8> = (0..len).map(|_| m.next() as u8).collect();
        let from = stranger(&mut m);
        match m.next() % 4 {
            0 => {
                // First byte outside every RFC 7983 range; empty counts too.
                if let Some(b) = dg.first_mut() {
                    *b = [4u8, 19, 64, 100, 127, 192, 255][(m.next() % 7) as usize];
                }
                exp.not_webrtc += 1;
            }
            1 => {
                dg = unknown_stun.clone();
                exp.unknown_ufrag += 1;
            }
            2 => {
                // STUN-looking garbage.
                dg.resize(dg.len().max(20), 0);
                dg[0] &= 0x03;
                dg[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                exp.unknown_ufrag += 1;
            }
            _ => {
                dg.resize(dg.len().max(1), 0);
                dg[0] = if m.next().is_multiple_of(2) {
                    20 + (dg[0] % 44)
                } else {
                    0x80 | (dg[0] & 0x3f)
                };
                exp.unknown_source += 1;
            }
        }
        q.0.push_back(Item::Datagram(from, dg));
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut w = World::new();
    let start = w.now;
    w.core
        .publish_track("pub", &w.mids[0].to_string(), TRACKS[0], w.now)
        .expect("fresh track");
    w.core
        .subscribe(SUB_IDS[0], TRACKS[0], "PA|T0", w.now)
        .expect("live track");
    negotiate(&mut w.core, w.now, 0, &mut w.subs[0]);
    let mut q = Queue::default();
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut ops = 0;
    while !r.is_empty() && ops < 8 && w.now < start + MAX_VIRTUAL {
        ops += 1;
        if r.below(4) == 0 {
            w.now += Duration::from_millis(u64::from(r.u16() % 1000));
        }
        let mut exp = Expect::default();
        fill(&mut w, &mut q, &mut r, &mut exp);
        let queued = q.0.len();
        let before = w.core.counters.clone();
        // The run loop after one readable edge: turns until a turn drains, then sleep.
        let mut turns = 0;
        let mut now = w.now;
        loop {
            turns += 1;
            let t = pump::turn(&mut w.core, &mut q, &mut buf, &mut || {
                now += PER_DATAGRAM;
                now
            });
            assert!(t.reads <= MAX_READS_PER_TURN, "{t:?}");
            w.core.sink_mut().0.clear();
            w.core.events.clear();
            if t.drained {
                break;
            }
            assert!(
                turns <= queued / MAX_READS_PER_TURN + 1,
                "{turns} turns for {queued} queued"
            );
        }
        w.now = now;
        assert!(q.0.is_empty(), "slept with {} datagrams queued", q.0.len());
        let c = &w.core.counters;
        let got = Expect {
            packets_in: c.packets_in - before.packets_in,
            not_webrtc: c.dropped_not_webrtc - before.dropped_not_webrtc,
            unknown_ufrag: c.dropped_unknown_ufrag - before.dropped_unknown_ufrag,
            unknown_source: c.dropped_unknown_source - before.dropped_unknown_source,
            forwarded: c.rtp_forwarded - before.rtp_forwarded,
        };
        assert_eq!(got, exp, "counters after a burst of {queued}");
        assert_eq!(
            c.unroutable,
            c.dropped_not_webrtc + c.dropped_unknown_ufrag + c.dropped_unknown_source
        );
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // One op: selector (0: advance the clock first), [ms], n, real weight, error weight, mix seed.
    let op = |w: &mut Writer, advance_ms: Option<u16>, n: u16, real: u8, errors: u8, seed: u64| {
        match advance_ms {
            Some(ms) => w.u8(0).u16(ms),
            None => w.u8(1),
        };
        w.u16(n).u8(real).u8(errors).u64(seed);
    };
    let mut w = Writer::default();
    op(&mut w, None, 5000, 1, 0, 7);
    out.push(("backlog_5000".to_string(), w.0));
    let mut w = Writer::default();
    for i in 0..4u8 {
        op(&mut w, Some(200), 1500, 4, 1, u64::from(i) + 11);
    }
    out.push(("flood_with_media".to_string(), w.0));
    let mut w = Writer::default();
    op(&mut w, None, 300, 16, 0, 3);
    op(&mut w, None, 64, 0, 2, 5);
    op(&mut w, Some(900), 65, 8, 0, 9);
    out.push(("media_errors_cap".to_string(), w.0));
    out
}
