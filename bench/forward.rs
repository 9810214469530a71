//! Fan-out benchmark: one publisher, N subscribers, the engine core driven
//! in-process (no sockets). See bench/README.md.
//!
//! Set-up (ICE, DTLS, SCTP, negotiation) runs over an in-memory network with real
//! str0m clients. Then the publisher's client pre-encrypts a burst of VP8 RTP
//! packets, and only the engine's work is timed: SRTP decrypt, routing,
//! seq/ts rewriting, per-subscriber SRTP encrypt and hand-off to the sink.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pysfu_engine::{Core, MediaEvent, Role, Sink};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Input, Output, Rtc};

/// Queues datagrams during set-up; counts and drops them while measuring.
struct MemSink {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    measuring: bool,
    sent: u64,
    bytes: u64,
}

impl Sink for MemSink {
    fn send(&mut self, dest: SocketAddr, data: &[u8]) {
        self.sent += 1;
        self.bytes += data.len() as u64;
        if !self.measuring {
            self.queue.push_back((dest, data.to_vec()));
        }
    }
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    out: Vec<Vec<u8>>,
}

impl Client {
    fn new(addr: SocketAddr, now: Instant) -> Self {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self { rtc, addr, out: Vec::new() }
    }
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => self.out.push(t.contents.to_vec()),
                Output::Event(_) => {}
            }
        }
    }
}

fn pump(core: &mut Core<MemSink>, clients: &mut [Client], engine_addr: SocketAddr, rounds: usize) {
    for _ in 0..rounds {
        let now = Instant::now();
        for c in clients.iter_mut() {
            c.rtc.handle_input(Input::Timeout(now)).unwrap();
            c.drain();
            for d in std::mem::take(&mut c.out) {
                core.handle_datagram(c.addr, &d, now);
            }
        }
        core.handle_timeout(now);
        core.flush(now);
        while let Some((dest, d)) = core.sink_mut().queue.pop_front() {
            if let Some(c) = clients.iter_mut().find(|c| c.addr == dest) {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: engine_addr,
                        destination: c.addr,
                        contents: d.as_slice().try_into().unwrap(),
                    },
                );
                c.rtc.handle_input(input).unwrap();
                c.drain();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU time consumed by this thread (unaffected by other load on the machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is valid on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run(subscribers: usize, packets: usize, batch: usize) {
    let now = Instant::now();
    let engine_addr: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let sink = MemSink { queue: VecDeque::new(), measuring: false, sent: 0, bytes: 0 };
    let mut core = Core::new(sink, engine_addr);
    let mut clients: Vec<Client> = (0..=subscribers)
        .map(|i| Client::new(format!("10.0.1.{}:5000", i + 1).parse().unwrap(), now))
        .collect();

    // Publisher: one VP8 video m-line.
    core.add_peer("pub", Role::Publisher, now).unwrap();
    let mut api = clients[0].rtc.sdp_api();
    let mid: Mid = api.add_media(MediaKind::Video, Direction::SendOnly, Some("s".into()), Some("cid".into()), None);
    let (offer, pending) = api.apply().unwrap();
    let answer = core.accept_offer("pub", &offer.to_sdp_string(), now).unwrap();
    clients[0]
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    core.publish_track("pub", &mid.to_string(), "TR_v", now).unwrap();

    for (i, client) in clients.iter_mut().enumerate().skip(1) {
        let id = format!("sub{i}");
        core.add_peer(&id, Role::Subscriber, now).unwrap();
        core.subscribe(&id, "TR_v", "PA_p|TR_v", now).unwrap();
        let offer = core.create_offer(&id, now).unwrap();
        let answer = client
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
            .unwrap();
        core.accept_answer(&id, &answer.to_sdp_string(), now).unwrap();
    }
    let mut connected = 0;
    for _ in 0..3000 {
        pump(&mut core, &mut clients, engine_addr, 1);
        connected += core
            .events
            .drain(..)
            .filter(|e| matches!(e, MediaEvent::PeerConnected { .. }))
            .count();
        if connected == subscribers + 1 {
            break;
        }
    }
    assert_eq!(connected, subscribers + 1, "all peers connect");

    // Pre-encrypt the publisher's packets: keyframe first, then deltas.
    let pt = clients[0]
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == Codec::Vp8)
        .unwrap()
        .pt();
    let mut datagrams = Vec::with_capacity(packets);
    let pubc = &mut clients[0];
    for n in 0..packets {
        let mut payload = vec![0xAAu8; 1000];
        payload[0] = 0x10;
        payload[1] = if n == 0 { 0x00 } else { 0x01 };
        let t = Instant::now();
        let mut api = pubc.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(1000 + n as u64), 90 * n as u32, t, payload)
                .marker(n % 4 == 3)
                .nackable(true),
        );
        pubc.rtc.handle_input(Input::Timeout(t)).unwrap();
        pubc.drain();
        for d in pubc.out.drain(..) {
            // Keep only SRTP (RTP version 2, not RTCP payload types 200..=207).
            if d.len() > 500 && d[0] >> 6 == 2 {
                datagrams.push(d);
            }
        }
    }

    core.sink_mut().measuring = true;
    let before = core.counters.rtp_forwarded;
    let sent_before = core.sink_mut().sent;
    let start = Instant::now();
    let cpu_start = thread_cpu();
    for burst in datagrams.chunks(batch) {
        for d in burst {
            core.handle_datagram(clients[0].addr, d, Instant::now());
        }
        core.flush(Instant::now());
    }
    let elapsed = start.elapsed();
    let cpu = thread_cpu() - cpu_start;
    let forwarded = core.counters.rtp_forwarded - before;
    let sent = core.sink_mut().sent - sent_before;
    println!(
        "subscribers={subscribers:3} batch={batch:2} in={:6} forwarded={forwarded:7} out={sent:7} \
         wall={:6.0} ms cpu={:6.0} ms -> {:>7.0} pkt/s per CPU-second ({:>7.0} wall), {:5.0} ns CPU/pkt",
        datagrams.len(),
        elapsed.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
        forwarded as f64 / cpu.as_secs_f64(),
        forwarded as f64 / elapsed.as_secs_f64(),
        cpu.as_nanos() as f64 / forwarded.max(1) as f64,
    );
}

fn main() {
    // `cargo bench` passes --bench; other args select sizes: forward [N...]
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![1, 10, 50] } else { args };
    let batch: usize = std::env::var("BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(0);
    let batches = if batch == 0 { vec![1, 16] } else { vec![batch] };
    for n in sizes {
        for &b in &batches {
            run(n, 20_000, b);
        }
    }
}
