"""Rooms at run time: the Trio layer that owns each room's lifetime and performs the
effects that pure room transitions return.

Task layout::

    RoomManager.run (nursery)
    ├── one lifetime task per room: sleeps until the room's close deadline
    │   (empty_timeout / departure_timeout), re-armed whenever the room changes
    └── the liveness sweep: once a second, removes the participants of watched
        sessions that went silent (ping timeout) or never connected their media

Participant sessions run in their connection's task (the HTTP server owns it) and
register a cancel scope and an outbox here; closing a room cancels them after their
LeaveRequest is flushed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import attrs
import trio
from livekit.protocol import models, rtc, webhook

from .errors import PysfuError
from .lifecycle import ParticipantState
from .room import Binding, DataDelivery, Effects, Room, ServerIdentity

log = logging.getLogger(__name__)

DisconnectReason = models.DisconnectReason

OUTBOX_CAPACITY = 1024
"""Signal messages queued per participant before it counts as too slow to keep."""

EVENT_QUEUE_CAPACITY = 1024
"""Room events buffered per ``events()`` observer before new ones are dropped for it."""

JOIN_FAILURE_TIMEOUT_S = 60.0
"""A participant whose media never connects is removed after this (as LiveKit)."""

LIVENESS_SWEEP_INTERVAL_S = 1.0
"""How often the one liveness sweep walks the watched sessions."""

UPDATE_BATCH_INTERVAL_S = 0.5
"""How long others may wait to hear of a participant that publishes nothing (joins and
state changes; see Room.flush_updates). The reference server waits up to 3 s."""


class RoomNotFound(PysfuError):
    pass


class ParticipantNotFound(PysfuError):
    pass


class WebhookSink(Protocol):
    def send_nowait(self, event: webhook.WebhookEvent) -> None: ...


class MediaPlane(Protocol):
    """What signaling and rooms need from the media side (see pysfu.media). Calls
    never block; replies (answers, offers, candidates) go out through
    :meth:`RoomManager.send`."""

    def participant_joined(self, room: Room, sid: str) -> None: ...

    def offer_initial(self, sid: str) -> None: ...

    def publisher_offer(self, sid: str, offer: rtc.SessionDescription) -> None: ...

    def subscriber_answer(self, sid: str, answer: rtc.SessionDescription) -> None: ...

    def trickle(self, sid: str, trickle: rtc.TrickleRequest) -> None: ...

    def set_muted(self, track_sid: str, muted: bool) -> None: ...

    def track_settings(self, sid: str, settings: rtc.UpdateTrackSettings) -> None: ...

    def apply_bindings(self, bindings: list[Binding]) -> None: ...

    def deliver_data(self, deliveries: list[DataDelivery]) -> None: ...

    def tracks_unpublished(self, track_sids: list[str]) -> None: ...

    def participant_removed(self, sid: str) -> None: ...


class _NullWebhooks:
    def send_nowait(self, event: webhook.WebhookEvent) -> None:
        pass


@attrs.define(eq=False)
class Outbox:
    """The manager's handle on one participant session."""

    room: str
    send_channel: trio.MemorySendChannel[rtc.SignalResponse | None]
    """``None`` is the end-of-session marker: flush what came before, then close."""
    cancel_scope: trio.CancelScope
    close_reason: DisconnectReason | None = None
    joined_at: float = 0.0
    """When the session registered (Trio clock)."""
    last_seen: float | None = None
    """When the last frame arrived from the client (Trio clock), kept up to date by
    the session; ``None`` for sessions the liveness sweep does not watch."""


@attrs.define(eq=False)
class _RoomHandle:
    room: Room
    changed: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class RoomDefaults:
    empty_timeout_s: float = 300.0
    departure_timeout_s: float = 20.0


