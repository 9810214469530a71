"""Property-based tests of agent dispatch (pysfu.rtc.dispatch): random sequences of
worker registrations, losses, reconnections with migration, status reports,
availability answers, job updates, dispatches, rooms, participants and time, checked
against invariants after every step."""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from livekit.protocol import agent, models

from pysfu.rtc.dispatch import (
    Action,
    Assign,
    Dispatcher,
    DispatchError,
    JobChanged,
    Offer,
    RemoveAgent,
    Terminate,
)

JT = agent.JobType
JS = agent.JobStatus
WS = agent.WorkerStatus

NAMES = st.sampled_from(["", "", "named"])
ROOMS = st.sampled_from(["r1", "r2"])
PEOPLE = st.sampled_from(["ann", "ben"])
TYPES = st.sampled_from([JT.JT_ROOM, JT.JT_ROOM, JT.JT_PUBLISHER, JT.JT_PARTICIPANT])


class DispatchMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        counter = itertools.count()
        self.now = 0.0
        self.d = Dispatcher(new_id=lambda prefix: f"{prefix}{next(counter)}")
        self.worker_ids = itertools.count()
        self.offers: set[tuple[str, str]] = set()
        """(worker, job) offers sent and not yet answered, as the worker sees them."""
        self.assigned: set[str] = set()
        self.ever_ended: set[str] = set()

    # ---- performing actions like the runtime ---------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Offer):
                w = self.d.workers[a.worker_id]
                job = self.d.jobs[a.job_id]
                assert job.agent_name == w.agent_name and job.type == w.job_type
                assert w.status == WS.WS_AVAILABLE
                assert a.worker_id not in job.refused
                self.offers.add((a.worker_id, a.job_id))
            elif isinstance(a, Assign):
                assert a.job_id not in self.assigned, "assigned twice"
                assert self.d.jobs[a.job_id].status == JS.JS_RUNNING
                self.assigned.add(a.job_id)
            elif isinstance(a, Terminate):
                assert a.job_id in self.assigned, "terminated a job never assigned"
            elif isinstance(a, JobChanged) and a.what == "ended":
                assert a.job.id not in self.ever_ended, "ended twice"
                self.ever_ended.add(a.job.id)
            elif isinstance(a, RemoveAgent):
                assert a.identity in self.d.participants.get(a.room, {})

    # ---- rules ----------------------------------------------------------------------------

    @rule(name=NAMES, job_type=TYPES)
    def register(self, name: str, job_type: int) -> None:
        wid = f"AW_{next(self.worker_ids)}"
        self.apply(
            self.d.register(
                wid,
                agent_name=name,
                job_type=job_type,
                version="1",
                api_key="k",
                permissions=models.ParticipantPermission(),
                now=self.now,
            )
        )

    @precondition(lambda self: self.d.workers)
    @rule(data=st.data())
    def lose_worker(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.d.workers)))
        self.offers = {o for o in self.offers if o[0] != wid}
        self.apply(self.d.worker_lost(wid, self.now))

    @precondition(lambda self: self.d.workers)
    @rule(data=st.data(), full=st.booleans(), load=st.floats(allow_nan=True))
    def status(self, data: st.DataObject, full: bool, load: float) -> None:
        wid = data.draw(st.sampled_from(sorted(self.d.workers)))
        status = WS.WS_FULL if full else WS.WS_AVAILABLE
        self.apply(self.d.update_worker(wid, status=status, load=load, now=self.now))

    @precondition(lambda self: self.offers)
    @rule(data=st.data(), available=st.booleans(), terminate=st.booleans())
    def answer(self, data: st.DataObject, available: bool, terminate: bool) -> None:
        wid, jid = data.draw(st.sampled_from(sorted(self.offers)))
        self.offers.discard((wid, jid))
        self.apply(
            self.d.availability(
                wid,
                jid,
                available=available,
                terminate=terminate and not available,
                identity="",
                name="",
                metadata="",
                attributes={},
                now=self.now,
            )
        )

    @rule(data=st.data(), ok=st.booleans())
    def job_ends(self, data: st.DataObject, ok: bool) -> None:
        running = sorted(j.id for j in self.d.jobs.values() if j.status == JS.JS_RUNNING)
        if not running:
            return
        jid = data.draw(st.sampled_from(running))
        wid = self.d.jobs[jid].worker_id
        status = JS.JS_SUCCESS if ok else JS.JS_FAILED
        self.apply(self.d.update_job(wid, jid, status=status, error="", now=self.now))

    @precondition(lambda self: self.d.workers)
    @rule(data=st.data())
    def migrate(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.d.workers)))
        jobs = sorted(self.d.jobs)
        claimed = data.draw(st.lists(st.sampled_from(jobs), max_size=3)) if jobs else []
        self.apply(self.d.migrate(wid, [*claimed, "AJ_unknown"], self.now))

    @rule(room=ROOMS, configured=st.booleans(), name=NAMES)
    def open_room(self, room: str, configured: bool, name: str) -> None:
        agents = [(name, "meta", {})] if configured else None
        self.apply(self.d.room_created(room, agents, self.now))

    @rule(room=ROOMS)
    def close_room(self, room: str) -> None:
        self.apply(self.d.room_closed(room, self.now))

    @rule(room=ROOMS, name=NAMES)
    def create_dispatch(self, room: str, name: str) -> None:
        try:
            _, actions = self.d.create_dispatch(room, name, "m", self.now)
        except DispatchError:
            assert room not in self.d.rooms
            return
        self.apply(actions)

    @precondition(lambda self: self.d.dispatches)
    @rule(data=st.data())
    def delete_dispatch(self, data: st.DataObject) -> None:
        did = data.draw(st.sampled_from(sorted(self.d.dispatches)))
        room = self.d.dispatches[did].room
        _, actions = self.d.delete_dispatch(room, did, self.now)
        self.apply(actions)

    @rule(room=ROOMS, who=PEOPLE)
    def join(self, room: str, who: str) -> None:
        self.apply(self.d.participant_joined(room, who, is_agent=False, now=self.now))

    @rule(room=ROOMS, who=PEOPLE)
    def publish(self, room: str, who: str) -> None:
        self.apply(self.d.participant_published(room, who, self.now))

    @rule(room=ROOMS, who=PEOPLE)
    def leave(self, room: str, who: str) -> None:
        self.apply(self.d.participant_left(room, who, self.now))

    @rule(data=st.data())
    def agent_joins_or_leaves(self, data: st.DataObject) -> None:
        agents = sorted(
            (j.room, j.agent_identity) for j in self.d.jobs.values() if j.agent_identity
        )
        if not agents:
            return
        room, identity = data.draw(st.sampled_from(agents))
        if data.draw(st.booleans()):
            self.apply(self.d.participant_joined(room, identity, is_agent=True, now=self.now))
        else:
            self.apply(self.d.participant_left(room, identity, self.now))

    @rule(dt=st.sampled_from([0.5, 2.5, 11.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        actions = self.d.tick(self.now)
        # A timed-out offer is no longer answerable by the worker.
        self.offers = {
            (w, j) for (w, j) in self.offers if j in self.d.jobs and self.d.jobs[j].offered_to == w
        }
        self.apply(actions)

    # ---- invariants -------------------------------------------------------------------------

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        self.d.check_invariants()

    @invariant()
    def placement_is_immediate(self) -> None:
        """No pending job waits while a worker that could take it is free."""
        for j in self.d.jobs.values():
            if j.status != JS.JS_PENDING or j.offered_to:
                continue
            for w in self.d.workers.values():
                assert not (
                    w.agent_name == j.agent_name
                    and w.job_type == j.type
                    and w.status == WS.WS_AVAILABLE
                    and w.id not in j.refused
                ), f"job {j.id} waits while {w.id} is free"


DispatchMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestDispatch = DispatchMachine.TestCase


def test_two_workers_share_room_jobs_and_a_lost_workers_job_moves() -> None:
    """The story the end-to-end test tells, at the level of the state machine."""
    counter = itertools.count()
    d = Dispatcher(new_id=lambda p: f"{p}{next(counter)}")
    perm = models.ParticipantPermission()
    for wid in ("A", "B"):
        d.register(
            wid,
            agent_name="",
            job_type=JT.JT_ROOM,
            version="1",
            api_key="k",
            permissions=perm,
            now=0,
        )
    offers = [a for r in ("r1", "r2") for a in d.room_created(r, None, 0) if isinstance(a, Offer)]
    assert sorted(o.worker_id for o in offers) == ["A", "B"]
    for o in offers:
        d.availability(
            o.worker_id,
            o.job_id,
            available=True,
            terminate=False,
            identity="",
            name="",
            metadata="",
            attributes={},
            now=1,
        )
    job_a = next(o.job_id for o in offers if o.worker_id == "A")
    room_a = d.jobs[job_a].room
    d.participant_joined(room_a, f"agent-{job_a}", is_agent=True, now=1)
    assert d.worker_lost("A", 2) == []  # waits for a reconnect to claim it
    actions = d.tick(2 + d.orphan_grace_s)
    assert RemoveAgent(room_a, f"agent-{job_a}") in actions
    moved = [a for a in actions if isinstance(a, Offer)]
    assert [o.worker_id for o in moved] == ["B"]
    assert d.jobs[job_a].status == JS.JS_FAILED


def test_a_reconnecting_worker_keeps_its_job() -> None:
    d = Dispatcher()
    perm = models.ParticipantPermission()
    d.register(
        "A", agent_name="x", job_type=JT.JT_ROOM, version="1", api_key="k", permissions=perm, now=0
    )
    d.room_created("r", [("x", "", {})], 0)
    (job,) = d.jobs.values()
    d.availability(
        "A",
        job.id,
        available=True,
        terminate=False,
        identity="me",
        name="",
        metadata="",
        attributes={},
        now=0,
    )
    d.worker_lost("A", 1)
    d.register(
        "A2",
        agent_name="x",
        job_type=JT.JT_ROOM,
        version="1",
        api_key="k",
        permissions=perm,
        now=1.2,
    )
    assert [a.what for a in d.migrate("A2", [job.id], 1.3) if isinstance(a, JobChanged)] == [
        "migrated"
    ]
    assert d.tick(100) == []
    assert job.worker_id == "A2" and job.status == JS.JS_RUNNING


def test_a_job_waits_for_its_named_worker() -> None:
    d = Dispatcher()
    d.room_created("r", None, 0)
    dispatch, actions = d.create_dispatch("r", "late", "", 0)
    assert not [a for a in actions if isinstance(a, Offer)]
    actions = d.register(
        "W",
        agent_name="late",
        job_type=JT.JT_ROOM,
        version="1",
        api_key="k",
        permissions=models.ParticipantPermission(),
        now=5,
    )
    assert [a for a in actions if isinstance(a, Offer)] == [
        Offer("W", d.dispatch_jobs(dispatch)[0].id)
    ]
