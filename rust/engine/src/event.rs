//! Events from the engine thread to the control plane, and the queue that
//! carries them: a mutex-guarded batch plus a wake-up socket.
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::link_stats::LinkStat;
use crate::router::audio::LevelSummary;

/// Something the control plane must learn about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// ICE and DTLS are up for this peer.
    PeerConnected { peer_id: String },
    /// The peer failed, timed out, or the remote closed it. Sent once.
    PeerClosed { peer_id: String, reason: String },
    /// First RTP on a publisher m-line (once per mid).
    TrackArrived {
        peer_id: String,
        mid: String,
        /// msid track id of the m-line in the publisher's offer (the client's `cid`).
        track_id: String,
        /// "audio" or "video".
        kind: &'static str,
        /// Simulcast rid of the first packet, if any.
        rid: Option<String>,
        /// Lower-case codec name: opus, vp8, h264, vp9, av1.
        codec: String,
    },
    /// A message on one of the peer's data channels.
    DataReceived {
        peer_id: String,
        reliable: bool,
        payload: Vec<u8>,
    },
    /// Every `router::audio::LEVEL_INTERVAL` while audio tracks exist (and once
    /// more after the last one went): each audio track's level summary since the
    /// last event (tracks whose packets carried no level are left out).
    AudioLevels { levels: Vec<(String, LevelSummary)> },
    /// Every `link_stats::LINK_STATS_INTERVAL`: each peer's link since the last
    /// event (peers without stream stats are left out).
    LinkStats { links: Vec<(String, LinkStat)> },
    /// The allocator paused a video down track (the subscriber's bandwidth estimate
    /// does not fit even its lowest layer; nothing is forwarded) or resumed it.
    StreamStateChanged { peer_id: String, track_id: String, paused: bool },
}

/// Events beyond this many are dropped (counted in `events_dropped`) so a
/// stalled control plane cannot grow engine memory without bound.
pub const EVENT_QUEUE_CAPACITY: usize = 65_536;

/// Bounded event batch shared between the engine thread and the control plane.
///
/// Invariant: whenever `pending` is non-empty, either `signaled` is false and the
/// next push writes a byte, or a byte is (or will be) readable on `reader`.
pub struct EventQueue {
    pending: Mutex<Vec<MediaEvent>>,
    signaled: AtomicBool,
    writer: UnixStream,
    reader: UnixStream,
    dropped: AtomicU64,
}

impl EventQueue {
    /// A queue with a fresh non-blocking socket pair.
    pub fn new() -> std::io::Result<Self> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            pending: Mutex::new(Vec::new()),
            signaled: AtomicBool::new(false),
            writer,
            reader,
            dropped: AtomicU64::new(0),
        })
    }

    /// The fd that turns readable when events are pending.
    pub fn wake_fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Append a batch of events and signal the reader.
    pub fn push_all(&self, events: &mut Vec<MediaEvent>) {
        if events.is_empty() {
            return;
        }
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let room = EVENT_QUEUE_CAPACITY.saturating_sub(pending.len());
            if events.len() > room {
                self.dropped
                    .fetch_add((events.len() - room) as u64, Ordering::Relaxed);
                events.truncate(room);
            }
            pending.append(events);
        }
        if !self.signaled.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a byte is already waiting: fine to ignore.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Take every pending event and clear the wake fd. Never blocks.
    pub fn drain(&self) -> Vec<MediaEvent> {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.reader).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        // Cleared after reading: a push racing with us either sees `false` and
        // writes a fresh byte, or lands in `pending` before we take it below.
        self.signaled.store(false, Ordering::SeqCst);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
