"""A participant's life at run time: :class:`ParticipantSession`.

A session begins when its participant joins a room and ends when the participant
leaves it (it left, was removed, or its resume window passed). Signal connections
come and go under it: a WebSocket *attaches* on join or resume and *detaches* when it
closes, drops, or is replaced by a newer one. While detached, messages for the
participant wait in the session (bounded) and are delivered, in order, on resume.

Liveness, as the reference server (PROTOCOL.md §13):

- a connection is alive while frames arrive; clients that send signal-level pings are
  held to the ping timeout, and missing it drops their *connection*, not the
  participant. Clients that never ping (server-sdk-go) rely on WebSocket ping frames
  and TCP, which end the connection when the peer is gone;
- a detached session is kept :data:`RESUME_WINDOW_S` for the client to resume, then
  its participant is removed.

The manager owns the sessions and their sweep; this module holds no Trio task.
"""

from __future__ import annotations

import enum
import logging
from collections import deque

import attrs
import trio
from livekit.protocol import models, rtc

from ..auth import Claims

log = logging.getLogger(__name__)

DisconnectReason = models.DisconnectReason

OUTBOX_CAPACITY = 1024
"""Signal messages queued per connection before its participant counts as too slow
to keep (and messages held while detached)."""

RESUME_WINDOW_S = 20.0
"""How long a participant whose signal connection went away is kept for its client
to resume (the SDKs retry for longer; the reference keeps a participant with
connected media until its transport fails)."""

MEDIA_FAILURE_GRACE_S = 2.0
"""How long a participant whose media transport closed is kept before it is removed
with MEDIA_FAILURE: a leaving client closes its DTLS right after its LeaveRequest,
and the close may arrive first."""

JOIN_FAILURE_TIMEOUT_S = 60.0
"""A participant whose media never connects is removed after this (as LiveKit)."""


class SessionState(enum.Enum):
    ATTACHED = "attached"
    """A signal connection serves the participant."""
    DETACHED = "detached"
    """No connection: messages wait, the resume window runs."""
    ENDED = "ended"
    """The participant left its room; terminal."""


@attrs.define(eq=False)
class Attachment:
    """One signal connection's hold on a session."""

    channel: trio.MemorySendChannel[rtc.SignalResponse | None]
    """The connection's writer reads this; ``None`` means flush, then close."""
    cancel_scope: trio.CancelScope
    """Cancels the connection's tasks (a dead or replaced connection)."""
    last_seen: float
    """When the last frame arrived on it (Trio clock)."""
    pings: bool = False
    """The client sends signal-level pings, so the ping timeout applies to it."""


class ParticipantSession:
    """One participant's life in one room, across signal connections."""

    def __init__(self, room_name: str, sid: str, claims: Claims, *, now: float) -> None:
        self.room_name = room_name
        self.sid = sid
        self.identity = claims.identity
        self.claims = claims
        """The claims of the newest token the client presented (join or resume)."""
        self.joined_at = now
        self.attachment: Attachment | None = None
        self.detached_at: float | None = now
        self.close_reason: DisconnectReason | None = None
        self.slow = False
        """Set once when the participant could not keep up; it is then removed."""
        self.leaving = False
        """The client said LeaveRequest: what follows (transports closing) is its leave."""
        self.media_failed_at: float | None = None
        """When the engine closed its media transport (Trio clock)."""
        self.refreshed_at = now
        """When the client was last sent a refreshed token (Trio clock)."""
        self._pending: deque[rtc.SignalResponse] = deque()
        self._ended = trio.Event()

    # ---- state ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        if self._ended.is_set():
            return SessionState.ENDED
        return SessionState.ATTACHED if self.attachment is not None else SessionState.DETACHED

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # ---- messages ---------------------------------------------------------------------------

    def deliver(self, msg: rtc.SignalResponse) -> bool:
        """Queue one message for the client; False when it is too slow to keep."""
        if self._ended.is_set():
            return True
        if self.attachment is None:
            if len(self._pending) >= OUTBOX_CAPACITY:
                return False
            self._pending.append(msg)
            return True
        try:
            self.attachment.channel.send_nowait(msg)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The connection is winding down; keep the message for a resume.
            self._pending.append(msg)
        return True

    # ---- connections --------------------------------------------------------------------------

    def attach(
        self,
        channel: trio.MemorySendChannel[rtc.SignalResponse | None],
        cancel_scope: trio.CancelScope,
        *,
        now: float,
        first: rtc.SignalResponse | None = None,
    ) -> Attachment:
        """Serve the participant over a new connection: ``first`` (a ReconnectResponse)
        goes out before the messages held while detached. A connection still attached
        is replaced: its tasks are cancelled without ending the session."""
        if self.attachment is not None:
            log.info("%s: a newer signal connection replaces the current one", self.sid)
            self.attachment.cancel_scope.cancel()
            self.attachment.channel.close()
        attachment = Attachment(channel=channel, cancel_scope=cancel_scope, last_seen=now)
        self.attachment = attachment
        self.detached_at = None
        held = list(self._pending)
        self._pending.clear()
        if first is not None:
            held.insert(0, first)
        for msg in held:
            try:
                channel.send_nowait(msg)
            except trio.WouldBlock:
                self.slow = True
                break
        if self._ended.is_set():
            # Removed before this connection attached (a newer join of the same
            # identity): it still gets what was queued, its LeaveRequest last.
            channel.send_nowait(None) if not self.slow else cancel_scope.cancel()
        return attachment

    def detach(self, attachment: Attachment, *, now: float) -> None:
        """The connection ``attachment`` ended; the session waits for a resume."""
        if self.attachment is not attachment:
            return  # already replaced by a newer connection
        self.attachment = None
        self.detached_at = now
        attachment.channel.close()

    def replace_connection(self, *, now: float) -> None:
        """A resume is under way: the current connection (if any) stops serving now,
        so that what is queued for the resume waits for the new one."""
        if self.attachment is not None:
            old = self.attachment
            old.cancel_scope.cancel()
            self.detach(old, now=now)

    def discard_pending(self, kind: str) -> None:
        """Forget queued messages of ``kind`` (a resume voids offers made in the gap)."""
        self._pending = deque(m for m in self._pending if m.WhichOneof("message") != kind)

    def drop_connection(self) -> None:
        """End the current connection (it stopped answering) but not the session."""
        if self.attachment is not None:
            self.attachment.cancel_scope.cancel()

    def end(self, reason: DisconnectReason) -> None:
        """The participant left its room: flush what is queued (its LeaveRequest),
        then close the connection."""
        if self._ended.is_set():
            return
        self.close_reason = reason
        self._ended.set()
        attachment = self.attachment
        if attachment is None:
            return  # what is pending goes to a connection that attaches still
        try:
            attachment.channel.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # Cannot even queue the end marker: stop the connection outright.
            attachment.cancel_scope.cancel()

    # ---- liveness ------------------------------------------------------------------------------

    def seen(self, attachment: Attachment, *, now: float, ping: bool = False) -> None:
        attachment.last_seen = now
        if ping:
            attachment.pings = True

    def ping_overdue(self, now: float, timeout: float) -> bool:
        a = self.attachment
        return a is not None and a.pings and now - a.last_seen > timeout

    def media_failure_final(self, now: float) -> bool:
        return (
            self.media_failed_at is not None and now - self.media_failed_at > MEDIA_FAILURE_GRACE_S
        )

    def resume_window_passed(self, now: float) -> bool:
        return self.detached_at is not None and now - self.detached_at > RESUME_WINDOW_S
