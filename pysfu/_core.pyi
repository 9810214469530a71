"""Typed face of the compiled media core (Rust, ``rust/python``).

The engine runs on its own thread; every ``MediaEngine`` method below releases the
GIL while it waits for that thread. Errors from the engine raise ``MediaError``;
unknown peer or track ids are errors, never crashes.
"""

from typing import Literal, TypeAlias, final

__all__ = [
    "AudioLevels",
    "DataReceived",
    "LinkStats",
    "LoadGenerator",
    "MediaEngine",
    "MediaError",
    "PeerClosed",
    "PeerConnected",
    "StreamStateChanged",
    "TrackArrived",
    "core_version",
    "interface_addresses",
]

def core_version() -> str:
    """Version of the compiled media core."""

def interface_addresses() -> list[tuple[str, str, bool, bool]]:
    """Every interface address as ``(interface, ip, up, loopback)`` (getifaddrs)."""

class MediaError(Exception):
    """An error reported by the media engine (unknown peer/track, bad SDP or
    candidate, data channel not open, engine closed...)."""

@final
class PeerConnected:
    """ICE and DTLS are up for a peer."""

    @property
    def peer_id(self) -> str: ...
    @property
    def kind(self) -> Literal["peer_connected"]: ...

@final
class PeerClosed:
    """A peer failed, timed out (ICE), or the remote closed it. Sent at most once
    per peer; not sent for ``remove_peer``."""

    @property
    def peer_id(self) -> str: ...
    @property
    def reason(self) -> str:
        """One of: ice disconnected, closed by remote, closed, webrtc error."""
    @property
    def kind(self) -> Literal["peer_closed"]: ...

@final
class TrackArrived:
    """First RTP on a publisher m-line (once per mid)."""

    @property
    def peer_id(self) -> str: ...
    @property
    def mid(self) -> str: ...
    @property
    def track_id(self) -> str:
        """msid track id of the m-line in the publisher's offer (the client's cid)."""
    @property
    def kind(self) -> Literal["audio", "video"]:
        """Media kind (unlike the other events, where ``kind`` names the event)."""
    @property
    def rid(self) -> str | None:
        """Simulcast rid of the first packet ("q", "h", "f"), None without simulcast."""
    @property
    def codec(self) -> str:
        """Lower-case codec name: "opus", "vp8", "h264", "vp9", "av1"."""

@final
class DataReceived:
    """A message on a peer's ``_reliable`` or ``_lossy`` data channel."""

    @property
    def peer_id(self) -> str: ...
    @property
    def reliable(self) -> bool: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def kind(self) -> Literal["data_received"]: ...

@final
class AudioLevels:
    """Every 400 ms while audio tracks exist (and once after the last one went):
    each audio track's RFC 6464 levels since the last such event, summarised in
    the engine (packets never cross the door)."""

    @property
    def levels(self) -> list[tuple[str, int, int, int]]:
        """(track id, observed ms, ms at speech level or louder, loudest level
        0..127 with 0 loudest, 127 when none was at speech level)."""
    @property
    def kind(self) -> Literal["audio_levels"]: ...

@final
class LinkStats:
    """Every second: each peer's link (from str0m's stream stats) since the last
    such event."""

    @property
    def links(self) -> list[tuple[str, float | None, float, float | None]]:
        """(peer id, fraction lost 0..1 or None without a receiver report, jitter
        ms, round-trip time ms or None)."""
    @property
    def kind(self) -> Literal["link_stats"]: ...

