"""One signal connection (a WebSocket, protocol v0 at ``/rtc``) serving a
:class:`~pysfu.runtime.sessions.ParticipantSession`.

Tasks, in the connection's nursery::

    reader    binary frame -> SignalRequest -> pysfu.signal.v0.handle
    writer    attachment channel -> binary frame; ``None`` closes the socket

The connection attaches to its session on start and detaches when it ends; the
participant outlives it (the client may resume). Only a LeaveRequest, a removal or
the end of the resume window ends the participant. Errors in handling one
participant's requests end only that participant.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from ..runtime import sessions
from ..runtime.manager import RoomManager
from ..runtime.sessions import Attachment, ParticipantSession
from . import v0

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


async def serve(
    manager: RoomManager,
    session: ParticipantSession,
    transport: SignalTransport,
    *,
    first: rtc.SignalResponse | None = None,
) -> None:
    """Attach ``transport`` to ``session`` and serve it until the connection ends
    (``first``, a ReconnectResponse on resume, goes out before anything else)."""
    send, receive = trio.open_memory_channel[rtc.SignalResponse | None](sessions.OUTBOX_CAPACITY)
    scope = trio.CancelScope()
    with manager.connection(), scope:
        attachment = session.attach(send, scope, now=trio.current_time(), first=first)
        if session.slow:
            room = manager.room_of(session)
            if room is not None:
                manager.remove(room, session.sid, DisconnectReason.SIGNAL_CLOSE)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_writer, transport, receive, nursery.cancel_scope, session)
                await _Reader(manager, session, attachment, transport).run()
                nursery.cancel_scope.cancel()
        finally:
            session.detach(attachment, now=trio.current_time())
            manager.connection_lost(session)
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await transport.close()


async def _writer(
    transport: SignalTransport,
    inbox: trio.MemoryReceiveChannel[rtc.SignalResponse | None],
    connection_scope: trio.CancelScope,
    session: ParticipantSession,
) -> None:
    try:
        async for msg in inbox:
            if msg is None:
                break
            await transport.send(msg.SerializeToString())
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        log.debug("%s: socket gone while sending", session.sid)
    connection_scope.cancel()


class _Reader:
    def __init__(
        self,
        manager: RoomManager,
        session: ParticipantSession,
        attachment: Attachment,
        transport: SignalTransport,
    ) -> None:
        self.manager = manager
        self.session = session
        self.attachment = attachment
        self.transport = transport
        self.bad_frames = 0

    async def run(self) -> None:
        session = self.session
        while True:
            frame = await self.transport.receive()
            if frame is None:
                return
            req = self._decode(frame)
            session.seen(
                self.attachment,
                now=trio.current_time(),
                ping=req is not None and req.WhichOneof("message") in ("ping", "ping_req"),
            )
            room = self.manager.room_of(session)
            if room is None:
                # The participant is gone: the writer flushes its LeaveRequest, then
                # closes; until then frames are read and ignored.
                continue
            if req is None:
                if self.bad_frames > MAX_BAD_FRAMES:
                    self.manager.remove(room, session.sid, DisconnectReason.STATE_MISMATCH)
                continue
            try:
                v0.handle(self.manager, room, session, req)
            except Exception:
                # A handler bug must not take the server down; it ends this participant.
                log.exception("error handling %s from %s", req.WhichOneof("message"), session.sid)
                self.manager.remove(room, session.sid, DisconnectReason.UNKNOWN_REASON)

    def _decode(self, frame: bytes | str) -> rtc.SignalRequest | None:
        sid = self.session.sid
        if isinstance(frame, str):
            self.bad_frames += 1
            log.warning("text frame from %s ignored: signaling is binary protobuf", sid)
            return None
        if len(frame) > MAX_FRAME_BYTES:
            self.bad_frames += 1
            log.warning("oversized frame (%d bytes) from %s ignored", len(frame), sid)
            return None
        req = rtc.SignalRequest()
        try:
            req.ParseFromString(frame)
        except DecodeError:
            self.bad_frames += 1
            log.warning("undecodable frame from %s ignored", sid)
            return None
        return req
