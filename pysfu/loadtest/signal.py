"""One simulated participant's LiveKit signaling (protocol v0, ``/rtc``) over a WebSocket.

It behaves like a standard LiveKit client so that it works against any compatible
server: join, ping, answer the server's subscriber offers, trickle candidates into the
right PeerConnection, and for publishers AddTrackRequest → TrackPublishedResponse →
publisher offer → answer. Media itself is the :class:`~pysfu._core.LoadGenerator`'s.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import trio
from livekit.protocol import models, rtc
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from pysfu._core import MediaError
from pysfu.errors import PysfuError

from .plan import ParticipantSpec

if TYPE_CHECKING:
    from pysfu._core import LoadGenerator

__all__ = ["ParticipantOutcome", "SignalError", "SimParticipant", "describe_error", "signal_url"]

PROTOCOL_VERSION = "15"
PUBLISHER = rtc.SignalTarget.PUBLISHER
SUBSCRIBER = rtc.SignalTarget.SUBSCRIBER
_TRACK_TYPES = {"audio": models.TrackType.AUDIO, "video": models.TrackType.VIDEO}
_TRACK_SOURCES = {"audio": models.TrackSource.MICROPHONE, "video": models.TrackSource.CAMERA}
_CLOSE_TIMEOUT_S = 2.0


class SignalError(PysfuError):
    """The server refused, dropped or confused a simulated participant."""


@attrs.define
class ParticipantOutcome:
    """What happened to one participant; filled in as it runs (monotonic ns)."""

    spec: ParticipantSpec
    start_ns: int = 0
    """When opening the WebSocket started."""
    join_ns: int = 0
    """When the JoinResponse arrived; 0 if it never did."""
    ready_ns: int = 0
    """When the participant counted as joined (publishers: their offer answered)."""
    error: str = ""
    """Why it failed to join; empty if it joined."""
    dropped: str = ""
    """Why the server ended it early, after it had joined; empty otherwise."""
    sub_peer: int | None = None
    pub_peer: int | None = None
    first_media_ns: int = 0
    """When the subscriber peer got its first media, on the generator's clock."""

    @property
    def joined(self) -> bool:
        return self.ready_ns > 0