@final
class StreamStateChanged:
    """The bandwidth allocator paused a video track to a subscriber (its estimate
    does not fit even the lowest layer; nothing is forwarded), or resumed it."""

    @property
    def peer_id(self) -> str:
        """The subscriber's peer."""
    @property
    def track_id(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def kind(self) -> Literal["stream_state_changed"]: ...

_MediaEvent: TypeAlias = (
    PeerConnected
    | PeerClosed
    | TrackArrived
    | DataReceived
    | AudioLevels
    | LinkStats
    | StreamStateChanged
)

@final
class MediaEngine:
    """One UDP port shared by all peers, an engine thread, commands in, events out.

    Peers are PeerConnections: a *publisher* peer (client offers, ``accept_offer``)
    or a *subscriber* peer (server offers, ``create_offer``/``accept_answer``).
    """

    def __new__(
        cls,
        *,
        bind_ip: str = "127.0.0.1",
        udp_port: int = 7882,
        advertise_ip: str | None = None,
        ice_disconnected_grace: float = 10.0,
        bandwidth_estimation: bool = True,
        allow_pause: bool = False,
        audio_nack: bool = True,
        advertise_ips: list[str] = ...,
        tcp_port: int | None = None,
        workers: int = 1,
    ) -> MediaEngine:
        """Bind the UDP socket (port 0: ephemeral) and start the engine thread.
        ``advertise_ip`` is the address put in candidates (default: ``bind_ip``, or a
        guessed local address when binding 0.0.0.0). ``ice_disconnected_grace``: seconds
        a peer's ICE may stay disconnected before the peer is closed (``PeerClosed``
        with reason ``"ice disconnected"``); a control plane that keeps a frozen
        client's session through a resume window passes at least that window.
        ``bandwidth_estimation``: subscriber peers estimate their bandwidth (TWCC)
        and each one's simulcast layers are capped to fit it, stepping down on
        congestion and probing back up (str0m then paces their media; on by default).
        ``allow_pause``: with it, video whose lowest layer does not fit is paused
        (``StreamStateChanged``); without (the default), it keeps its lowest layer.
        ``audio_nack``: Opus is negotiated with NACK, lost publisher audio is NACKed
        and subscribers' audio NACKs are answered (on by default; it costs CPU on
        every forwarded packet).
        ``advertise_ips``, when given, lists every address put in host candidates (it
        replaces ``advertise_ip``); a socket bound to a wildcard reports which one each
        datagram reached. ``tcp_port`` adds passive ICE-TCP host candidates on that
        port for every advertised address (0: ephemeral; None: UDP only).
        ``workers``: engine threads (shards) sharing the UDP port; 0 = one per core.
        Raises MediaError if binding fails, ValueError for a negative or non-finite
        grace."""
    @property
    def udp_port(self) -> int:
        """The bound UDP port."""
    @property
    def tcp_port(self) -> int | None:
        """The bound ICE-TCP port, or None without TCP."""
    def advertised(self) -> list[tuple[str, str, int]]:
        """Advertised host candidates as ``("udp" | "tcp", ip, port)``."""
    def wake_fd(self) -> int:
        """A fd that turns readable when events are pending (for
        ``trio.lowlevel.wait_readable``). ``drain_events`` clears it."""
    def drain_events(self) -> list[_MediaEvent]:
        """All pending events, oldest first. Never blocks."""
    @property
    def shards(self) -> int:
        """Number of engine threads (shards)."""
    def add_peer(self, peer_id: str, *, subscriber: bool, shard: int | None = None) -> None:
        """Create a peer on ``shard`` (None: the one with the fewest peers). Its tracks
        are homed there; subscribers elsewhere get them relayed. MediaError if the id
        is taken or the shard does not exist."""
    def remove_peer(self, peer_id: str) -> None:
        """Close a peer, unpublish its tracks and drop its subscriptions. Idempotent."""
    def accept_offer(self, peer_id: str, sdp: str) -> str:
        """Publisher: apply the client's offer, return the answer SDP (ICE-lite, host
        candidate included, simulcast rids mirrored as recv). An offer with new
        ``ice-ufrag``/``ice-pwd`` is an ICE restart (a resuming client): the answer
        carries new credentials, and the client's checks reach the peer from any
        address."""
    def create_offer(self, peer_id: str, *, ice_restart: bool = False) -> str:
        """Subscriber: an offer with the server's data channels (``_reliable``,
        ``_lossy``; always in the first offer), a sendonly m-line per subscribed track,
        unsubscribed/unpublished tracks' m-lines inactive. When nothing changed since
        the last offer, that offer is returned again and its answer is ignored.

        ``ice_restart=True``: the offer carries new ICE credentials (an ICE restart,
        for a client whose transport failed or whose network changed); it is always a
        new offer. The restart completes with ``accept_answer`` of the client's answer
        (which has new credentials of its own); media keeps the same m-lines, SSRCs
        and DTLS session. Checks naming the new credentials reach the peer from any
        address as soon as the offer exists."""
    def accept_answer(self, peer_id: str, sdp: str) -> None:
        """Subscriber: apply the client's answer to the last offer."""
    def add_remote_candidate(self, peer_id: str, candidate: str) -> None:
        """Add a trickled ``candidate:...`` line. MediaError on garbage."""
    def local_candidates(self, peer_id: str) -> list[str]:
        """Our ``candidate:...`` lines (also present in every SDP we produce)."""
    def publish_track(self, *, publisher: str, mid: str, track_id: str) -> None:
        """Bind a publisher m-line (seen in TrackArrived) to a server track id. A mid
        already bound is rebound (the old track is unpublished)."""
    def unpublish_track(self, track_id: str) -> None:
        """Stop forwarding a track; its subscriber m-lines turn inactive on the next offer."""
    def subscribe(self, *, subscriber: str, track_id: str, stream_id: str) -> None:
        """Forward a track to a subscriber peer; its m-line (msid ``<stream_id> <track_id>``)
        appears in the next ``create_offer``. Requests a keyframe; video starts at
        the next keyframe. Resubscribing reuses the m-line and continues seq/ts."""
    def subscribe_on_mid(self, *, subscriber: str, track_id: str, stream_id: str, mid: str) -> None:
        """Single PeerConnection (``/rtc/v1``): forward ``track_id`` on ``mid``, an
        m-line the client offered recvonly (answered sendonly). Each mid is used once;
        MediaError when it is unknown, of the other kind, not sending, or taken."""
    def bind_many(self, items: list[tuple[str, str, str | None]]) -> list[str | None]:
        """``(subscriber, track_id, stream_id)`` subscribes, ``(subscriber, track_id,
        None)`` unsubscribes, in one round trip per shard and in order per subscriber.
        Per item: None when done, else the error message (as MediaError would say)."""
    def set_layers(self, items: list[tuple[str, str, int, bool, int, int]]) -> list[str | None]:
        """``(subscriber, track_id, quality, disabled, fps, priority)`` per down track,
        one round trip per shard; fps 0 is any frame rate, else VP8 temporal layers
        above what gives it are not sent; priority 1 is the highest, 0 unset (served
        after every set one when bandwidth is short). Per item: None when done, else
        the error message."""
    def unsubscribe(self, *, subscriber: str, track_id: str) -> None:
        """Stop forwarding at once; the m-line turns inactive on the next offer."""
    def set_muted(self, track_id: str, muted: bool) -> None:
        """Muted tracks forward nothing; unmuting requests a keyframe and waits for it."""
    def set_layer(self, *, subscriber: str, track_id: str, quality: int) -> None:
        """Simulcast quality for one subscriber: 0 LOW (q), 1 MEDIUM (h), 2 HIGH (f,
        default). The best live layer not above it is forwarded; switches happen
        on a keyframe of the new layer."""
    def set_disabled(self, *, subscriber: str, track_id: str, disabled: bool) -> None:
        """Stop (``disabled``) or resume forwarding a track to one subscriber, without
        renegotiation (the client hid or showed it); resuming video waits for a
        keyframe (one is requested)."""
    def send_data(self, peer_id: str, *, reliable: bool, payload: bytes) -> None:
        """Send a binary message on the peer's ``_reliable``/``_lossy`` channel.
        MediaError if that channel is not open yet."""
    def stats(self) -> dict[str, int]:
        """Counters: packets_in/out, bytes_in/out, rtp_in, rtp_forwarded, rtp_dropped,
        keyframe_requests, nacks_in/out, plis_in/out, firs_in/out (RTCP feedback from
        subscribers / to publishers), audio_resent (audio packets sent again for a
        subscriber's NACK), rtp_red_recovered (audio packets lost from a publisher and
        recovered from RED's redundancy for subscribers without RED),
        packets_lost_in/out (media lost from publishers, estimated / to subscribers,
        as reported), unroutable, bad_datagrams,
        send_errors, events_dropped;
        gauges: peers, tracks, addresses.

        ``unroutable`` counts the datagrams no peer got (the media port is public),
        split by reason: ``dropped_not_webrtc`` (first byte neither STUN, DTLS nor
        RTP/RTCP), ``dropped_unknown_ufrag`` (STUN from an unknown address naming no
        peer's ufrag), ``dropped_unknown_source`` (DTLS/RTP/RTCP from an address no
        peer uses). ``packets_in`` counts every datagram read."""
    def close(self) -> None:
        """Stop the engine thread and close the socket. Idempotent; later calls raise
        MediaError."""
    def __enter__(self) -> MediaEngine: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

@final
class LoadGenerator:
    """Synthetic WebRTC peers for ``pysfu loadtest``, driven by one Rust thread.

    Each peer is a client PeerConnection (full ICE, DTLS, SRTP) with its own UDP
    socket, so many peers can talk to one server port on loopback. Publisher peers
    send synthetic RTP (Opus-sized audio, VP8-shaped video, no encoding) once
    connected; every payload ends in a trailer (track number, sequence counter, send
    time) from which subscribers measure loss and forwarding latency. Unknown peer
    numbers and bad SDP raise MediaError.
    """

    def __new__(cls, *, local_ip: str = "127.0.0.1") -> LoadGenerator:
        """Start the generator thread; peers bind UDP sockets on ``local_ip``."""
    def now_ns(self) -> int:
        """The generator's monotonic clock in ns (the clock of every ``*_ns`` value)."""
    def add_peer(self) -> int:
        """A new peer with its own UDP socket; returns its number."""
    def publisher_offer(self, peer: int, tracks: list[tuple[str, str, int]]) -> str:
        """Offer SDP with one sendonly m-line per ``(cid, kind, kbps)`` track, kind
        "audio" (Opus, 20 ms packets) or "video" (VP8, 30 fps, keyframe every 2 s),
        msid track id = cid. Media starts when the peer connects."""
    def accept_answer(self, peer: int, sdp: str) -> None:
        """Apply the server's answer to ``publisher_offer``."""
    def accept_offer(self, peer: int, sdp: str) -> str:
        """Subscriber side: apply the server's offer, return our answer SDP."""
    def add_remote_candidate(self, peer: int, candidate: str) -> None:
        """Add a trickled ``candidate:...`` line from the server."""
    def remove_peer(self, peer: int) -> None:
        """Close the peer and its socket. Idempotent."""
    def peer_info(self, peer: int) -> dict[str, int]:
        """``connected_ns`` and ``first_media_ns`` (0 until it happens),
        ``packets_received``, ``packets_sent``."""
    def stats(self) -> dict[str, int]:
        """Totals since the last ``reset_stats``: packets_sent, bytes_sent,
        packets_received, bytes_received, packets_expected (per received stream,
        highest minus lowest sequence counter plus one), latency_samples,
        latency_p50_us, latency_p95_us, latency_p99_us, latency_max_us;
        gauges: peers, peers_connected."""
    def reset_stats(self) -> None:
        """Start a new measurement window (after ramp-up)."""
    def close(self) -> None:
        """Stop the thread and close all sockets. Idempotent."""
