//! Heap held by the engine per idle participant: N subscriber peers (the
//! PeerConnection every participant gets at join, with its data channels) set up
//! and connected over the engine's in-memory test network, no media. Counts live
//! heap bytes with a counting allocator after each step of a peer's set-up, so the
//! engine's share of `--shape idle`'s RSS per participant can be read apart from
//! Python's. See bench/README.md.
//!
//! `cargo bench -p pysfu-engine --bench peer_memory -- [N]` (default 200).
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use pysfu_engine::testkit::{MemNet, VecSink};
use pysfu_engine::{Core, Role};

/// The system allocator, counting the bytes it has handed out and not got back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    let bwe = !std::env::var("BWE").is_ok_and(|v| v == "0");
    let server: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let mut now = Instant::now();
    let mut core = Core::new(VecSink::default(), server);
    core.set_bandwidth_estimation(bwe);
    let mut net = MemNet::new(core, server);
    // Clients live in the same heap: count only what the engine's calls add.
    let mut engine = [0isize; 3];
    let mut client_heap = 0;
    for i in 0..n {
        let before = live();
        let client = net.add_client(format!("10.0.{}.{}:5000", 1 + i / 250, 1 + i % 250).parse().unwrap(), now);
        client_heap += live() - before;
        let id = format!("sub{i}");
        let before = live();
        net.core.add_peer(&id, Role::Subscriber, now).unwrap();
        engine[0] += live() - before;
        let offer = net.core.create_offer(&id, now).unwrap();
        let before = live();
        let answer = {
            let offer = str0m::change::SdpOffer::from_sdp_string(&offer).unwrap();
            net.clients[client].rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
        };
        client_heap += live() - before;
        let before = live();
        net.core.accept_answer(&id, &answer, now).unwrap();
        engine[1] += live() - before;
    }
    // Connect everyone: ICE, DTLS, SCTP and the data channels.
    let before_connect = live();
    for _ in 0..2000 {
        now += Duration::from_millis(5);
        net.step(now);
        if net.connected() == n {
            break;
        }
    }
    assert_eq!(net.connected(), n, "every peer connects");
    // A few idle seconds: timers, keepalives, whatever settles.
    for _ in 0..300 {
        now += Duration::from_millis(10);
        net.step(now);
    }
    // The test network's event log is not the engine's: free it, not just empty it.
    net.events = Vec::new();
    let after = live();
    // The clients' share of the connect step: measure it by dropping them.
    let clients = std::mem::take(&mut net.clients);
    let with_clients = live();
    drop(clients);
    let client_share = with_clients - live();
    engine[2] = after - before_connect - (client_share - client_heap);
    let kb = |b: isize| b as f64 / n as f64 / 1024.0;
    println!(
        "{n} idle subscriber peers (bandwidth estimation {}): engine heap per peer {:.1} kB \
         (add_peer {:.1}, offer/answer {:.1}, connected and idle {:.1}); clients {:.1} kB each",
        if bwe { "on" } else { "off" },
        kb(engine.iter().sum()),
        kb(engine[0]),
        kb(engine[1]),
        kb(engine[2]),
        kb(client_share),
    );
}