class RoomManager:
    """Registry of live rooms and sessions; every room mutation goes through
    :meth:`apply`, the one place effects are carried out."""

    def __init__(
        self,
        *,
        defaults: RoomDefaults | None = None,
        server: ServerIdentity | None = None,
        webhooks: WebhookSink | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.defaults = defaults or RoomDefaults()
        self.server = server or ServerIdentity()
        self.webhooks: WebhookSink = webhooks or _NullWebhooks()
        self.media: MediaPlane | None = None
        self._clock = clock
        self._rooms: dict[str, _RoomHandle] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._observers: list[trio.MemorySendChannel[webhook.WebhookEvent]] = []
        self._nursery: trio.Nursery | None = None
        self._no_sessions = trio.Event()
        self._no_sessions.set()

    # ---- lifetime ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._liveness_sweep)
            nursery.start_soon(self._flush_update_batches)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    self.close_all(DisconnectReason.SERVER_SHUTDOWN)
                    # Give sessions a moment to flush their LeaveRequest.
                    with trio.move_on_after(1):
                        await self.sessions_closed()

    def now(self) -> float:
        return self._clock()

    # ---- rooms ---------------------------------------------------------------------

    @property
    def rooms(self) -> list[Room]:
        return [h.room for h in self._rooms.values()]

    def room(self, name: str) -> Room | None:
        handle = self._rooms.get(name)
        return handle.room if handle is not None else None

    def require_room(self, name: str) -> Room:
        room = self.room(name)
        if room is None:
            raise RoomNotFound(f"room {name!r} does not exist")
        return room

    def create_room(
        self,
        name: str,
        *,
        empty_timeout_s: float | None = None,
        departure_timeout_s: float | None = None,
        max_participants: int = 0,
        metadata: str = "",
    ) -> Room:
        """Return the room called ``name``, creating it if needed (CreateRoom is
        idempotent in LiveKit; a second call does not change the timeouts)."""
        handle = self._rooms.get(name)
        if handle is not None:
            return handle.room
        if self._nursery is None:
            raise PysfuError("the room manager is not running")
        room = Room(
            name=name,
            created_at=self.now(),
            empty_timeout_s=(
                self.defaults.empty_timeout_s if empty_timeout_s is None else empty_timeout_s
            ),
            departure_timeout_s=(
                self.defaults.departure_timeout_s
                if departure_timeout_s is None
                else departure_timeout_s
            ),
            max_participants=max_participants,
            metadata=metadata,
            server=self.server,
        )
        handle = _RoomHandle(room)
        self._rooms[name] = handle
        self._nursery.start_soon(self._room_lifetime, handle)
        self._emit(room.started_event())
        log.info("room %s created (%s)", name, room.sid)
        return room

    async def _room_lifetime(self, handle: _RoomHandle) -> None:
        room = handle.room
        while not room.closed:
            deadline = room.close_deadline()
            handle.changed = trio.Event()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await handle.changed.wait()
                continue
            if room.close_deadline() is not None and not room.closed:
                log.info("room %s closing: nobody there", room.name)
                self.apply(room, room.close(DisconnectReason.ROOM_CLOSED, now=self.now()))

    def delete_room(self, name: str) -> None:
        room = self.require_room(name)
        self.apply(room, room.close(DisconnectReason.ROOM_DELETED, now=self.now()))

    def close_all(self, reason: DisconnectReason) -> None:
        for handle in list(self._rooms.values()):
            self.apply(handle.room, handle.room.close(reason, now=self.now()))

    # ---- sessions --------------------------------------------------------------------

    @contextmanager
    def register_session(
        self, room: Room, sid: str, cancel_scope: trio.CancelScope, *, watch_liveness: bool = False
    ) -> Iterator[tuple[Outbox, trio.MemoryReceiveChannel[rtc.SignalResponse | None]]]:
        """Register a participant session's outbox; must wrap the session's lifetime.
        On exit the participant is removed from its room if still there.

        With ``watch_liveness`` the liveness sweep removes the participant once
        ``outbox.last_seen`` (which the session updates on every frame) is older than
        the ping timeout, or when its media is not connected within
        JOIN_FAILURE_TIMEOUT_S."""
        now = trio.current_time()
        send, receive = trio.open_memory_channel[rtc.SignalResponse | None](OUTBOX_CAPACITY)
        outbox = Outbox(
            room=room.name,
            send_channel=send,
            cancel_scope=cancel_scope,
            joined_at=now,
            last_seen=now if watch_liveness else None,
        )
        self._outboxes[sid] = outbox
        if self._no_sessions.is_set():
            self._no_sessions = trio.Event()
        try:
            yield outbox, receive
        finally:
            del self._outboxes[sid]
            if not self._outboxes:
                self._no_sessions.set()
            send.close()
            self.remove(room, sid, outbox.close_reason or DisconnectReason.CLIENT_INITIATED)
            if self.media is not None:
                self.media.participant_removed(sid)

    async def _flush_update_batches(self) -> None:
        while True:
            await trio.sleep(UPDATE_BATCH_INTERVAL_S)
            self.flush_update_batches()

    def flush_update_batches(self) -> None:
        """Send every room's batched participant updates now."""
        for handle in list(self._rooms.values()):
            if handle.room.has_batched_updates:
                self.apply(handle.room, handle.room.flush_updates())

    async def _liveness_sweep(self) -> None:
        """One task for every session's liveness, rather than a timer per session."""
        while True:
            await trio.sleep(LIVENESS_SWEEP_INTERVAL_S)
            self._check_liveness(trio.current_time())

    def _check_liveness(self, now: float) -> None:
        """Remove the participants of watched sessions that went silent for longer
        than the ping timeout, or whose media never became active in time."""
        timeout = self.server.ping_timeout_s
        for sid, outbox in list(self._outboxes.items()):
            room = self.room(outbox.room)
            p = room.participants.get(sid) if room is not None else None
            if outbox.last_seen is None or room is None or p is None:
                continue  # not watched, or already removed and winding down
            if now - outbox.last_seen > timeout:
                log.info("%s timed out (no ping for %ss)", sid, timeout)
                self.remove(room, sid, DisconnectReason.CONNECTION_TIMEOUT)
            elif (
                self.media is not None
                and p.state is not ParticipantState.ACTIVE
                and now - outbox.joined_at > JOIN_FAILURE_TIMEOUT_S
            ):
                log.info("%s never connected its media; removing", sid)
                self.remove(room, sid, DisconnectReason.JOIN_FAILURE)

    async def sessions_closed(self) -> None:
        """Return once no participant session is registered."""
        await self._no_sessions.wait()

    def has_session(self, sid: str) -> bool:
        return sid in self._outboxes

    def send(self, sid: str, msg: rtc.SignalResponse) -> None:
        """Queue one signal message for a participant outside any room transition
        (media negotiation). Dropped if the session is gone."""
        room_name = self._outboxes[sid].room if sid in self._outboxes else None
        room = self.room(room_name) if room_name is not None else None
        if room is not None:
            fx = Effects()
            fx.send(sid, msg)
            self.apply(room, fx)

    # ---- effects ---------------------------------------------------------------------

    def apply(self, room: Room, fx: Effects) -> None:
        """Carry out a transition's effects. Never blocks: a participant whose outbox
        is full is too slow to keep and is removed."""
        slow: list[str] = []
        for sid, msg in fx.messages:
            outbox = self._outboxes.get(sid)
            if outbox is None:
                continue
            try:
                outbox.send_channel.send_nowait(msg)
            except trio.WouldBlock:
                slow.append(sid)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        for sid, reason in fx.closes:
            self._end_session(sid, reason)
        if self.media is not None:
            if fx.bindings:
                self.media.apply_bindings(fx.bindings)
            if fx.data:
                self.media.deliver_data(fx.data)
            if fx.unpublished:
                self.media.tracks_unpublished(fx.unpublished)
        for event in fx.events:
            self._emit(event)
        handle = self._rooms.get(room.name)
        if handle is not None and handle.room is room:
            if fx.room_closed:
                del self._rooms[room.name]
                log.info("room %s closed", room.name)
            handle.changed.set()
        for sid in slow:
            log.warning("participant %s cannot keep up with signaling; removing", sid)
            if sid in room.participants:
                self.remove(room, sid, DisconnectReason.SIGNAL_CLOSE)

    def remove(self, room: Room, sid: str, reason: DisconnectReason) -> None:
        """Remove a participant (if still in ``room``), telling it and everyone why."""
        if sid in room.participants:
            self.apply(room, room.remove(sid, reason, now=self.now()))

    def _end_session(self, sid: str, reason: DisconnectReason) -> None:
        outbox = self._outboxes.get(sid)
        if outbox is None:
            return
        outbox.close_reason = reason
        try:
            outbox.send_channel.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # Cannot even queue the end marker: stop the session outright.
            outbox.cancel_scope.cancel()

    # ---- room events for embedders and webhooks ------------------------------------------

    def _emit(self, event: webhook.WebhookEvent) -> None:
        self.webhooks.send_nowait(event)
        for channel in list(self._observers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                log.warning("room event observer too slow; event %s dropped", event.event)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._observers.remove(channel)

    @contextmanager
    def events(self) -> Iterator[trio.MemoryReceiveChannel[webhook.WebhookEvent]]:
        """Observe room events (the same ``WebhookEvent`` values webhooks carry)."""
        send, receive = trio.open_memory_channel[webhook.WebhookEvent](EVENT_QUEUE_CAPACITY)
        self._observers.append(send)
        try:
            yield receive
        finally:
            if send in self._observers:
                self._observers.remove(send)
            send.close()

    # ---- lookups shared by the signaling and the server API ------------------------------------

    def participant(self, room_name: str, identity: str) -> tuple[Room, str]:
        room = self.require_room(room_name)
        p = room.participant_by_identity(identity)
        if p is None:
            raise ParticipantNotFound(f"participant {identity!r} is not in room {room_name!r}")
        return room, p.sid
