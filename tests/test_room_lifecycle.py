"""When rooms open and close: empty_timeout, departure_timeout, rejoins, deletion and
shutdown, and the liveness sweep (ping timeout, join failure), with a real RoomManager
on Trio's MockClock (minutes pass in no time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest.mock import Mock

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.protocol import models, rtc, webhook

from pysfu import testing
from pysfu.rtc.lifecycle import ParticipantEvent
from pysfu.rtc.room import Room
from pysfu.runtime.manager import ResumeRefused, RoomDefaults, RoomManager
from pysfu.runtime.sessions import (
    JOIN_FAILURE_TIMEOUT_S,
    RESUME_WINDOW_S,
    ParticipantSession,
    SessionState,
)
from pysfu.testing import MemoryTransport

Reason = models.DisconnectReason


@asynccontextmanager
async def running(
    empty_timeout_s: float = 300.0, departure_timeout_s: float = 20.0
) -> AsyncIterator[RoomManager]:
    manager = RoomManager(
        defaults=RoomDefaults(
            empty_timeout_s=empty_timeout_s, departure_timeout_s=departure_timeout_s
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield manager
        nursery.cancel_scope.cancel()


async def sleep_until(t: float) -> None:
    """Advance the clock to ``t`` and let every task that wakes by then finish its turn."""
    await trio.sleep_until(t)
    await trio.testing.wait_all_tasks_blocked()


def join(manager: RoomManager, room_name: str, identity: str) -> str:
    """A join without a signaling session, as the signaling layer would apply it."""
    room = manager.create_room(room_name)
    p, fx = room.join(identity=identity, now=manager.now())
    manager.apply(room, fx)
    return p.sid


def leave(manager: RoomManager, room_name: str, identity: str) -> None:
    room = manager.require_room(room_name)
    p = room.participant_by_identity(identity)
    assert p is not None
    manager.apply(room, room.remove(p.sid, Reason.CLIENT_INITIATED, now=manager.now()))


def drain(events: trio.MemoryReceiveChannel[webhook.WebhookEvent]) -> list[str]:
    out: list[str] = []
    while True:
        try:
            ev = events.receive_nowait()
        except trio.WouldBlock:
            return out
        out.append(f"{ev.event}:{ev.participant.identity}" if ev.participant.sid else ev.event)


@attrs.define
class FakeSession:
    """A participant over the server's own join choreography (pysfu.testing.join) and
    an in-memory signal connection; records what it is sent until its session ends."""

    transport: MemoryTransport = attrs.field(factory=MemoryTransport)
    session: ParticipantSession | None = None
    ended: trio.Event = attrs.field(factory=trio.Event)

    async def run(
        self,
        manager: RoomManager,
        room: Room,
        identity: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.session = await nursery.start(
                testing.join, manager, testing.claims_for(identity, room.name), self.transport
            )
            task_status.started()
        self.ended.set()

    @property
    def sid(self) -> str:
        assert self.session is not None
        return self.session.sid

    @property
    def received(self) -> list[rtc.SignalResponse]:
        return self.transport.received

    @property
    def close_reason(self) -> int | None:
        return self.session.close_reason if self.session is not None else None

    async def keep_talking(self, until: float) -> None:
        """Ping every 5 s until ``until``, as SDKs do."""
        while trio.current_time() < until:
            self.transport.send_request(rtc.SignalRequest(ping=1))
            await trio.sleep(5)

    def kinds(self) -> list[str | None]:
        return self.transport.kinds()

    def leave(self) -> rtc.LeaveRequest:
        leaves = [m.leave for m in self.received if m.HasField("leave")]
        assert len(leaves) == 1, self.kinds()
        return leaves[0]


# ---- timeouts -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_room_nobody_joins_closes_after_empty_timeout(autojump_clock: object) -> None:
    async with running() as manager:
        with manager.events() as events:
            room = manager.create_room("r", empty_timeout_s=60)
            await sleep_until(59.9)
            assert manager.room("r") is room and not room.closed
            assert drain(events) == ["room_started"]
            await sleep_until(60.0)
            assert manager.room("r") is None and room.closed
            assert drain(events) == ["room_finished"]


@pytest.mark.trio
async def test_default_empty_timeout_applies(autojump_clock: object) -> None:
    async with running(empty_timeout_s=300) as manager:
        manager.create_room("r")
        await sleep_until(299)
        assert manager.room("r") is not None
        await sleep_until(300)
        assert manager.room("r") is None


@pytest.mark.trio
async def test_occupied_room_outlives_its_empty_timeout(autojump_clock: object) -> None:
    async with running() as manager:
        manager.create_room("r", empty_timeout_s=10, departure_timeout_s=20)
        await sleep_until(5)
        join(manager, "r", "alice")
        await sleep_until(1000)
        assert manager.room("r") is not None


@pytest.mark.trio
async def test_room_closes_departure_timeout_after_last_departure(
    autojump_clock: object,
) -> None:
    async with running() as manager:
        with manager.events() as events:
            manager.create_room("r", empty_timeout_s=300, departure_timeout_s=20)
            await sleep_until(1)
            join(manager, "r", "alice")
            join(manager, "r", "bob")
            await sleep_until(10)
            leave(manager, "r", "alice")
            await sleep_until(25)  # 15 s after alice, but bob is still there
            assert manager.room("r") is not None
            await sleep_until(40)
            leave(manager, "r", "bob")
            await sleep_until(59.9)
            assert manager.room("r") is not None
            await sleep_until(60)
            assert manager.room("r") is None
            assert drain(events) == [
                "room_started",
                "participant_connection_aborted:alice",
                "participant_connection_aborted:bob",
                "room_finished",
            ]


@pytest.mark.trio
async def test_rejoin_within_departure_window_keeps_room_open(autojump_clock: object) -> None:
    async with running() as manager:
        room = manager.create_room("r", departure_timeout_s=20)
        join(manager, "r", "alice")
        await sleep_until(10)
        leave(manager, "r", "alice")
        await sleep_until(29)
        join(manager, "r", "alice")
        await sleep_until(100)
        assert manager.room("r") is room
        leave(manager, "r", "alice")
        await sleep_until(119.5)
        assert manager.room("r") is room
        await sleep_until(120)
        assert manager.room("r") is None


@pytest.mark.trio
async def test_room_created_by_join_uses_departure_timeout(autojump_clock: object) -> None:
    async with running(empty_timeout_s=300, departure_timeout_s=20) as manager:
        join(manager, "r", "alice")
        await sleep_until(2)
        leave(manager, "r", "alice")
        await sleep_until(21.9)
        assert manager.room("r") is not None
        await sleep_until(22)
        assert manager.room("r") is None


@pytest.mark.trio
async def test_closed_room_name_can_be_reused(autojump_clock: object) -> None:
    async with running() as manager:
        with manager.events() as events:
            first = manager.create_room("r", empty_timeout_s=5)
            await sleep_until(6)
            assert manager.room("r") is None
            second = manager.create_room("r", empty_timeout_s=5)
            assert second is not first and second.sid != first.sid
            await sleep_until(10.9)
            assert manager.room("r") is second
            await sleep_until(11)
            assert manager.room("r") is None
            finished = []
            while True:
                try:
                    ev = events.receive_nowait()
                except trio.WouldBlock:
                    break
                if ev.event == "room_finished":
                    finished.append(ev.room.sid)
            assert finished == [first.sid, second.sid]


# ---- closing rooms tells participants ------------------------------------------------------


@pytest.mark.trio
async def test_delete_room_sends_every_participant_leave(autojump_clock: object) -> None:
    async with running() as manager, trio.open_nursery() as nursery:
        room = manager.create_room("r")
        alice, bob = FakeSession(), FakeSession()
        await nursery.start(alice.run, manager, room, "alice")
        await nursery.start(bob.run, manager, room, "bob")
        with manager.events() as events:
            manager.delete_room("r")
            assert manager.room("r") is None
            with trio.fail_after(1):
                await alice.ended.wait()
                await bob.ended.wait()
            assert drain(events) == [
                "participant_connection_aborted:alice",
                "participant_connection_aborted:bob",
                "room_finished",
            ]
        for session in (alice, bob):
            assert session.kinds()[0] == "join"
            leave_req = session.leave()
            assert leave_req.reason == Reason.ROOM_DELETED
            assert leave_req.action == rtc.LeaveRequest.Action.DISCONNECT
            assert session.kinds()[-1] == "leave", "nothing may follow the LeaveRequest"
            assert session.close_reason == Reason.ROOM_DELETED
        assert not manager.has_session(alice.sid) and not manager.has_session(bob.sid)


@pytest.mark.trio
async def test_leaving_participant_is_announced_and_not_told_to_leave(
    autojump_clock: object,
) -> None:
    async with running() as manager, trio.open_nursery() as nursery:
        room = manager.create_room("r")
        alice, bob = FakeSession(), FakeSession()
        await nursery.start(alice.run, manager, room, "alice")
        await nursery.start(bob.run, manager, room, "bob")
        manager.apply(room, room.transition(bob.sid, ParticipantEvent.TRANSPORT_CONNECTED))
        with manager.events() as events:
            manager.apply(room, room.remove(bob.sid, Reason.CLIENT_INITIATED, now=manager.now()))
            with trio.fail_after(1):
                await bob.ended.wait()
            assert drain(events) == ["participant_left:bob"]
        assert "leave" not in bob.kinds()
        await trio.testing.wait_all_tasks_blocked()
        gone = [
            p
            for m in alice.received
            if m.HasField("update")
            for p in m.update.participants
            if p.identity == "bob"
        ]
        assert gone[-1].state == models.ParticipantInfo.State.DISCONNECTED
        assert gone[-1].disconnect_reason == Reason.CLIENT_INITIATED
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_manager_shutdown_tells_everyone(autojump_clock: object) -> None:
    alice = FakeSession()
    manager = RoomManager()
    with manager.events() as events:
        async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            room = manager.create_room("r")
            outer.start_soon(alice.run, manager, room, "alice")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert alice.leave().reason == Reason.SERVER_SHUTDOWN
        assert alice.close_reason == Reason.SERVER_SHUTDOWN
        assert manager.rooms == []
        assert drain(events) == [
            "room_started",
            "participant_connection_aborted:alice",
            "room_finished",
        ]


@pytest.mark.trio
async def test_session_ending_on_its_own_starts_departure_timeout(
    autojump_clock: object,
) -> None:
    async with running(departure_timeout_s=20) as manager, trio.open_nursery() as nursery:
        room = manager.create_room("r")
        alice = FakeSession()
        await nursery.start(alice.run, manager, room, "alice")
        await sleep_until(5)
        alice.transport.hang_up()  # its socket closed (media never connected)
        await sleep_until(6)
        assert alice.ended.is_set() and not room.participants
        await sleep_until(24.9)
        assert manager.room("r") is room
        await sleep_until(25)
        assert manager.room("r") is None


# ---- liveness ------------------------------------------------------------------------------


@pytest.mark.trio
async def test_ping_timeout_drops_the_connection_not_the_participant(
    autojump_clock: object,
) -> None:
    # Clients that ping are held to the ping timeout; clients that never ping are not
    # (server-sdk-go). A connection dropped for silence leaves a participant with media
    # waiting RESUME_WINDOW_S for its client; one without media goes at once.
    async with running() as manager, trio.open_nursery() as nursery:
        timeout = manager.server.ping_timeout_s
        room = manager.create_room("r")
        never, stops, active = FakeSession(), FakeSession(), FakeSession()
        for session, name in ((never, "never"), (stops, "stops"), (active, "active")):
            await nursery.start(session.run, manager, room, name)
        manager.apply(room, room.transition(active.sid, ParticipantEvent.TRANSPORT_CONNECTED))
        nursery.start_soon(stops.keep_talking, 100)
        nursery.start_soon(active.keep_talking, 100)
        last_ping = 95  # every 5 s while the clock is below 100
        await sleep_until(last_ping + timeout - 1)
        assert {never.sid, stops.sid, active.sid} <= set(room.participants)
        await sleep_until(last_ping + timeout + 2)
        assert never.sid in room.participants  # silence alone removes nobody
        assert stops.sid not in room.participants and stops.transport.closed
        assert stops.close_reason == Reason.SIGNAL_CLOSE
        assert active.sid in room.participants and active.transport.closed
        await sleep_until(last_ping + timeout + RESUME_WINDOW_S + 3)
        assert active.sid not in room.participants
        assert active.close_reason == Reason.SIGNAL_CLOSE
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_resume_keeps_the_participant_and_what_was_sent_meanwhile(
    autojump_clock: object,
) -> None:
    async with running() as manager, trio.open_nursery() as nursery:
        room = manager.create_room("r")
        alice, bob = FakeSession(), FakeSession()
        await nursery.start(alice.run, manager, room, "alice")
        await nursery.start(bob.run, manager, room, "bob")
        manager.apply(room, room.transition(alice.sid, ParticipantEvent.TRANSPORT_CONNECTED))
        alice.transport.hang_up()
        await sleep_until(2)
        assert alice.session is not None and alice.session.state is SessionState.DETACHED
        assert alice.sid in room.participants
        manager.apply(room, room.set_metadata("while away"))
        again = MemoryTransport()
        await nursery.start(
            testing.resume, manager, testing.claims_for("alice", "r"), alice.sid, again
        )
        await trio.testing.wait_all_tasks_blocked()
        kinds = again.kinds()
        assert kinds[0] == "reconnect" and "join" not in kinds
        updates = [m.room_update.room for m in again.received if m.HasField("room_update")]
        assert updates[0].metadata == "while away"
        assert alice.sid in room.participants
        assert not [
            m
            for m in bob.received
            if m.HasField("update")
            and any(
                p.identity == "alice" and p.state == models.ParticipantInfo.State.DISCONNECTED
                for p in m.update.participants
            )
        ]
        # Someone else's token never continues alice's session.
        with pytest.raises(ResumeRefused):
            manager.resume(testing.claims_for("bob", "r"), alice.sid)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_media_never_connecting_is_a_join_failure(autojump_clock: object) -> None:
    async with running() as manager, trio.open_nursery() as nursery:
        manager.media = Mock(connected=True)
        room = manager.create_room("r")
        stuck, connected = FakeSession(), FakeSession()
        await nursery.start(stuck.run, manager, room, "stuck")
        await nursery.start(connected.run, manager, room, "connected")
        manager.apply(room, room.transition(connected.sid, ParticipantEvent.TRANSPORT_CONNECTED))
        for session in (stuck, connected):
            nursery.start_soon(session.keep_talking, 1000)
        await sleep_until(JOIN_FAILURE_TIMEOUT_S)
        assert stuck.sid in room.participants
        await sleep_until(JOIN_FAILURE_TIMEOUT_S + 2)
        assert stuck.sid not in room.participants
        assert stuck.leave().reason == Reason.JOIN_FAILURE
        assert connected.sid in room.participants
        nursery.cancel_scope.cancel()


# ---- a model of room lifetime, checked on random schedules ----------------------------------

EMPTY_S = 30
DEPARTURE_S = 10
NAMES = ["ann", "ben", "cat"]

Step = tuple[str, object]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from(NAMES)),
        st.tuples(st.just("leave"), st.sampled_from(NAMES)),
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=45)),
    ),
    max_size=25,
)


@attrs.define
class LifetimeModel:
    now: int = 0
    exists: bool = True
    present: set[str] = attrs.field(factory=set)
    anyone_joined: bool = False
    created_at: int = 0
    last_departure: int = 0

    def deadline(self) -> int | None:
        if not self.exists or self.present:
            return None
        if not self.anyone_joined:
            return self.created_at + EMPTY_S
        return self.last_departure + DEPARTURE_S

    def advance(self, to: int) -> None:
        deadline = self.deadline()
        if deadline is not None and deadline <= to:
            self.exists = False
        self.now = to

    def join(self, who: str) -> None:
        if not self.exists:
            self.exists, self.created_at, self.anyone_joined = True, self.now, False
        self.present.add(who)
        self.anyone_joined = True

    def leave(self, who: str) -> None:
        if self.exists and who in self.present:
            self.present.discard(who)
            if not self.present:
                self.last_departure = self.now


@settings(max_examples=150, deadline=None)
@given(steps)
def test_room_exists_exactly_when_the_model_says(schedule: list[Step]) -> None:
    async def main() -> None:
        model = LifetimeModel()
        async with running(empty_timeout_s=EMPTY_S, departure_timeout_s=DEPARTURE_S) as m:
            with m.events() as events:
                m.create_room("r")
                for action, arg in schedule:
                    if action == "wait":
                        assert isinstance(arg, int)
                        model.advance(model.now + arg)
                        await sleep_until(model.now)
                    elif action == "join":
                        assert isinstance(arg, str)
                        model.join(arg)
                        join(m, "r", arg)
                    elif action == "leave":
                        assert isinstance(arg, str)
                        if model.exists and arg in model.present:
                            leave(m, "r", arg)
                        model.leave(arg)
                    room = m.room("r")
                    assert (room is not None) == model.exists, (action, arg, model)
                    if room is not None:
                        present = {p.identity for p in room.participants.values()}
                        assert present == model.present
                        room.check_invariants()
                kinds = [ev.event for ev in _all(events)]
                alive = kinds.count("room_started") - kinds.count("room_finished")
                assert alive == (1 if model.exists else 0)
                # Started and finished alternate, starting with started.
                lifetimes = [k for k in kinds if k in ("room_started", "room_finished")]
                assert lifetimes[::2] == ["room_started"] * len(lifetimes[::2])
                assert lifetimes[1::2] == ["room_finished"] * len(lifetimes[1::2])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _all(events: trio.MemoryReceiveChannel[webhook.WebhookEvent]) -> list[webhook.WebhookEvent]:
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out
