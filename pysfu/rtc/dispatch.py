"""Agent dispatch as a pure state machine: workers, dispatches, jobs and the choice of
which worker runs which job. No Trio, no sockets, no clock: time comes in as ``now``
and every outside action (ask a worker, assign, terminate, remove a stale agent,
announce a change) comes back as an :data:`Action` value for the runtime to perform
(pysfu/runtime/agents.py).

The vocabulary is LiveKit's (livekit.protocol.agent): a *worker* registers for an
``agent_name`` and a job type (room, publisher, participant); a *dispatch* asks for
that agent in a room; each dispatch runs as *jobs*, one per room (JT_ROOM) or per
participant (JT_PUBLISHER, JT_PARTICIPANT). A job is offered to one worker at a time
(AvailabilityRequest); the worker accepts with the identity its agent will join as,
and the job is assigned (JobAssignment with a token). A job a worker refuses, or does
not answer within :attr:`Dispatcher.offer_timeout_s`, is offered to the next.

Where this goes beyond the reference server:

- a job waits (PENDING) until a matching worker registers or becomes available,
  instead of being dropped when no worker is there at the moment of dispatch;
- a running job whose worker goes away is *orphaned*; a worker that reconnects and
  claims it (MigrateJobRequest, sent by livekit-agents after every registration)
  keeps it, and otherwise, after :attr:`Dispatcher.orphan_grace_s` (or at once when
  the agent participant has left the room), the job ends FAILED and a new job of the
  same dispatch is placed on another worker, after removing any agent participant the
  lost worker left behind.

Worker choice: among the workers registered for the job's agent name and type,
reporting WS_AVAILABLE and not having refused this job, the one with the fewest jobs
(running plus offered), then the lowest reported load, then the earliest registered.
Deterministic, and it spreads jobs across equal workers.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from google.protobuf import json_format
from livekit.protocol import agent as agent_proto
from livekit.protocol import agent_dispatch, models, room

log = logging.getLogger(__name__)

JobType = agent_proto.JobType
JobStatus = agent_proto.JobStatus
WorkerStatus = agent_proto.WorkerStatus

DEFAULT_OFFER_TIMEOUT_S = 10.0
"""How long a worker has to answer an AvailabilityRequest (the reference's
AssignJobTimeout); no answer counts as a refusal."""

DEFAULT_ORPHAN_GRACE_S = 2.0
"""How long a lost worker's running job waits to be claimed by a reconnecting worker
before it is re-dispatched. livekit-agents reconnects at once after a dropped
connection and claims its jobs right after registering, well inside this."""

AGENT_NAME_ATTRIBUTE = "lk.agent_name"
"""Attribute the agent participant carries with its worker's agent name (as the
reference: ``agent.AgentNameAttributeKey``)."""

ENDED = frozenset({JobStatus.JS_SUCCESS, JobStatus.JS_FAILED})
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


def random_id(prefix: str) -> str:
    """A LiveKit-style id: ``AW_`` worker, ``AJ_`` job, ``AD_`` dispatch."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class DispatchError(ValueError):
    """A request the dispatcher refuses (unknown dispatch, bad job type...); the
    message is safe to show to the API caller."""


@attrs.define(eq=False)
class Worker:
    """A registered worker connection."""

    id: str
    agent_name: str
    job_type: int
    """``JobType`` value."""
    version: str
    api_key: str
    """The key that signed the worker's token; its agents' job tokens are signed with it."""
    permissions: models.ParticipantPermission
    """What the worker's agents may do in the room (RegisterWorkerRequest.allowed_permissions)."""
    seq: int
    """Registration order, for a deterministic tie break."""
    registered_at: float
    namespace: str = ""
    status: int = WorkerStatus.WS_AVAILABLE
    load: float = 0.0
    jobs: set[str] = attrs.field(factory=set)
    """Jobs assigned to this worker and not ended."""
    offers: set[str] = attrs.field(factory=set)
    """Jobs offered to this worker, awaiting its availability answer."""

    @property
    def busy(self) -> int:
        return len(self.jobs) + len(self.offers)


