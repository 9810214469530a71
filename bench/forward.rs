//! Fan-out benchmark: one publisher, N subscribers, the engine core driven
//! in-process (no sockets); then the same load on one shard and on several
//! (one thread each, relayed through the shard fabric). See bench/README.md.
//!
//! Set-up (ICE, DTLS, SCTP, negotiation) runs over an in-memory network with real
//! str0m clients. Then the publisher's client pre-encrypts a burst of VP8 RTP
//! packets, and only the engine's work is timed: SRTP decrypt, routing,
//! seq/ts rewriting, per-subscriber SRTP encrypt and hand-off to the sink.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pysfu_engine::shard::{Fabric, Inbox, ShardLink};
use pysfu_engine::testkit::{MemNet, Outbox};
use pysfu_engine::{Core, Role, Sink};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Input, Output};

/// Queues datagrams during set-up; counts and drops them while measuring.
struct MemSink {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    measuring: bool,
    sent: u64,
    bytes: u64,
}

impl Sink for MemSink {
    fn send(&mut self, dest: SocketAddr, data: &[u8]) {
        self.sent += 1;
        self.bytes += data.len() as u64;
        if !self.measuring {
            self.queue.push((dest, data.to_vec()));
        }
    }
}

impl Outbox for MemSink {
    fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.queue)
    }
}

/// CPU time consumed by this thread (unaffected by other load on the machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is valid on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One shard of the benchmark: a core and the clients whose peers it holds (the
/// publisher's client first on shard 0), joined by the engine's test network.
type Shard = MemNet<MemSink>;

/// What one run measured.
struct Measured {
    forwarded: u64,
    sent: u64,
    wall: Duration,
    /// CPU time of the publisher's shard thread.
    cpu: Duration,
}

/// One publisher on shard 0, `subscribers` spread round-robin over `shards` cores
/// (each on its own thread while measuring); the same pre-encrypted packets.
fn run(subscribers: usize, shards: usize, packets: usize, batch: usize) -> Measured {
    let now = Instant::now();
    let engine_addr: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let fabric = Arc::new(Fabric::new((0..shards).map(|_| Inbox::new(None)).collect()));
    let mut set: Vec<Shard> = (0..shards)
        .map(|id| {
            let sink = MemSink { queue: Vec::new(), measuring: false, sent: 0, bytes: 0 };
            let mut core = Core::new(sink, engine_addr);
            // BWE=1: subscribers estimate bandwidth (TWCC) and str0m paces them.
            core.set_bandwidth_estimation(std::env::var("BWE").is_ok_and(|v| v == "1"));
            if shards > 1 {
                core.set_shard(ShardLink { id, fabric: fabric.clone() });
            }
            MemNet::new(core, engine_addr)
        })
        .collect();

    // Publisher: one VP8 video m-line.
    let first = &mut set[0];
    let publisher = first.add_client("10.0.1.1:5000".parse().unwrap(), now);
    first.core.add_peer("pub", Role::Publisher, now).unwrap();
    let mut api = first.clients[publisher].rtc.sdp_api();
    let mid: Mid = api.add_media(MediaKind::Video, Direction::SendOnly, Some("s".into()), Some("cid".into()), None);
    let offer = api.apply().unwrap();
    first.client_offer("pub", publisher, offer, now).unwrap();
    first.core.publish_track("pub", &mid.to_string(), "TR_v", now).unwrap();
    for id in 1..shards {
        let export = set[0].core.follow_track("TR_v", id).unwrap();
        set[id].core.mirror_track(export, now);
    }

    for i in 1..=subscribers {
        let shard = &mut set[i % shards];
        let client = shard.add_client(format!("10.0.{}.{}:5000", 2 + i / 250, 1 + i % 250).parse().unwrap(), now);
        let id = format!("sub{i}");
        shard.core.add_peer(&id, Role::Subscriber, now).unwrap();
        shard.core.subscribe(&id, "TR_v", "PA_p|TR_v", now).unwrap();
        shard.server_offer(&id, client, now).unwrap();
    }
    let connected = |set: &[Shard]| set.iter().map(|s| s.connected()).sum::<usize>();
    for _ in 0..3000 {
        let now = Instant::now();
        for shard in set.iter_mut() {
            shard.step(now);
            // The mirrors on other shards need no relayed set-up traffic.
            shard.core.outbox.clear();
        }
        if connected(&set) == subscribers + 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(connected(&set), subscribers + 1, "all peers connect");
    for id in 0..shards {
        fabric.inbox(id).take();
    }

    // Pre-encrypt the publisher's packets: keyframe first, then deltas.
    let pubc = &mut set[0].clients[publisher];
    let pt = pubc
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == Codec::Vp8)
        .unwrap()
        .pt();
    let pub_addr = pubc.addr;
    let mut datagrams = Vec::with_capacity(packets);
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
        while let Ok(out) = pubc.rtc.poll_output() {
            match out {
                Output::Timeout(_) => break,
                // Keep only SRTP (RTP version 2, not RTCP payload types 200..=207).
                Output::Transmit(d) if d.contents.len() > 500 && d.contents[0] >> 6 == 2 => {
                    datagrams.push(d.contents.to_vec());
                }
                _ => {}
            }
        }
    }

    let before: Vec<(u64, u64)> = set
        .iter_mut()
        .map(|s| {
            s.core.sink_mut().measuring = true;
            (s.core.counters.rtp_forwarded, s.core.sink_mut().sent)
        })
        .collect();
    let done = AtomicBool::new(false);
    let start_line = Barrier::new(shards);
    let mut start = Instant::now();
    let mut cpu = Duration::ZERO;
    std::thread::scope(|scope| {
        let (first, rest) = set.split_first_mut().unwrap();
        for (i, shard) in rest.iter_mut().enumerate() {
            let (done, fabric, start_line) = (&done, &fabric, &start_line);
            scope.spawn(move || {
                start_line.wait();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let msgs = fabric.inbox(i + 1).take();
                    if msgs.is_empty() {
                        if finished {
                            break;
                        }
                        std::hint::spin_loop();
                        continue;
                    }
                    let now = Instant::now();
                    for m in msgs {
                        shard.core.handle_cross(m, now);
                    }
                    shard.core.flush(now);
                    shard.core.deliver_outbox();
                }
            });
        }
        start_line.wait();
        start = Instant::now();
        let cpu_start = thread_cpu();
        for burst in datagrams.chunks(batch) {
            for d in burst {
                first.core.handle_datagram(pub_addr, d, Instant::now());
            }
            first.core.flush(Instant::now());
            first.core.deliver_outbox();
        }
        cpu = thread_cpu() - cpu_start;
        done.store(true, Ordering::Release);
    });
    let wall = start.elapsed();
    let (mut forwarded, mut sent) = (0, 0);
    for (s, (f0, s0)) in set.iter_mut().zip(before) {
        forwarded += s.core.counters.rtp_forwarded - f0;
        sent += s.core.sink_mut().sent - s0;
    }
    Measured { forwarded, sent, wall, cpu }
}

