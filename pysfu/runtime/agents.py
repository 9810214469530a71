"""Agent workers at run time: the Trio side of dispatch (the rules are in
pysfu/rtc/dispatch.py).

Task layout::

    AgentRuntime.run (nursery, started by Server.serve after the room manager)
    ├── the timer: sleeps until the dispatcher's next deadline (an offer that went
    │   unanswered, an orphaned job's grace), re-armed whenever state changes
    └── the room watcher: follows room events (room closed, participants joining,
        publishing, leaving) from the room manager's event stream

Worker connections run in their WebSocket's task (the HTTP server owns it; see
:meth:`AgentRuntime.serve_worker`): a reader that feeds :meth:`AgentRuntime.handle`
and a writer draining the worker's outbox. Every dispatcher call returns actions that
:meth:`AgentRuntime.perform` carries out without blocking: messages are queued to
worker outboxes (a worker too slow to take them is disconnected), agents left behind
are removed through the room manager, changes become ``agent_job_*`` webhook events.

Job events are :class:`WebhookEvent` values with the ``job`` field set (it names the
job, its dispatch, its worker and the agent's identity): ``agent_job_assigned``,
``agent_job_migrated`` (a reconnected worker claimed it), ``agent_job_ended``
(``job.state.status`` SUCCESS or FAILED, ``job.state.error`` says why). They go to
webhooks and to ``server.events()`` observers like room events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import trio
from google.protobuf.message import DecodeError
from livekit.protocol import agent as agent_proto
from livekit.protocol import agent_dispatch, models, webhook

from ..auth import TRACK_SOURCES, Claims, VideoGrant, mint_token
from ..rtc.dispatch import (
    Action,
    Assign,
    Dispatch,
    DispatchChanged,
    Dispatcher,
    DispatchError,
    Job,
    JobChanged,
    Offer,
    RemoveAgent,
    Terminate,
    Worker,
    random_id,
)
from ..rtc.ids import event_id
from ..rtc.room import Room
from .manager import ParticipantNotFound, RoomManager, RoomNotFound

log = logging.getLogger(__name__)

AGENT_PROTOCOL = 1
"""Agent protocol announced in RegisterWorkerResponse.server_info (the reference's)."""

REGISTER_TIMEOUT_S = 10.0
"""A worker must register within this after connecting (as the reference)."""

WORKER_SILENCE_TIMEOUT_S = 30.0
"""A registered worker that sends nothing for this long is dropped; livekit-agents
reports its status every 2.5 s."""

OUTBOX_CAPACITY = 256
"""Server messages queued per worker before it counts as too slow to keep."""

MAX_NAME_CHARS = 256
"""Longest agent name, version or identity accepted from a worker."""

JOB_ID_ATTRIBUTE = "pysfu.agent_job_id"
DISPATCH_ID_ATTRIBUTE = "pysfu.agent_dispatch_id"
"""Attributes the agent participant carries besides ``lk.agent_name``, so that its
participant_joined / participant_left webhooks name its job and dispatch."""

_SOURCE_NAMES = {v: k for k, v in TRACK_SOURCES.items()}

RoomAgents = Sequence[agent_dispatch.RoomAgentDispatch]


class WorkerTransport(Protocol):
    async def receive(self) -> bytes | str | None: ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


class WorkerRejected(Exception):
    """The worker broke the protocol; the message says how (logged, then closed)."""


class AgentRuntime:
    """Workers, dispatches and jobs of a running server. Embedders reach it as
    ``server.agents``; the Twirp AgentDispatchService calls the same methods."""

    def __init__(
        self,
        manager: RoomManager,
        keys: Mapping[str, str],
        *,
        server_version: str,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.manager = manager
        self.keys = keys
        self.server_version = server_version
        self.dispatcher = dispatcher or Dispatcher()
        self._clock = clock
        self._outboxes: dict[str, trio.MemorySendChannel[bytes]] = {}
        self._changed = trio.Event()
        self._wall_offset: float | None = None
        self._running = False

    # ---- lifetime -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.manager.events() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timer)
                nursery.start_soon(self._watch_rooms, events)
                # Rooms that opened before us (none in practice) still get their agents.
                for room in self.manager.rooms:
                    self.room_created(room, None)
                self._running = True
                task_status.started()

    def now(self) -> float:
        return self._clock()

    def _wall(self, t: float) -> int:
        """A dispatcher time (Trio clock) as unix nanoseconds, 0 for unset."""
        if not t:
            return 0
        if self._wall_offset is None:
            self._wall_offset = time.time() - self.now()
        return int((t + self._wall_offset) * 1e9)

    async def _timer(self) -> None:
        while True:
            deadline = self.dispatcher.next_deadline()
            self._changed = trio.Event()
            with trio.move_on_at(float("inf") if deadline is None else deadline):
                await self._changed.wait()
                continue
            self.perform(self.dispatcher.tick(self.now()))

    async def _watch_rooms(self, events: trio.MemoryReceiveChannel[webhook.WebhookEvent]) -> None:
        async for event in events:
            now = self.now()
            name = event.room.name
            identity = event.participant.identity
            if event.event == "room_finished":
                self.perform(self.dispatcher.room_closed(name, now))
            elif event.event == "participant_joined":
                is_agent = event.participant.kind == models.ParticipantInfo.Kind.AGENT
                self.perform(
                    self.dispatcher.participant_joined(name, identity, is_agent=is_agent, now=now)
                )
            elif event.event == "track_published":
                self.perform(self.dispatcher.participant_published(name, identity, now))
            elif event.event in ("participant_left", "participant_connection_aborted"):
                room = self.manager.room(name)
                if room is None or room.sid != event.room.sid:
                    # The room is closing (room_finished follows): its jobs end with it,
                    # not as agents that walked out.
                    continue
                self.perform(self.dispatcher.participant_left(name, identity, now))

    # ---- hook for the room manager ---------------------------------------------------------

    def room_created(self, room: Room, agents: RoomAgents | None) -> None:
        """Called by the room manager when it creates a room: its configured agents
        (CreateRoom ``agents``, a token's ``roomConfig.agents``) or, without any, the
        implicit dispatch of unnamed agents."""
        configured = (
            None if not agents else [(a.agent_name, a.metadata, dict(a.attributes)) for a in agents]
        )
        self.perform(self.dispatcher.room_created(room.name, configured, self.now()))

    # ---- the Python API (also behind Twirp AgentDispatchService) -----------------------------

    def workers(self) -> list[Worker]:
        """Registered workers (read-only views: agent name, job type, status, load, jobs)."""
        return list(self.dispatcher.workers.values())

    def create_dispatch(
        self,
        room: str,
        agent_name: str,
        *,
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> agent_dispatch.AgentDispatch:
        """Dispatch ``agent_name`` to ``room`` (created if needed and ``room.auto_create``
        allows, as the reference's CreateDispatch); its job is offered at once if a
        worker is there. Raises RoomNotFound or DispatchError."""
        if self.manager.room(room) is None and not self.manager.policy.auto_create:
            # As the reference: CreateDispatch creates the room only where rooms are
            # auto-created.
            raise RoomNotFound(f"room {room!r} does not exist")
        self.manager.create_room(room)
        dispatch, actions = self.dispatcher.create_dispatch(
            room, agent_name, metadata, self.now(), attributes=attributes
        )
        self.perform(actions)
        return self.dispatch_info(dispatch)

    def delete_dispatch(self, room: str, dispatch_id: str) -> agent_dispatch.AgentDispatch:
        """Cancel a dispatch: its running jobs are terminated (their agents leave)."""
        dispatch, actions = self.dispatcher.delete_dispatch(room, dispatch_id, self.now())
        info = self.dispatch_info(dispatch)
        self.perform(actions)
        info.state.deleted_at = self._wall(self.now())
        return info

    def list_dispatches(
        self, room: str, dispatch_id: str = ""
    ) -> list[agent_dispatch.AgentDispatch]:
        self.manager.require_room(room)
        return [
            self.dispatch_info(d)
            for d in self.dispatcher.room_dispatches(room)
            if not dispatch_id or d.id == dispatch_id
        ]

    # ---- protobuf views -----------------------------------------------------------------------

    def dispatch_info(self, dispatch: Dispatch) -> agent_dispatch.AgentDispatch:
        return agent_dispatch.AgentDispatch(
            id=dispatch.id,
            agent_name=dispatch.agent_name,
            room=dispatch.room,
            metadata=dispatch.metadata,
            attributes=dispatch.attributes,
            state=agent_dispatch.AgentDispatchState(
                jobs=[self.job_info(j) for j in self.dispatcher.dispatch_jobs(dispatch)],
                created_at=self._wall(dispatch.created_at),
            ),
        )

    def job_info(self, job: Job) -> agent_proto.Job:
        room = self.manager.room(job.room)
        target = room.participant_by_identity(job.participant) if room and job.participant else None
        return agent_proto.Job(
            id=job.id,
            dispatch_id=job.dispatch_id,
            type=job.type,  # type: ignore[arg-type]
            room=room.info() if room is not None else models.Room(name=job.room),
            participant=target.info() if target is not None else None,
            metadata=job.metadata,
            agent_name=job.agent_name,
            state=agent_proto.JobState(
                status=job.status,  # type: ignore[arg-type]
                error=job.error,
                started_at=self._wall(job.started_at),
                ended_at=self._wall(job.ended_at),
                updated_at=self._wall(job.updated_at),
                participant_identity=job.agent_identity,
                worker_id=job.worker_id,
            ),
        )

    # ---- performing actions -------------------------------------------------------------------

    def perform(self, actions: Iterable[Action]) -> None:
        """Carry out dispatcher actions; never blocks."""
        for action in actions:
            if isinstance(action, Offer | Assign):
                found = self.dispatcher.jobs.get(action.job_id)
                if found is None or action.worker_id not in self.dispatcher.workers:
                    continue  # gone later in the same transition
                job = found
            if isinstance(action, Offer):
                msg = agent_proto.ServerMessage(
                    availability=agent_proto.AvailabilityRequest(job=self.job_info(job))
                )
                log.info(
                    "offering job %s (dispatch %s, room %s) to worker %s",
                    job.id,
                    job.dispatch_id,
                    job.room,
                    action.worker_id,
                )
                self._send(action.worker_id, msg)
            elif isinstance(action, Assign):
                msg = agent_proto.ServerMessage(
                    assignment=agent_proto.JobAssignment(
                        job=self.job_info(job), token=self._job_token(action.worker_id, job)
                    )
                )
                self._send(action.worker_id, msg)
            elif isinstance(action, Terminate):
                log.info("terminating job %s on worker %s", action.job_id, action.worker_id)
                msg = agent_proto.ServerMessage(
                    termination=agent_proto.JobTermination(job_id=action.job_id)
                )
                self._send(action.worker_id, msg)
            elif isinstance(action, RemoveAgent):
                self._remove_agent(action.room, action.identity)
            elif isinstance(action, JobChanged):
                self._job_changed(action.job, action.what)
            elif isinstance(action, DispatchChanged):
                d = action.dispatch
                log.info(
                    "dispatch %s %s (agent %r, room %s)", d.id, action.what, d.agent_name, d.room
                )
        self._changed.set()

    def _send(self, worker_id: str, msg: agent_proto.ServerMessage) -> None:
        outbox = self._outboxes.get(worker_id)
        if outbox is None:
            return
        try:
            outbox.send_nowait(msg.SerializeToString())
        except trio.WouldBlock:
            log.warning("worker %s cannot keep up; disconnecting it", worker_id)
            outbox.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _remove_agent(self, room_name: str, identity: str) -> None:
        try:
            room, sid = self.manager.participant(room_name, identity)
        except (RoomNotFound, ParticipantNotFound):
            return
        log.info("removing agent %s from room %s: its worker is gone", identity, room_name)
        self.manager.remove(room, sid, models.DisconnectReason.PARTICIPANT_REMOVED)

    def _job_changed(self, job: Job, what: str) -> None:
        log.info(
            "job %s %s (dispatch %s, room %s, agent %r, worker %s, identity %s)%s",
            job.id,
            what,
            job.dispatch_id,
            job.room,
            job.agent_name,
            job.worker_id or "-",
            job.agent_identity or "-",
            f": {agent_proto.JobStatus.Name(job.status)} {job.error}".rstrip()
            if what == "ended"
            else "",
        )
        info = self.job_info(job)
        self.manager.emit(
            webhook.WebhookEvent(
                event=f"agent_job_{what}",
                id=event_id(),
                created_at=int(time.time()),
                room=info.room,
                job=info,
            )
        )

    def _job_token(self, worker_id: str, job: Job) -> str:
        w = self.dispatcher.workers[worker_id]
        perm = w.permissions
        grant = VideoGrant(
            room_join=True,
            room=job.room,
            can_publish=perm.can_publish,
            can_subscribe=perm.can_subscribe,
            can_publish_data=perm.can_publish_data,
            can_update_own_metadata=perm.can_update_metadata,
            can_publish_sources=tuple(
                _SOURCE_NAMES[s] for s in perm.can_publish_sources if s in _SOURCE_NAMES
            ),
            hidden=perm.hidden,
            agent=True,
        )
        return mint_token(
            w.api_key,
            self.keys[w.api_key],
            identity=job.agent_identity,
            name=job.agent_name_shown,
            metadata=job.agent_metadata,
            attributes={
                **job.agent_attributes,
                JOB_ID_ATTRIBUTE: job.id,
                DISPATCH_ID_ATTRIBUTE: job.dispatch_id,
            },
            kind="agent",
            grant=grant,
        )

    # ---- worker connections -------------------------------------------------------------------

    async def serve_worker(self, transport: WorkerTransport, claims: Claims) -> None:
        """Run one worker connection (an accepted ``/agent`` WebSocket whose token
        carries the ``agent`` grant) until it closes."""
        worker_id = ""
        try:
            register = await self._await_register(transport)
            if register is None:
                return
            worker_id = random_id("AW_")
            reply = agent_proto.ServerMessage(
                register=agent_proto.RegisterWorkerResponse(
                    worker_id=worker_id,
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Edition.Standard,
                        version=self.server_version,
                        protocol=self.manager.server.protocol,
                        agent_protocol=AGENT_PROTOCOL,
                        node_id=self.manager.server.node_id,
                    ),
                )
            )
            send, receive = trio.open_memory_channel[bytes](OUTBOX_CAPACITY)
            self._outboxes[worker_id] = send
            # Registered before the reply goes out: a worker that has its id is in the
            # registry (a caller may look it up at once). Offers the registration makes
            # wait in the outbox, whose writer starts after the reply, so the reply is
            # still the first message on the wire.
            self.perform(
                self.dispatcher.register(worker_id, **self._registration(register, claims))
            )
            await transport.send(reply.SerializeToString())
            log.info(
                "worker %s registered (agent %r, %s, version %s)",
                worker_id,
                register.agent_name,
                agent_proto.JobType.Name(register.type),
                register.version,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, transport, receive, nursery.cancel_scope)
                # Caught here, not outside: out of the nursery it would come wrapped
                # in an ExceptionGroup.
                try:
                    await self._read(worker_id, transport)
                except WorkerRejected as exc:
                    log.warning("worker %s: %s; closing", worker_id, exc)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
                nursery.cancel_scope.cancel()
        except WorkerRejected as exc:
            log.warning("worker %s: %s; closing", worker_id or "(unregistered)", exc)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            if worker_id:
                outbox = self._outboxes.pop(worker_id, None)
                if outbox is not None:
                    outbox.close()
                log.info("worker %s disconnected", worker_id)
                self.perform(self.dispatcher.worker_lost(worker_id, self.now()))
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await transport.close()

    async def _await_register(
        self, transport: WorkerTransport
    ) -> agent_proto.RegisterWorkerRequest | None:
        with trio.move_on_after(REGISTER_TIMEOUT_S):
            while True:
                data = await transport.receive()
                if data is None:
                    return None
                msg = parse_worker_message(data)
                which = msg.WhichOneof("message")
                if which == "register":
                    validate_register(msg.register)
                    return msg.register
                if which == "ping":
                    await transport.send(pong(msg.ping).SerializeToString())
                # Anything else before registering is meaningless; the reference ignores it too.
        raise WorkerRejected(f"no registration within {REGISTER_TIMEOUT_S:g} s")

    def _registration(
        self, register: agent_proto.RegisterWorkerRequest, claims: Claims
    ) -> dict[str, Any]:
        if register.HasField("allowed_permissions"):
            permissions = models.ParticipantPermission()
            permissions.CopyFrom(register.allowed_permissions)
        else:  # the reference's default
            permissions = models.ParticipantPermission(
                can_subscribe=True,
                can_publish=True,
                can_publish_data=True,
                can_update_metadata=True,
            )
        return {
            "agent_name": register.agent_name,
            "job_type": register.type,
            "version": register.version,
            "namespace": register.namespace,
            "api_key": claims.api_key,
            "permissions": permissions,
            "now": self.now(),
        }

    async def _read(self, worker_id: str, transport: WorkerTransport) -> None:
        while True:
            with trio.move_on_after(WORKER_SILENCE_TIMEOUT_S) as silence:
                data = await transport.receive()
            if silence.cancelled_caught:
                raise WorkerRejected(f"silent for {WORKER_SILENCE_TIMEOUT_S:g} s")
            if data is None:
                return
            reply = self.handle(worker_id, parse_worker_message(data))
            if reply is not None:
                self._send(worker_id, reply)

    async def _write(
        self,
        transport: WorkerTransport,
        receive: trio.MemoryReceiveChannel[bytes],
        cancel_scope: trio.CancelScope,
    ) -> None:
        try:
            async for data in receive:
                await transport.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        # The outbox was closed (too slow, or the worker is being dropped), or the
        # socket is gone.
        cancel_scope.cancel()

    def handle(
        self, worker_id: str, msg: agent_proto.WorkerMessage
    ) -> agent_proto.ServerMessage | None:
        """One message from a registered worker; returns a direct reply (pong) if any.
        Raises :class:`WorkerRejected` for a message that ends the connection."""
        which = msg.WhichOneof("message")
        now = self.now()
        d = self.dispatcher
        if which == "ping":
            return pong(msg.ping)
        if which == "update_worker":
            u = msg.update_worker
            status = u.status if u.HasField("status") else None
            self.perform(d.update_worker(worker_id, status=status, load=u.load, now=now))
        elif which == "availability":
            a = msg.availability
            if len(a.participant_identity) > MAX_NAME_CHARS or len(a.participant_name) > 4096:
                raise WorkerRejected("participant identity or name too long")
            self.perform(
                d.availability(
                    worker_id,
                    a.job_id,
                    available=a.available,
                    terminate=a.terminate,
                    identity=a.participant_identity,
                    name=a.participant_name,
                    metadata=a.participant_metadata,
                    attributes=dict(a.participant_attributes),
                    now=now,
                )
            )
        elif which == "update_job":
            j = msg.update_job
            self.perform(d.update_job(worker_id, j.job_id, status=j.status, error=j.error, now=now))
        elif which == "migrate_job":
            ids = [*msg.migrate_job.job_ids, *(job.id for job in msg.migrate_job.jobs)]
            self.perform(d.migrate(worker_id, ids, now))
        elif which == "register":
            raise WorkerRejected("registered twice")
        else:
            # simulate_job (a testing aid of the cloud) and fields newer than us.
            log.debug("worker %s: ignoring %s", worker_id, which)
        return None


def parse_worker_message(data: bytes | str) -> agent_proto.WorkerMessage:
    if isinstance(data, str):
        raise WorkerRejected("text frame: workers speak protobuf in binary frames")
    msg = agent_proto.WorkerMessage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise WorkerRejected(f"undecodable WorkerMessage: {exc}") from None
    return msg


def validate_register(reg: agent_proto.RegisterWorkerRequest) -> None:
    if reg.type not in agent_proto.JobType.values():
        raise WorkerRejected(f"unknown job type {reg.type}")
    for field in ("agent_name", "version", "namespace"):
        if len(getattr(reg, field)) > MAX_NAME_CHARS:
            raise WorkerRejected(f"{field} longer than {MAX_NAME_CHARS} characters")


def pong(ping: agent_proto.WorkerPing) -> agent_proto.ServerMessage:
    return agent_proto.ServerMessage(
        pong=agent_proto.WorkerPong(
            last_timestamp=ping.timestamp, timestamp=int(time.time() * 1000)
        )
    )


__all__ = [
    "AgentRuntime",
    "DispatchError",
    "WorkerRejected",
    "WorkerTransport",
    "parse_worker_message",
]
