//! One error type for the whole engine; the Python door converts it at one site.
use std::fmt;

/// Everything that can go wrong when driving the engine.
///
/// Misuse variants are named after the misuse; remote-input variants carry the
/// reason text from the parser that refused the input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// A command named a peer id that was never added (or already removed).
    UnknownPeer(String),
    /// `add_peer` with an id that is already in use.
    PeerExists(String),
    /// A command named a server track id that is not published.
    UnknownTrack(String),
    /// A publisher-only call on a subscriber peer, or the other way round.
    WrongPeerRole { peer: String, expected: &'static str },
    /// `publish_track` for a mid the publisher never negotiated.
    UnknownMid { peer: String, mid: String },
    /// The track id is already bound to another publisher m-line.
    TrackExists(String),
    /// The remote SDP could not be parsed or was refused.
    RemoteSdp(String),
    /// `accept_answer` without an outstanding offer.
    NoPendingOffer(String),
    /// `create_offer` when nothing needs negotiating.
    NothingToNegotiate(String),
    /// A remote ICE candidate line could not be parsed.
    BadCandidate(String),
    /// `send_data` before the data channel is open.
    ChannelNotOpen { peer: String, label: &'static str },
    /// The layer index was out of range (0..=2).
    BadLayer(i64),
    /// `add_peer` on a shard that does not exist.
    BadShard(usize),
    /// str0m refused an operation.
    Rtc(String),
    /// Socket or thread set-up failed.
    Io(String),
    /// The engine thread is gone (closed or crashed).
    Closed,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPeer(p) => write!(f, "unknown peer {p:?}"),
            Self::PeerExists(p) => write!(f, "peer {p:?} already exists"),
            Self::UnknownTrack(t) => write!(f, "unknown track {t:?}"),
            Self::WrongPeerRole { peer, expected } => {
                write!(f, "peer {peer:?} is not a {expected} peer")
            }
            Self::UnknownMid { peer, mid } => write!(f, "peer {peer:?} has no m-line {mid:?}"),
            Self::TrackExists(t) => write!(f, "track {t:?} is already published"),
            Self::RemoteSdp(e) => write!(f, "remote SDP refused: {e}"),
            Self::NoPendingOffer(p) => write!(f, "peer {p:?} has no outstanding offer"),
            Self::NothingToNegotiate(p) => write!(f, "peer {p:?} has nothing to negotiate"),
            Self::BadCandidate(e) => write!(f, "bad ICE candidate: {e}"),
            Self::ChannelNotOpen { peer, label } => {
                write!(f, "data channel {label} of peer {peer:?} is not open")
            }
            Self::BadLayer(q) => write!(f, "simulcast quality {q} out of range 0..=2"),
            Self::BadShard(s) => write!(f, "no shard {s}"),
            Self::Rtc(e) => write!(f, "webrtc: {e}"),
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Closed => write!(f, "media engine is closed"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<str0m::RtcError> for EngineError {
    fn from(e: str0m::RtcError) -> Self {
        Self::Rtc(e.to_string())
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Engine result.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