fn report(subscribers: usize, shards: usize, batch: usize, packets: usize, m: &Measured) {
    println!(
        "subscribers={subscribers:3} shards={shards} batch={batch:2} in={packets:6} forwarded={:7} out={:7} \
         wall={:6.0} ms -> {:>8.0} pkt/s wall; publisher shard cpu={:6.0} ms ({:5.0} ns CPU/pkt there)",
        m.forwarded,
        m.sent,
        m.wall.as_secs_f64() * 1e3,
        m.forwarded as f64 / m.wall.as_secs_f64(),
        m.cpu.as_secs_f64() * 1e3,
        m.cpu.as_nanos() as f64 / m.forwarded.max(1) as f64,
    );
}

fn main() {
    // `cargo bench` passes --bench; other args select sizes: forward [N...].
    // SHARDS (default: the cores available) sets the scaling comparison's count;
    // PACKETS (default 20,000) the publisher's burst (small: set-up only, e.g. under
    // a heap profiler).
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![1, 10, 50] } else { args.clone() };
    let batch: usize = std::env::var("BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(0);
    let batches = if batch == 0 { vec![1, 16] } else { vec![batch] };
    let packets: usize = std::env::var("PACKETS").ok().and_then(|p| p.parse().ok()).unwrap_or(20_000);
    for &n in &sizes {
        for &b in &batches {
            report(n, 1, b, packets, &run(n, 1, packets, b));
        }
    }
    let shards: usize = std::env::var("SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(2);
    let scaling = if args.is_empty() { vec![100] } else { args };
    for n in scaling {
        let one = run(n, 1, packets, 16);
        let many = run(n, shards, packets, 16);
        report(n, 1, 16, packets, &one);
        report(n, shards, 16, packets, &many);
        let rate = |m: &Measured| m.forwarded as f64 / m.wall.as_secs_f64();
        println!(
            "scaling: {shards} shards forward {:.2}x the packets per wall-clock second of one ({n} subscribers)",
            rate(&many) / rate(&one)
        );
    }
}
