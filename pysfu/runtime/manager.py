"""Rooms at run time: the Trio layer that owns each room's and each participant's
lifetime and performs the effects that pure room transitions return.

Task layout::

    RoomManager.run (nursery)
    ├── one lifetime task per room: sleeps until the room's close deadline
    │   (empty_timeout / departure_timeout), re-armed whenever the room changes
    ├── the liveness sweep: once a second, over every ParticipantSession: drops
    │   connections past their ping timeout, removes participants whose resume
    │   window passed or whose media never connected, refreshes tokens
    └── the update batch flush

Signal connections run in their HTTP connection's task and attach to a
ParticipantSession (pysfu.runtime.sessions) made by :meth:`RoomManager.join` or found
by :meth:`RoomManager.resume`; a session outlives its connections.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypedDict

import attrs
import trio
from livekit.protocol import agent_dispatch, models, rtc, webhook

from ..auth import TRACK_SOURCES, Claims, VideoGrant, mint_token
from ..errors import PysfuError
from ..rtc.dispatch import agents_from_room_config
from ..rtc.effects import Effects
from ..rtc.lifecycle import ParticipantState
from ..rtc.room import Participant, Room, ServerIdentity
from .ports import MediaPlane, NullMediaPlane, NullWebhookSink, WebhookSink
from .sessions import JOIN_FAILURE_TIMEOUT_S, ParticipantSession

log = logging.getLogger(__name__)

DisconnectReason = models.DisconnectReason

EVENT_QUEUE_CAPACITY = 1024
"""Room events buffered per ``events()`` observer before new ones are dropped for it."""

LIVENESS_SWEEP_INTERVAL_S = 1.0
"""How often the one liveness sweep walks the sessions."""

UPDATE_BATCH_INTERVAL_S = 0.5
"""How long others may wait to hear of a participant that publishes nothing (joins and
state changes; see Room.flush_updates). The reference server waits up to 3 s."""

TOKEN_TTL_S = 600.0
"""Lifetime of a refreshed token (the reference's is ten minutes)."""

TOKEN_REFRESH_INTERVAL_S = 300.0
"""A connected client gets a fresh token this often, so that a reconnect never
presents an expired one (or one that re-grants revoked rights)."""

TOKEN_REFRESH_MARGIN_S = 60.0
"""A client whose token expires sooner than this gets a fresh one at once."""


class RoomNotFound(PysfuError):
    pass


class ParticipantNotFound(PysfuError):
    pass


class JoinRefused(PysfuError):
    """A join or resume that must not go ahead; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ResumeRefused(PysfuError):
    """A resume that cannot continue the session it names: the client must rejoin
    in full (it is sent ``Leave{action: RECONNECT}``)."""


@attrs.frozen
class JoinParams:
    """What a join carries besides the token."""

    auto_subscribe: bool = True
    protocol: int = 0
    reconnect: bool = False
    """The client asks to resume the session ``sid``."""
    sid: str = ""
    reconnect_reason: int = 0
    single_pc: bool = False
    """Joined on ``/rtc/v1``: one PeerConnection carries both directions."""


@attrs.define(eq=False)
class _RoomHandle:
    room: Room
    changed: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class RoomDefaults:
    empty_timeout_s: float = 300.0
    departure_timeout_s: float = 20.0


@attrs.frozen
class RoomPolicy:
    """Server-wide rules (the ``room:`` section of the configuration)."""

    auto_create: bool = True
    """A join may create the room it names; off: rooms exist only by CreateRoom."""
    enable_remote_unmute: bool = False
    """The server API may unmute a participant's track (off, as the reference: an
    admin token must not re-open someone's microphone)."""

    def may_create(self, claims: Claims) -> bool:
        """Whether a join with ``claims`` may create the room it names: always with
        auto_create, else only with the roomCreate grant (as the reference)."""
        return self.auto_create or claims.video.room_create


class RoomManager:
    """Registry of live rooms and sessions; every room mutation goes through
    :meth:`apply`, the one place effects are carried out."""

    def __init__(
        self,
        *,
        defaults: RoomDefaults | None = None,
        server: ServerIdentity | None = None,
        webhooks: WebhookSink | None = None,
        keys: Mapping[str, str] | None = None,
        policy: RoomPolicy | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.defaults = defaults or RoomDefaults()
        self.server = server or ServerIdentity()
        self.webhooks: WebhookSink = webhooks or NullWebhookSink()
        self.media: MediaPlane = NullMediaPlane()
        self.ice_servers: Callable[[str], list[rtc.ICEServer]] = lambda identity: []
        """ICE servers (the embedded TURN server, with credentials) for a participant's
        JoinResponse and ReconnectResponse; set by the server when TURN is on."""
        self.policy = policy or RoomPolicy()
        self._keys = dict(keys or {})
        """API keys and secrets, to sign refreshed tokens (none: no refresh)."""
        self._clock = clock
        self._rooms: dict[str, _RoomHandle] = {}
        self._sessions: dict[str, ParticipantSession] = {}
        self._applying = False
        self._connections = 0
        self._queue: deque[tuple[Room, Effects]] = deque()
        self._observers: list[trio.MemorySendChannel[webhook.WebhookEvent]] = []
        self.room_created_hooks: list[
            Callable[[Room, Sequence[agent_dispatch.RoomAgentDispatch] | None], None]
        ] = []
        """Called with each new room and its configured agents (agent dispatch)."""
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
        agents: Sequence[agent_dispatch.RoomAgentDispatch] | None = None,
    ) -> Room:
        """Return the room called ``name``, creating it if needed (CreateRoom is
        idempotent in LiveKit; a second call does not change the timeouts). ``agents``
        are the agents to dispatch to a new room (default: unnamed agents)."""
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
        for hook in self.room_created_hooks:
            hook(room, agents)
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

    # ---- participants: join, resume, leave -------------------------------------------

    def join(self, claims: Claims, params: JoinParams) -> ParticipantSession:
        """Admit a participant to the room its token names: the one join choreography
        (room transition, session, media plane, effects, first offer). Messages wait in
        the session until a connection attaches."""
        room_name = claims.video.room
        room = self.room(room_name)
        if room is None:
            if not self.policy.may_create(claims):
                # The reference's words: the JS SDK reads them as "not allowed".
                raise JoinRefused(404, "requested room does not exist")
            room = self.create_room(room_name, **room_options(claims))
        if room.is_full_for(claims.identity):
            raise JoinRefused(403, "room is full")
        participant, fx = room.join(
            identity=claims.identity,
            now=self.now(),
            name=claims.name,
            metadata=claims.metadata,
            attributes=claims.attributes,
            kind=claims.participant_kind(),
            permission=claims.permission(),
            auto_subscribe=params.auto_subscribe,
            single_pc=params.single_pc,
            ice_servers=self.ice_servers(claims.identity),
        )
        session = ParticipantSession(room.name, participant.sid, claims, now=self.now())
        self._register(session)
        log.info("%s joined room %s as %s", claims.identity, room.name, participant.sid)
        # The media plane must know the participant before the join's bindings (tracks
        # already live in the room) reach it, and the JoinResponse must go out before
        # any subscriber offer: register, apply, then offer.
        self.media.participant_joined(room, participant.sid, single_pc=params.single_pc)
        self.apply(room, fx)
        # The join's messages (an update to every other participant) would otherwise
        # live as long as the session: quadratic in the room's size.
        del fx
        self.media.offer_initial(participant.sid)
        self.refresh_token(room, participant.sid)
        return session

    def check_join(self, claims: Claims) -> None:
        """Raise JoinRefused for a join that :meth:`join` would refuse (for
        ``/rtc/validate``, which must answer what the WebSocket would)."""
        room = self.room(claims.video.room)
        if room is None and not self.policy.may_create(claims):
            raise JoinRefused(404, "requested room does not exist")
        if room is not None and room.is_full_for(claims.identity):
            raise JoinRefused(403, "room is full")

    def resume(
        self, claims: Claims, sid: str, *, ice_restart: bool = False
    ) -> tuple[ParticipantSession, rtc.SignalResponse]:
        """Continue the session ``sid`` (or, without a sid, the identity's) if the
        token's holder owns it: the same identity in the same room. Anything else is
        ResumeRefused (the client then rejoins in full, as itself): a token for one
        identity never continues another's session.

        Returns the session and the ReconnectResponse that must go out first; what
        follows it is queued in the session: the room as it is now (the SDKs drop
        participants a resume's updates do not mention), offers, a fresh token."""
        room = self.room(claims.video.room)
        p = room.participant_by_identity(claims.identity) if room is not None else None
        session = self._sessions.get(p.sid) if p is not None else None
        if room is None or p is None or (sid and p.sid != sid) or session is None:
            raise ResumeRefused(f"no session {sid!r} of {claims.identity!r} to resume")
        if session.media_failed_at is not None:
            # Its engine peers are gone: only a full rejoin brings media back.
            raise ResumeRefused(f"{p.sid}: media transport closed; rejoin")
        session.claims = claims
        session.replace_connection(now=self.now())
        log.info("%s resumes its session", p.sid)
        first = rtc.SignalResponse(reconnect=self.reconnect_response(room, p))
        self.apply(room, room.state_update(p.sid))
        session.discard_pending("offer")
        session.discard_pending("trickle")
        self.media.resumed(p.sid, ice_restart=ice_restart)
        self.refresh_token(room, p.sid)
        return session, first

    def reconnect_response(self, room: Room, p: Participant) -> rtc.ReconnectResponse:
        """What a resuming client is told first; ``last_message_seq`` tells it which of
        its reliable data packets arrived, so it resends only the rest."""
        return rtc.ReconnectResponse(
            last_message_seq=p.last_reliable_seq,
            ice_servers=self.ice_servers(p.identity),
            client_configuration=models.ClientConfiguration(),
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=self.server.version,
                protocol=self.server.protocol,
                node_id=self.server.node_id,
            ),
        )

    def connection_lost(self, session: ParticipantSession) -> None:
        """A signal connection of ``session`` ended. A participant whose media never
        connected goes at once (as the reference: nothing to keep); one with media
        waits for its client to resume."""
        room = self.room_of(session)
        p = room.participants.get(session.sid) if room is not None else None
        if room is None or p is None or session.attachment is not None:
            return
        if p.state is not ParticipantState.ACTIVE or session.leaving:
            self.remove(room, session.sid, DisconnectReason.SIGNAL_CLOSE)
        else:
            log.info("%s: signal connection lost; waiting for a resume", session.sid)

    def media_failed(self, sid: str) -> None:
        """The engine closed the participant's media transport; it is removed after a
        short grace unless it leaves (CLIENT_INITIATED) first."""
        session = self._sessions.get(sid)
        if session is not None and session.media_failed_at is None:
            session.media_failed_at = self.now()

    def _register(self, session: ParticipantSession) -> None:
        self._sessions[session.sid] = session
        if self._no_sessions.is_set():
            self._no_sessions = trio.Event()

    def _unregister(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._check_idle()

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Count a signal connection as open while in this block: shutdown waits for
        connections to flush their LeaveRequest, not only for sessions to end."""
        self._connections += 1
        if self._no_sessions.is_set():
            self._no_sessions = trio.Event()
        try:
            yield
        finally:
            self._connections -= 1
            self._check_idle()

    def _check_idle(self) -> None:
        if not self._sessions and not self._connections:
            self._no_sessions.set()

    def session(self, sid: str) -> ParticipantSession | None:
        return self._sessions.get(sid)

    def room_of(self, session: ParticipantSession) -> Room | None:
        room = self.room(session.room_name)
        return room if room is not None and session.sid in room.participants else None

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
            self.check_liveness(trio.current_time())

    def check_liveness(self, now: float) -> None:
        """Drop connections past their ping timeout; remove participants whose
        resume window passed or whose media never became active; refresh tokens."""
        timeout = self.server.ping_timeout_s
        for sid, session in list(self._sessions.items()):
            room = self.room(session.room_name)
            p = room.participants.get(sid) if room is not None else None
            if room is None or p is None:
                continue  # already removed and winding down
            if session.media_failure_final(now):
                log.info("%s: media transport closed; removing", sid)
                self.remove(room, sid, DisconnectReason.MEDIA_FAILURE)
            elif session.ping_overdue(now, timeout):
                log.info("%s: no ping for %ss; dropping its signal connection", sid, timeout)
                session.drop_connection()
            elif session.resume_window_passed(now):
                log.info("%s did not resume its session in time; removing", sid)
                self.remove(room, sid, DisconnectReason.SIGNAL_CLOSE)
            elif (
                self.media.connected
                and p.state is not ParticipantState.ACTIVE
                and now - session.joined_at > JOIN_FAILURE_TIMEOUT_S
            ):
                log.info("%s never connected its media; removing", sid)
                self.remove(room, sid, DisconnectReason.JOIN_FAILURE)
            elif session.attachment is not None and self._refresh_due(session, now):
                self.refresh_token(room, sid)

    # ---- tokens ------------------------------------------------------------------------------

    def _refresh_due(self, session: ParticipantSession, now: float) -> bool:
        if session.claims.api_key not in self._keys:
            return False
        expires_in = session.claims.expires_at - time.time()
        return (
            now - session.refreshed_at >= TOKEN_REFRESH_INTERVAL_S
            or expires_in < TOKEN_REFRESH_MARGIN_S
        )

    def refresh_token(self, room: Room, sid: str) -> None:
        """Send the participant a fresh token stating what it is now (grants, name,
        metadata, attributes): its next reconnect presents that, not its first one."""
        session = self._sessions.get(sid)
        p = room.participants.get(sid)
        if session is None or p is None:
            return
        secret = self._keys.get(session.claims.api_key)
        if secret is None:
            return
        token = mint_token(
            session.claims.api_key,
            secret,
            identity=p.identity,
            name=p.name,
            metadata=p.metadata,
            attributes=p.attributes,
            kind=session.claims.kind,
            grant=_grant_of(p, room.name, session.claims.video),
            ttl_s=TOKEN_TTL_S,
        )
        session.claims = attrs.evolve(session.claims, expires_at=time.time() + TOKEN_TTL_S)
        session.refreshed_at = self.now()
        fx = Effects()
        fx.send(sid, rtc.SignalResponse(refresh_token=token))
        self.apply(room, fx)

    async def sessions_closed(self) -> None:
        """Return once no participant session is registered."""
        await self._no_sessions.wait()

    def has_session(self, sid: str) -> bool:
        return sid in self._sessions

    def send(self, sid: str, msg: rtc.SignalResponse) -> None:
        """Queue one signal message for a participant outside any room transition
        (media negotiation). Dropped if the session is gone."""
        session = self._sessions.get(sid)
        room = self.room(session.room_name) if session is not None else None
        if room is not None:
            fx = Effects()
            fx.send(sid, msg)
            self.apply(room, fx)

    # ---- effects ---------------------------------------------------------------------

    def apply(self, room: Room, fx: Effects) -> None:
        """Carry out a transition's effects. Never blocks, never re-enters: effects
        applied while others are being carried out (a media plane that sends an offer
        while applying bindings) are queued and follow in order."""
        self._queue.append((room, fx))
        if self._applying:
            return
        self._applying = True
        try:
            while self._queue:
                self._apply_one(*self._queue.popleft())
        finally:
            self._applying = False

    def _apply_one(self, room: Room, fx: Effects) -> None:
        slow: list[str] = []
        for sid, msg in fx.messages:
            session = self._sessions.get(sid)
            if session is not None and not session.deliver(msg) and not session.slow:
                # One decision per participant, however many messages overflow.
                session.slow = True
                slow.append(sid)
        for sid, reason in fx.closes:
            session = self._sessions.get(sid)
            if session is not None:
                session.end(reason)
                self._unregister(sid)
        if fx.bindings:
            self.media.apply_bindings(fx.bindings)
        if fx.layers:
            self.media.apply_layers(fx.layers)
        if fx.mutes:
            self.media.apply_mutes(fx.mutes)
        if fx.data:
            self.media.deliver_data(fx.data)
        if fx.unpublished:
            self.media.tracks_unpublished(fx.unpublished)
        for sid, _ in fx.closes:
            self.media.participant_removed(sid)
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
            self.remove(room, sid, DisconnectReason.SIGNAL_CLOSE)

    def remove(self, room: Room, sid: str, reason: DisconnectReason) -> None:
        """Remove a participant (if still in ``room``), telling it and everyone why."""
        if sid in room.participants:
            self.apply(room, room.remove(sid, reason, now=self.now()))

    # ---- room events for embedders and webhooks ------------------------------------------

    def emit(self, event: webhook.WebhookEvent) -> None:
        """Send an event that is not a room transition's (agent jobs) to webhooks and
        observers."""
        self._emit(event)

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


def _grant_of(p: Participant, room: str, original: VideoGrant) -> VideoGrant:
    """The video grant that states ``p``'s current permissions (as changed by the
    server API since it joined), keeping the token's other rights."""
    perm = p.permission
    sources = tuple(
        name for name, value in TRACK_SOURCES.items() if value in perm.can_publish_sources
    )
    return attrs.evolve(
        original,
        room_join=True,
        room=room,
        can_publish=perm.can_publish,
        can_subscribe=perm.can_subscribe,
        can_publish_data=perm.can_publish_data,
        can_publish_sources=sources,
        can_update_own_metadata=perm.can_update_metadata,
        hidden=perm.hidden,
        recorder=perm.recorder,
        agent=perm.agent,
    )


class RoomOptions(TypedDict, total=False):
    """CreateRoom options (the keyword arguments of :meth:`RoomManager.create_room`)."""

    empty_timeout_s: float
    departure_timeout_s: float
    max_participants: int
    metadata: str
    agents: Sequence[agent_dispatch.RoomAgentDispatch]


def room_options(claims: Claims) -> RoomOptions:
    """CreateRoom options a token's ``roomConfig`` carries (used when the join creates
    the room; an existing room keeps its settings)."""
    config = claims.room_config or {}
    options = RoomOptions()
    for key, raw_key in (
        ("emptyTimeout", "empty_timeout"),
        ("departureTimeout", "departure_timeout"),
    ):
        value = config.get(key, config.get(raw_key))
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            if key == "emptyTimeout":
                options["empty_timeout_s"] = float(value)
            else:
                options["departure_timeout_s"] = float(value)
    max_participants = config.get("maxParticipants", config.get("max_participants"))
    if isinstance(max_participants, int) and not isinstance(max_participants, bool):
        options["max_participants"] = max(0, max_participants)
    metadata = config.get("metadata")
    if isinstance(metadata, str):
        options["metadata"] = metadata
    agents = agents_from_room_config(config)
    if agents is not None:
        options["agents"] = agents
    return options