@attrs.define(eq=False)
class Dispatch:
    """A request for an agent in a room (AgentDispatch)."""

    id: str
    room: str
    agent_name: str
    metadata: str
    created_at: float
    attributes: dict[str, str] = attrs.field(factory=dict)
    explicit: bool = True
    """False for the room's implicit dispatch of unnamed agents."""
    jobs: list[str] = attrs.field(factory=list)
    """Every job this dispatch has had, oldest first (ended ones included)."""


@attrs.define(eq=False)
class Job:
    id: str
    dispatch_id: str
    room: str
    type: int
    """``JobType`` value."""
    agent_name: str
    metadata: str
    created_at: float
    participant: str = ""
    """Target participant identity for JT_PUBLISHER / JT_PARTICIPANT jobs."""
    status: int = JobStatus.JS_PENDING
    worker_id: str = ""
    """The worker that runs it (RUNNING), or ran it (ended, orphaned)."""
    offered_to: str = ""
    offer_deadline: float = 0.0
    refused: set[str] = attrs.field(factory=set)
    """Workers that refused (or did not answer); never offered this job again."""
    agent_identity: str = ""
    agent_name_shown: str = ""
    agent_metadata: str = ""
    agent_attributes: dict[str, str] = attrs.field(factory=dict)
    agent_left: bool = False
    """The agent participant joined the room and left it again."""
    orphaned_at: float | None = None
    """When its worker went away while it ran; None while its worker is there."""
    error: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    updated_at: float = 0.0
    replaces: str = ""
    """The job this one re-dispatches (whose worker was lost)."""

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def live(self) -> bool:
        return not self.ended


# ---- actions: what the runtime must do ---------------------------------------------------


@attrs.frozen
class Offer:
    """Send an AvailabilityRequest for ``job_id`` to ``worker_id``."""

    worker_id: str
    job_id: str


@attrs.frozen
class Assign:
    """Mint the agent's token and send the JobAssignment."""

    worker_id: str
    job_id: str


@attrs.frozen
class Terminate:
    """Send a JobTermination: the worker stops the job's agent."""

    worker_id: str
    job_id: str


@attrs.frozen
class RemoveAgent:
    """Remove a participant a lost worker's job left in the room."""

    room: str
    identity: str


@attrs.frozen
class JobChanged:
    """Announce a job change (webhook, ``server.events()``, log). ``what`` is one of
    ``assigned``, ``migrated``, ``ended``. Carries the job itself: an ended job of a
    deleted dispatch is no longer in :attr:`Dispatcher.jobs`."""

    job: Job
    what: str


@attrs.frozen
class DispatchChanged:
    """Announce a dispatch change: ``created`` or ``deleted``."""

    dispatch: Dispatch
    what: str


Action = Offer | Assign | Terminate | RemoveAgent | JobChanged | DispatchChanged


