"""One participant's signaling session over a WebSocket (protocol v0, ``/rtc``).

Tasks, all in the session's nursery::

    reader    binary frame -> SignalRequest -> room transition
    writer    outbox -> binary frame; the ``None`` marker closes the socket

The reader stamps ``outbox.last_seen`` on every frame; the ping timeout and the join
failure (media never connects) are checked by the RoomManager's one liveness sweep.

A session ends when its socket closes, the client leaves, the room removes it
(LeaveRequest first), or it times out. Any of these removes the participant from
its room (RoomManager.register_session) and nothing else is disturbed: errors in
this participant's handling are caught here and end only this session.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import attrs
import trio
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from .auth import Claims
from .lifecycle import ParticipantEvent
from .manager import Outbox, RoomManager
from .room import Room

log = logging.getLogger(__name__)

DisconnectReason = models.DisconnectReason

MAX_FRAME_BYTES = 1 << 20
"""Largest signal frame accepted; SDP offers with many tracks stay far below this."""

MAX_BAD_FRAMES = 10
"""Undecodable frames tolerated (and ignored) before the client is disconnected."""


class SignalTransport(Protocol):
    async def receive(self) -> bytes | str | None:
        """The next frame, or None once the peer closed the connection."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


@attrs.frozen
class JoinParams:
    """What a v0 join carries besides the token."""

    auto_subscribe: bool = True
    reconnect: bool = False
    participant_sid: str = ""
    protocol: int = 0


class SignalSession:
    def __init__(
        self,
        manager: RoomManager,
        room: Room,
        claims: Claims,
        params: JoinParams,
        transport: SignalTransport,
    ) -> None:
        self.manager = manager
        self.room = room
        self.claims = claims
        self.params = params
        self.transport = transport
        self.sid = ""
        self._bad_frames = 0

    async def run(self) -> None:
        """Join the room and serve the participant until the session ends."""
        claims = self.claims
        participant, fx = self.room.join(
            identity=claims.identity,
            now=self.manager.now(),
            name=claims.name,
            metadata=claims.metadata,
            attributes=claims.attributes,
            kind=claims.participant_kind(),
            permission=claims.permission(),
            auto_subscribe=self.params.auto_subscribe,
            client_protocol=self.params.protocol,
        )
        self.sid = participant.sid
        log.info("%s joined room %s as %s", claims.identity, self.room.name, self.sid)
        scope = trio.CancelScope()
        session = self.manager.register_session(self.room, self.sid, scope, watch_liveness=True)
        with scope, session as (outbox, inbox):
            # The media plane must know the participant before the join's bindings
            # (tracks already live in the room) reach it, and the JoinResponse must go
            # out before any subscriber offer: register, apply, then offer.
            media = self.manager.media
            if media is not None:
                media.participant_joined(self.room, self.sid)
            self.manager.apply(self.room, fx)
            # The join's messages (an update to every other participant) would
            # otherwise live as long as the session: quadratic in the room's size.
            del fx
            if media is not None:
                media.offer_initial(self.sid)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, inbox, nursery.cancel_scope)
                await self._reader(outbox)
                nursery.cancel_scope.cancel()
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await self.transport.close()

    # ---- tasks -------------------------------------------------------------------------

    async def _writer(
        self,
        inbox: trio.MemoryReceiveChannel[rtc.SignalResponse | None],
        session_scope: trio.CancelScope,
    ) -> None:
        try:
            async for msg in inbox:
                if msg is None:
                    break
                await self.transport.send(msg.SerializeToString())
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            log.debug("%s: socket gone while sending", self.sid)
        session_scope.cancel()

    async def _reader(self, outbox: Outbox) -> None:
        while True:
            frame = await self.transport.receive()
            if frame is None:
                if outbox.close_reason is None:
                    outbox.close_reason = DisconnectReason.SIGNAL_CLOSE
                return
            outbox.last_seen = trio.current_time()
            req = self._decode(frame)
            if req is None:
                if self._bad_frames > MAX_BAD_FRAMES:
                    self._remove(DisconnectReason.STATE_MISMATCH)
                continue
            try:
                self.handle(req)
            except Exception:
                # A handler bug must not take the server down; it ends this session only.
                log.exception("error handling %s from %s", req.WhichOneof("message"), self.sid)
                self._remove(DisconnectReason.UNKNOWN_REASON)

    def _decode(self, frame: bytes | str) -> rtc.SignalRequest | None:
        if isinstance(frame, str):
            self._bad_frames += 1
            log.warning("text frame from %s ignored: signaling is binary protobuf", self.sid)
            return None
        if len(frame) > MAX_FRAME_BYTES:
            self._bad_frames += 1
            log.warning("oversized frame (%d bytes) from %s ignored", len(frame), self.sid)
            return None
        req = rtc.SignalRequest()
        try:
            req.ParseFromString(frame)
        except DecodeError:
            self._bad_frames += 1
            log.warning("undecodable frame from %s ignored", self.sid)
            return None
        return req

    def _remove(self, reason: DisconnectReason) -> None:
        self.manager.remove(self.room, self.sid, reason)

    # ---- requests ------------------------------------------------------------------------

    def handle(self, req: rtc.SignalRequest) -> None:
        """Apply one SignalRequest from this participant."""
        room, sid, manager, media = self.room, self.sid, self.manager, self.manager.media
        if sid not in room.participants:
            return
        kind = req.WhichOneof("message")
        if kind not in ("ping", "ping_req", "trickle"):
            log.debug("%s -> %s", sid, kind)
        if kind == "offer":
            manager.apply(room, room.transition(sid, ParticipantEvent.NEGOTIATED))
            if media is not None:
                media.publisher_offer(sid, req.offer)
        elif kind == "answer":
            manager.apply(room, room.transition(sid, ParticipantEvent.NEGOTIATED))
            if media is not None:
                media.subscriber_answer(sid, req.answer)
        elif kind == "trickle":
            if media is not None:
                media.trickle(sid, req.trickle)
        elif kind == "add_track":
            manager.apply(room, room.add_track(sid, req.add_track))
        elif kind == "mute":
            pub = room.participants[sid].publications.get(req.mute.sid)
            manager.apply(room, room.set_muted(sid, req.mute.sid, req.mute.muted, by_server=False))
            if media is not None and pub is not None:
                media.set_muted(req.mute.sid, req.mute.muted)
        elif kind == "subscription":
            sub = req.subscription
            manager.apply(
                room,
                room.update_subscription(
                    sid,
                    track_sids=sub.track_sids,
                    subscribe=sub.subscribe,
                    participant_tracks=sub.participant_tracks,
                ),
            )
        elif kind == "track_setting":
            if media is not None:
                media.track_settings(sid, req.track_setting)
        elif kind == "leave":
            self._remove(DisconnectReason.CLIENT_INITIATED)
        elif kind == "update_metadata":
            manager.apply(room, room.update_own_metadata(sid, req.update_metadata))
        elif kind == "ping":
            manager.send(sid, rtc.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "ping_req":
            manager.send(
                sid,
                rtc.SignalResponse(
                    pong_resp=rtc.Pong(
                        last_ping_timestamp=req.ping_req.timestamp,
                        timestamp=int(time.time() * 1000),
                    )
                ),
            )
        else:
            # update_layers, subscription_permission, sync_state, simulate, ...: accepted
            # and ignored until implemented, as clients treat them as best-effort.
            log.debug("%s: %s not handled", sid, kind)
