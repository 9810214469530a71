//! The generator thread: every peer's socket registered with one mio poll,
//! a command channel with a waker, and a 1 ms tick for timers and media.
use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use str0m::crypto::CryptoProvider;

use crate::client::ClientPeer;
use crate::measure::Totals;

pub(crate) const WAKER: Token = Token(usize::MAX);

/// Media pacing granularity; timers of str0m are coarser than this anyway.
const TICK: Duration = Duration::from_millis(1);

const RECV_BUFFER_BYTES: usize = 2048;

/// Everything the generator thread owns; commands borrow it mutably.
pub struct State {
    pub peers: HashMap<u32, ClientPeer>,
    pub totals: Totals,
    pub registry: Registry,
    pub crypto: Arc<CryptoProvider>,
    pub next_peer: u32,
    pub next_track: u32,
}

pub(crate) type Job = Box<dyn FnOnce(&mut State, Instant) + Send>;

pub(crate) fn run(mut poll: Poll, mut state: State, jobs: Receiver<Job>) {
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                return;
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(job) => job(&mut state, Instant::now()),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            if let Some(peer) = state.peers.get_mut(&(event.token().0 as u32)) {
                peer.read_socket(&mut buf, &mut state.totals);
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            let epoch = state.totals.epoch;
            let clock = move |t: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
            for peer in state.peers.values_mut() {
                peer.tick(now, &clock, &mut state.totals);
            }
            next_tick = now + TICK;
        }
    }
}