class Dispatcher:
    """Every worker, dispatch and job of the server, and the rules that move them.

    Each method takes ``now`` and returns the actions to perform, in order. Methods
    never raise for a message a worker may legitimately send late (an answer for a job
    that was meanwhile cancelled, a status for a job it no longer runs): those are
    ignored. API calls with a bad argument raise :class:`DispatchError`.
    """

    def __init__(
        self,
        *,
        offer_timeout_s: float = DEFAULT_OFFER_TIMEOUT_S,
        orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
        new_id: Callable[[str], str] = random_id,
    ) -> None:
        self.offer_timeout_s = offer_timeout_s
        self.orphan_grace_s = orphan_grace_s
        self._new_id = new_id
        self._seq = itertools.count()
        self.workers: dict[str, Worker] = {}
        self.dispatches: dict[str, Dispatch] = {}
        self.jobs: dict[str, Job] = {}
        """Live jobs, and the ended jobs of live dispatches (for ListDispatch)."""
        self.rooms: set[str] = set()
        """Open rooms: dispatches exist only for these."""
        self.participants: dict[str, dict[str, bool]] = {}
        """room -> identity -> publishes, for publisher and participant jobs."""

    # ---- queries -------------------------------------------------------------------------

    def room_dispatches(self, room: str) -> list[Dispatch]:
        return [d for d in self.dispatches.values() if d.room == room]

    def dispatch_jobs(self, dispatch: Dispatch) -> list[Job]:
        return [self.jobs[j] for j in dispatch.jobs if j in self.jobs]

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, if ever."""
        times = [j.offer_deadline for j in self.jobs.values() if j.offered_to and j.live]
        times += [
            j.orphaned_at + self.orphan_grace_s
            for j in self.jobs.values()
            if j.orphaned_at is not None and j.live
        ]
        return min(times, default=None)

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping disagrees with itself (tests, fuzzing)."""
        for w in self.workers.values():
            assert w.offers == {j.id for j in self.jobs.values() if j.offered_to == w.id}
            assert w.jobs == {
                j.id
                for j in self.jobs.values()
                if j.status == JobStatus.JS_RUNNING
                and j.worker_id == w.id
                and j.orphaned_at is None
            }
        for j in self.jobs.values():
            assert j.dispatch_id in self.dispatches, "job of a deleted dispatch kept"
            assert j.room in self.rooms, "job of a closed room kept"
            if j.offered_to:
                assert j.status == JobStatus.JS_PENDING and j.offered_to in self.workers
                assert j.offered_to not in j.refused
            if j.status == JobStatus.JS_RUNNING and j.orphaned_at is None:
                assert j.worker_id in self.workers, "running job of a lost worker not orphaned"
            if j.orphaned_at is not None:
                assert j.status == JobStatus.JS_RUNNING
        for d in self.dispatches.values():
            assert d.room in self.rooms
            live = [(j.type, j.participant) for j in self.dispatch_jobs(d) if j.live]
            assert len(live) == len(set(live)), "two live jobs for one dispatch target"

    # ---- workers -------------------------------------------------------------------------

    def register(
        self,
        worker_id: str,
        *,
        agent_name: str,
        job_type: int,
        version: str,
        api_key: str,
        permissions: models.ParticipantPermission,
        now: float,
        namespace: str = "",
    ) -> list[Action]:
        if worker_id in self.workers:
            raise DispatchError(f"worker {worker_id} is already registered")
        if job_type not in JobType.values():
            raise DispatchError(f"unknown job type {job_type}")
        self.workers[worker_id] = Worker(
            id=worker_id,
            agent_name=agent_name,
            job_type=job_type,
            version=version,
            api_key=api_key,
            permissions=permissions,
            seq=next(self._seq),
            registered_at=now,
            namespace=namespace,
        )
        actions: list[Action] = []
        # Participants already in rooms get their per-participant jobs from a new
        # worker of those types, as rooms get their room jobs.
        if job_type != JobType.JT_ROOM:
            for dispatch in list(self.dispatches.values()):
                if dispatch.agent_name == agent_name:
                    actions += self._launch_targets(dispatch, now)
        actions += self._place_pending(now)
        return actions

    def update_worker(
        self, worker_id: str, *, status: int | None, load: float, now: float
    ) -> list[Action]:
        w = self.workers.get(worker_id)
        if w is None:
            return []
        if status is not None and status in WorkerStatus.values():
            w.status = status
        # A NaN or out-of-range load must not poison the ordering.
        w.load = min(max(load, 0.0), 1.0) if load == load else 1.0
        return self._place_pending(now)

    def worker_lost(self, worker_id: str, now: float) -> list[Action]:
        """The worker's connection ended: its offers go elsewhere, its running jobs
        are orphaned (see the module docstring)."""
        w = self.workers.pop(worker_id, None)
        if w is None:
            return []
        for job_id in w.offers:
            job = self.jobs.get(job_id)
            if job is not None and job.offered_to == worker_id:
                job.offered_to = ""
                job.refused.add(worker_id)
        for job_id in w.jobs:
            job = self.jobs.get(job_id)
            if job is not None and job.live and job.worker_id == worker_id:
                job.orphaned_at = now
        actions: list[Action] = []
        # A job whose agent already left is not worth waiting for.
        for job_id in sorted(w.jobs):
            job = self.jobs.get(job_id)
            if job is not None and job.orphaned_at is not None and job.agent_left:
                actions += self._redispatch(job, now)
        return actions + self._place_pending(now)

    def migrate(self, worker_id: str, job_ids: Iterable[str], now: float) -> list[Action]:
        """A (re)registered worker says it still runs these jobs: it keeps those that
        were orphaned or whose worker is gone, if they are for its agent."""
        w = self.workers.get(worker_id)
        if w is None:
            return []
        actions: list[Action] = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if (
                job is None
                or job.status != JobStatus.JS_RUNNING
                or job.agent_name != w.agent_name
                or job.type != w.job_type
            ):
                continue
            if job.worker_id == worker_id:
                continue
            if job.orphaned_at is None and job.worker_id in self.workers:
                continue  # another live worker runs it: not this one's to claim
            old = self.workers.get(job.worker_id)
            if old is not None:
                old.jobs.discard(job_id)
            job.worker_id = worker_id
            job.orphaned_at = None
            job.updated_at = now
            w.jobs.add(job_id)
            actions.append(JobChanged(job, "migrated"))
        return actions

    # ---- worker answers ---------------------------------------------------------------------

    def availability(
        self,
        worker_id: str,
        job_id: str,
        *,
        available: bool,
        terminate: bool,
        identity: str,
        name: str,
        metadata: str,
        attributes: Mapping[str, str],
        now: float,
    ) -> list[Action]:
        job = self.jobs.get(job_id)
        w = self.workers.get(worker_id)
        if job is None or w is None or job.offered_to != worker_id or job.ended:
            return []  # late or unsolicited: the job moved on
        job.offered_to = ""
        w.offers.discard(job_id)
        if terminate:
            # The worker says this job should not run at all (reject(terminate=True)).
            job.refused.add(worker_id)
            return self._end(job, JobStatus.JS_SUCCESS, "declined by the worker", now)
        if not available:
            job.refused.add(worker_id)
            return self._place(job, now)
        job.status = JobStatus.JS_RUNNING
        job.worker_id = worker_id
        job.started_at = job.updated_at = now
        job.agent_identity = identity or f"agent-{job.id}"
        job.agent_name_shown = name
        job.agent_metadata = metadata
        job.agent_attributes = {**attributes, AGENT_NAME_ATTRIBUTE: w.agent_name}
        w.jobs.add(job_id)
        return [Assign(worker_id, job_id), JobChanged(job, "assigned")]

    def update_job(
        self, worker_id: str, job_id: str, *, status: int, error: str, now: float
    ) -> list[Action]:
        job = self.jobs.get(job_id)
        if job is None or job.worker_id != worker_id or job.ended:
            return []
        job.updated_at = now
        if status in ENDED:
            return self._end(job, status, error, now)
        return []

    # ---- dispatches ---------------------------------------------------------------------------

    def room_created(
        self, room: str, agents: Iterable[tuple[str, str, Mapping[str, str]]] | None, now: float
    ) -> list[Action]:
        """A room opened. ``agents`` are its configured dispatches (agent name,
        metadata, attributes) from CreateRoom or a token's ``roomConfig``; ``None``
        means the default: one implicit dispatch of unnamed agents, as the reference."""
        if room in self.rooms:
            return []
        self.rooms.add(room)
        self.participants.setdefault(room, {})
        actions: list[Action] = []
        if agents is None:
            _, fx = self._create(room, "", "", {}, now, explicit=False)
            actions += fx
        else:
            for agent_name, metadata, attributes in agents:
                _, fx = self._create(room, agent_name, metadata, dict(attributes), now)
                actions += fx
        return actions

    def room_closed(self, room: str, now: float) -> list[Action]:
        if room not in self.rooms:
            return []
        self.rooms.discard(room)
        actions: list[Action] = []
        for dispatch in self.room_dispatches(room):
            actions += self._delete(dispatch, "room closed", now)
        self.participants.pop(room, None)
        return actions

    def create_dispatch(
        self,
        room: str,
        agent_name: str,
        metadata: str,
        now: float,
        attributes: Mapping[str, str] | None = None,
    ) -> tuple[Dispatch, list[Action]]:
        if room not in self.rooms:
            raise DispatchError(f"room {room!r} does not exist")
        return self._create(room, agent_name, metadata, dict(attributes or {}), now)

    def delete_dispatch(
        self, room: str, dispatch_id: str, now: float
    ) -> tuple[Dispatch, list[Action]]:
        dispatch = self.dispatches.get(dispatch_id)
        if dispatch is None or dispatch.room != room:
            raise DispatchError(f"dispatch {dispatch_id!r} not found in room {room!r}")
        return dispatch, self._delete(dispatch, "dispatch deleted", now)

    # ---- participants -----------------------------------------------------------------------

    def participant_joined(
        self, room: str, identity: str, *, is_agent: bool, now: float
    ) -> list[Action]:
        if room not in self.rooms:
            return []
        members = self.participants.setdefault(room, {})
        if identity in members:
            return []
        members[identity] = False
        if is_agent:
            for job in self.jobs.values():
                if job.room == room and job.agent_identity == identity:
                    job.agent_left = False
            return []  # agents get no per-participant agents (the reference: IsDependent)
        actions: list[Action] = []
        for dispatch in self.room_dispatches(room):
            actions += self._launch_targets(dispatch, now, only=identity)
        return actions

    def participant_published(self, room: str, identity: str, now: float) -> list[Action]:
        members = self.participants.get(room)
        if members is None or identity not in members or members[identity]:
            return []
        members[identity] = True
        actions: list[Action] = []
        for dispatch in self.room_dispatches(room):
            actions += self._launch_targets(dispatch, now, only=identity)
        return actions

    def participant_left(self, room: str, identity: str, now: float) -> list[Action]:
        members = self.participants.get(room)
        if members is None or members.pop(identity, None) is None:
            return []
        actions: list[Action] = []
        for dispatch in self.room_dispatches(room):
            for job in self.dispatch_jobs(dispatch):
                if job.ended:
                    continue
                if job.participant == identity:
                    # The job's target left: its agent has nobody to serve.
                    actions += self._stop(job, JobStatus.JS_SUCCESS, "participant left", now)
                elif job.agent_identity == identity and job.status == JobStatus.JS_RUNNING:
                    job.agent_left = True
                    if job.orphaned_at is not None:
                        actions += self._redispatch(job, now)
                    else:
                        # As the reference (AGENT_LEFT_ROOM): the agent left on its own.
                        actions += self._stop(
                            job, JobStatus.JS_FAILED, "agent worker left the room", now
                        )
        return actions

    # ---- time ---------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for job in list(self.jobs.values()):
            if job.ended:
                continue
            if job.offered_to and now >= job.offer_deadline:
                w = self.workers.get(job.offered_to)
                if w is not None:
                    w.offers.discard(job.id)
                job.refused.add(job.offered_to)
                job.offered_to = ""
                actions += self._place(job, now)
            elif job.orphaned_at is not None and now >= job.orphaned_at + self.orphan_grace_s:
                actions += self._redispatch(job, now)
        return actions

    # ---- internals ----------------------------------------------------------------------------

    def _create(
        self,
        room: str,
        agent_name: str,
        metadata: str,
        attributes: dict[str, str],
        now: float,
        *,
        explicit: bool = True,
    ) -> tuple[Dispatch, list[Action]]:
        dispatch = Dispatch(
            id=self._new_id("AD_"),
            room=room,
            agent_name=agent_name,
            metadata=metadata,
            attributes=attributes,
            created_at=now,
            explicit=explicit,
        )
        self.dispatches[dispatch.id] = dispatch
        actions: list[Action] = [DispatchChanged(dispatch, "created")] if explicit else []
        job = self._new_job(dispatch, JobType.JT_ROOM, "", now)
        actions += self._place(job, now)
        actions += self._launch_targets(dispatch, now)
        return dispatch, actions

    def _new_job(self, dispatch: Dispatch, job_type: int, participant: str, now: float) -> Job:
        job = Job(
            id=self._new_id("AJ_"),
            dispatch_id=dispatch.id,
            room=dispatch.room,
            type=job_type,
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            participant=participant,
            created_at=now,
            updated_at=now,
        )
        self.jobs[job.id] = job
        dispatch.jobs.append(job.id)
        return job

    def _launch_targets(self, dispatch: Dispatch, now: float, only: str = "") -> list[Action]:
        """Per-participant jobs, for job types some worker of the agent serves (as the
        reference, which only launches them where workers exist)."""
        types = {
            w.job_type
            for w in self.workers.values()
            if w.agent_name == dispatch.agent_name and w.job_type != JobType.JT_ROOM
        }
        if not types:
            return []
        members = self.participants.get(dispatch.room, {})
        agents = {j.agent_identity for j in self.jobs.values() if j.room == dispatch.room}
        actions: list[Action] = []
        for identity, publishes in list(members.items()):
            if (only and identity != only) or identity in agents:
                continue
            for job_type in sorted(types):
                if job_type == JobType.JT_PUBLISHER and not publishes:
                    continue
                if any(
                    j.live and j.type == job_type and j.participant == identity
                    for j in self.dispatch_jobs(dispatch)
                ):
                    continue
                job = self._new_job(dispatch, job_type, identity, now)
                actions += self._place(job, now)
        return actions

    def _candidates(self, job: Job) -> list[Worker]:
        return [
            w
            for w in self.workers.values()
            if w.agent_name == job.agent_name
            and w.job_type == job.type
            and w.status == WorkerStatus.WS_AVAILABLE
            and w.id not in job.refused
        ]

    def _place(self, job: Job, now: float) -> list[Action]:
        if job.offered_to or job.status != JobStatus.JS_PENDING:
            return []
        if job.dispatch_id not in self.dispatches or job.room not in self.rooms:
            return []  # being deleted
        candidates = self._candidates(job)
        if not candidates:
            return []  # stays pending until a worker registers or becomes available
        w = min(candidates, key=lambda w: (w.busy, w.load, w.seq))
        job.offered_to = w.id
        job.offer_deadline = now + self.offer_timeout_s
        w.offers.add(job.id)
        return [Offer(w.id, job.id)]

    def _place_pending(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for job in list(self.jobs.values()):
            if job.status == JobStatus.JS_PENDING and not job.offered_to:
                actions += self._place(job, now)
        return actions

    def _end(self, job: Job, status: int, error: str, now: float) -> list[Action]:
        if job.ended:
            return []
        if job.offered_to:
            w = self.workers.get(job.offered_to)
            if w is not None:
                w.offers.discard(job.id)
            job.offered_to = ""
        w = self.workers.get(job.worker_id)
        if w is not None:
            w.jobs.discard(job.id)
        job.status = status
        job.error = error
        job.orphaned_at = None
        job.ended_at = job.updated_at = now
        # A job no worker ever saw ends silently: every room has an implicit dispatch,
        # and rooms without agents must not announce agent jobs.
        seen = bool(job.worker_id or job.refused)
        actions: list[Action] = [JobChanged(job, "ended")] if seen else []
        if job.dispatch_id not in self.dispatches:
            del self.jobs[job.id]
        # The worker has room for another job now.
        return actions + self._place_pending(now)

    def _stop(self, job: Job, status: int, error: str, now: float) -> list[Action]:
        """End a job the server no longer wants, telling its worker."""
        actions: list[Action] = []
        if job.status == JobStatus.JS_RUNNING and job.worker_id in self.workers:
            actions.append(Terminate(job.worker_id, job.id))
        return actions + self._end(job, status, error, now)

    def _redispatch(self, job: Job, now: float) -> list[Action]:
        dispatch = self.dispatches.get(job.dispatch_id)
        identity = job.agent_identity
        actions = self._end(job, JobStatus.JS_FAILED, "worker lost", now)
        if identity and identity in self.participants.get(job.room, {}):
            actions.append(RemoveAgent(job.room, identity))
        if dispatch is not None and job.room in self.rooms:
            if job.participant and job.participant not in self.participants.get(job.room, {}):
                return actions
            new = self._new_job(dispatch, job.type, job.participant, now)
            new.replaces = job.id
            actions += self._place(new, now)
        return actions

    def _delete(self, dispatch: Dispatch, why: str, now: float) -> list[Action]:
        del self.dispatches[dispatch.id]
        actions: list[Action] = []
        for job in self.dispatch_jobs(dispatch):
            if job.live:
                actions += self._stop(job, JobStatus.JS_SUCCESS, why, now)
            self.jobs.pop(job.id, None)
        if dispatch.explicit:
            actions.append(DispatchChanged(dispatch, "deleted"))
        return actions


def agents_from_room_config(
    config: Mapping[str, Any],
) -> list[agent_dispatch.RoomAgentDispatch] | None:
    """The ``agents`` of a token's ``roomConfig`` (protojson RoomConfiguration:
    ``{"agents": [{"agentName": ..., "metadata": ...}]}``); None when there are none or
    they do not parse (the join still works, with the default dispatch)."""
    agents = config.get("agents")
    if not agents:
        return None
    parsed = room.RoomConfiguration()
    try:
        json_format.ParseDict({"agents": agents}, parsed, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        log.warning("ignoring the token's roomConfig.agents: %s", exc)
        return None
    return list(parsed.agents) or None