def signal_url(base: str, token: str, *, auto_subscribe: bool) -> str:
    """The v0 signaling URL for ``base`` (``ws://``/``wss://``; ``http(s)`` accepted)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urlencode(
        {
            "access_token": token,
            "protocol": PROTOCOL_VERSION,
            "sdk": "python",
            "version": "1.0.0",
            "auto_subscribe": "1" if auto_subscribe else "0",
        }
    )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/rtc", query, ""))


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a report, without a traceback."""
    if isinstance(exc, BaseExceptionGroup):
        # trio-websocket and nurseries wrap single failures in groups.
        return "; ".join(dict.fromkeys(describe_error(e) for e in exc.exceptions))
    if isinstance(exc, ConnectionRejected):
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        detail = f": {body[:200]}" if body else ""
        return f"server refused the connection: HTTP {exc.status_code}{detail}"
    if isinstance(exc, HandshakeError):
        cause = exc.__cause__ or exc.__context__
        return f"could not open the WebSocket: {cause or type(exc).__name__}"
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        detail = f" ({reason.code} {reason.name})" if reason is not None else ""
        return f"signal connection closed{detail}"
    if isinstance(exc, OSError):
        return f"could not connect: {exc}"
    if isinstance(exc, SignalError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class SimParticipant:
    """Runs one participant from WebSocket open to leave; see :meth:`run`."""

    def __init__(self, spec: ParticipantSpec, url: str, token: str, gen: LoadGenerator) -> None:
        self.spec = spec
        self.outcome = ParticipantOutcome(spec)
        self.settled = trio.Event()
        """Set once the participant joined (and published) or failed to."""
        self.finished = trio.Event()
        """Set when :meth:`run` has returned."""
        self._url = signal_url(url, token, auto_subscribe=spec.auto_subscribe)
        self._gen = gen
        self._stop = trio.Event()
        self._phase = "the WebSocket"
        self._ws: WebSocketConnection | None = None
        self._published: dict[str, trio.Event] = {cid: trio.Event() for cid in self._cids}
        self._answered = trio.Event()
        self._offer_id = 0
        self._rtt_ms = 0
        # Candidates wait until their peer has a remote description: an ICE agent can
        # only pair a remote candidate once it knows the remote ufrag/pwd.
        self._ready_peers: dict[int, int] = {}
        self._pending: dict[int, list[str]] = {PUBLISHER: [], SUBSCRIBER: []}

    @property
    def _cids(self) -> list[str]:
        return [t.cid for t in self.spec.tracks]

    def stop(self) -> None:
        """Ask the participant to leave; :meth:`run` then returns."""
        self._stop.set()

    async def run(self, join_timeout_s: float) -> None:
        """Join, publish if a publisher, then stay until :meth:`stop` or the server ends
        the session. Never raises (except Cancelled): failures go to :attr:`outcome`."""
        try:
            await self._run(join_timeout_s)
        except Exception as exc:
            self._fail(describe_error(exc))
        finally:
            self.settled.set()
            self.first_media_ns()  # the peer is about to go, and its figures with it
            for peer in (self.outcome.pub_peer, self.outcome.sub_peer):
                if peer is not None:
                    self._remove_peer(peer)
            self.finished.set()

    def _timeout(self, join_timeout_s: float) -> SignalError:
        return SignalError(f"timed out after {join_timeout_s:g} s waiting for {self._phase}")

    def _fail(self, reason: str) -> None:
        if self._stop.is_set():
            return  # leaving anyway: a server closing first is not a failure
        if self.outcome.joined:
            self.outcome.dropped = reason
        else:
            self.outcome.error = reason

    def first_media_ns(self) -> int:
        """When the subscriber peer got its first media (generator clock); 0 if never."""
        peer = self.outcome.sub_peer
        if not self.outcome.first_media_ns and peer is not None and not self.finished.is_set():
            # A closed generator has nothing more to tell.
            with contextlib.suppress(MediaError):
                self.outcome.first_media_ns = self._gen.peer_info(peer)["first_media_ns"]
        return self.outcome.first_media_ns

    def _remove_peer(self, peer: int) -> None:
        # The generator may already be closed; the peer is gone either way.
        with contextlib.suppress(MediaError):
            self._gen.remove_peer(peer)

    async def _run(self, join_timeout_s: float) -> None:
        self.outcome.start_ns = time.monotonic_ns()
        deadline = trio.current_time() + join_timeout_s
        async with open_websocket_url(
            self._url, connect_timeout=join_timeout_s, disconnect_timeout=_CLOSE_TIMEOUT_S
        ) as ws:
            self._ws = ws
            self._phase = "the JoinResponse"
            with trio.move_on_at(deadline):
                join = await self._first_response(ws)
                self.outcome.join_ns = time.monotonic_ns()
            if not self.outcome.join_ns:
                raise self._timeout(join_timeout_s)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, ws)
                if join.ping_interval > 0:
                    nursery.start_soon(self._ping_loop, join.ping_interval)
                with trio.move_on_at(deadline):
                    await self._publish()
                    self.outcome.ready_ns = time.monotonic_ns()
                if not self.outcome.ready_ns:
                    raise self._timeout(join_timeout_s)
                self.settled.set()
                await self._stop.wait()
                await self._send(
                    rtc.SignalRequest(
                        leave=rtc.LeaveRequest(
                            reason=models.DisconnectReason.CLIENT_INITIATED,
                            action=rtc.LeaveRequest.Action.DISCONNECT,
                        )
                    )
                )
                nursery.cancel_scope.cancel()

    async def _first_response(self, ws: WebSocketConnection) -> rtc.JoinResponse:
        msg = await self._receive(ws)
        kind = msg.WhichOneof("message")
        if kind == "leave":
            reason = models.DisconnectReason.Name(msg.leave.reason)
            raise SignalError(f"server sent leave instead of join ({reason})")
        if kind != "join":
            raise SignalError(f"first message was {kind!r}, not join")
        return msg.join

    async def _receive(self, ws: WebSocketConnection) -> rtc.SignalResponse:
        while True:
            data = await ws.get_message()
            if isinstance(data, bytes):  # protocol v0 frames are binary; skip anything else
                msg = rtc.SignalResponse()
                msg.ParseFromString(data)
                return msg

    async def _send(self, req: rtc.SignalRequest) -> None:
        assert self._ws is not None
        await self._ws.send_message(req.SerializeToString())

    async def _read_loop(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                msg = await self._receive(ws)
                if msg.WhichOneof("message") == "leave":
                    if self._stop.is_set():
                        return
                    reason = models.DisconnectReason.Name(msg.leave.reason)
                    raise SignalError(f"server sent leave ({reason})")
                await self._handle(msg)
        except ConnectionClosed:
            if not self._stop.is_set():
                raise

    async def _handle(self, msg: rtc.SignalResponse) -> None:
        kind = msg.WhichOneof("message")
        if kind == "offer":
            await self._on_offer(msg.offer)
        elif kind == "answer":
            if self.outcome.pub_peer is not None:
                self._gen.accept_answer(self.outcome.pub_peer, msg.answer.sdp)
                self._peer_ready(PUBLISHER, self.outcome.pub_peer)
                self._answered.set()
        elif kind == "trickle":
            self._on_trickle(msg.trickle)
        elif kind == "track_published":
            event = self._published.get(msg.track_published.cid)
            if event is not None:
                event.set()
        elif kind == "pong_resp":
            self._rtt_ms = max(0, _wall_ms() - msg.pong_resp.last_ping_timestamp)
        # Everything else (update, refresh_token, speakers_changed...) does not change
        # what a synthetic participant does.

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        if self.outcome.sub_peer is None:
            self.outcome.sub_peer = self._gen.add_peer()
        peer = self.outcome.sub_peer
        answer = self._gen.accept_offer(peer, offer.sdp)
        self._peer_ready(SUBSCRIBER, peer)
        await self._send(
            rtc.SignalRequest(answer=rtc.SessionDescription(type="answer", sdp=answer, id=offer.id))
        )

    def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        try:
            init = json.loads(trickle.candidateInit)
        except ValueError:
            return
        candidate = init.get("candidate") if isinstance(init, dict) else None
        if not isinstance(candidate, str) or not candidate:
            return  # end-of-candidates
        peer = self._ready_peers.get(trickle.target)
        if peer is None:
            self._pending.setdefault(trickle.target, []).append(candidate)
        else:
            self._gen.add_remote_candidate(peer, candidate)

    def _peer_ready(self, target: int, peer: int) -> None:
        self._ready_peers[target] = peer
        for candidate in self._pending.pop(target, []):
            self._gen.add_remote_candidate(peer, candidate)

    async def _publish(self) -> None:
        if not self.spec.tracks:
            return
        for track in self.spec.tracks:
            video = track.kind == "video"
            await self._send(
                rtc.SignalRequest(
                    add_track=rtc.AddTrackRequest(
                        cid=track.cid,
                        name=track.name,
                        type=_TRACK_TYPES[track.kind],
                        source=_TRACK_SOURCES[track.kind],
                        width=1280 if video else 0,
                        height=720 if video else 0,
                    )
                )
            )
        for track in self.spec.tracks:
            self._phase = f"track_published for {track.cid}"
            await self._published[track.cid].wait()
        peer = self._gen.add_peer()
        self.outcome.pub_peer = peer
        sdp = self._gen.publisher_offer(peer, [(t.cid, t.kind, t.kbps) for t in self.spec.tracks])
        self._offer_id += 1
        self._phase = "the answer to the publisher offer"
        offer = rtc.SessionDescription(type="offer", sdp=sdp, id=self._offer_id)
        await self._send(rtc.SignalRequest(offer=offer))
        await self._answered.wait()

    async def _ping_loop(self, interval_s: int) -> None:
        # Both forms, as livekit-client sends them: older servers only know `ping`.
        while True:
            await trio.sleep(interval_s)
            now = _wall_ms()
            await self._send(rtc.SignalRequest(ping=now))
            await self._send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=now, rtt=self._rtt_ms)))


def _wall_ms() -> int:
    return int(time.time() * 1000)
