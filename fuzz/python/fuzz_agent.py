"""Fuzz the agent worker protocol: up to three worker connections
(``AgentRuntime.serve_worker``) fed WorkerMessages chosen by the fuzzer (register,
availability, job updates, worker status, pings, migration, raw bytes, text frames),
interleaved with rooms opening and closing, participants joining and leaving, explicit
dispatches created and deleted, and time passing (offer timeouts, orphan grace).

Findings: an exception out of a worker connection other than its closing, anything
logged at ERROR, a server message that does not parse, an assignment whose token does
not verify as an AGENT token for the job's room, or a broken dispatcher invariant
(``Dispatcher.check_invariants``). Run:
``python fuzz/python/fuzz_agent.py fuzz/corpus/agent``.
"""

from __future__ import annotations

import contextlib
import sys

from _common import Provider, capture_errors, instrumented, run, run_trio

with instrumented("pysfu", "google.protobuf"):
    import trio
    import trio.lowlevel
    import trio.testing
    from livekit.protocol import agent, models

    from pysfu.auth import Claims, VideoGrant, verify_token
    from pysfu.rtc.dispatch import DispatchError
    from pysfu.runtime.agents import AgentRuntime
    from pysfu.runtime.manager import RoomManager

ERRORS = capture_errors()

KEY, SECRET = "key", "k" * 32
ROOMS = ["r0", "r1"]
NAMES = ["", "bot", "x" * 300]
IDENTITIES = ["", "agent-a", "ann"]
CLAIMS = Claims(api_key=KEY, identity="", video=VideoGrant(agent=True), expires_at=2e9)


class FuzzTransport:
    """A worker connection whose next frame the fuzzer writes when it is read."""

    def __init__(self, fdp: Provider, runtime: AgentRuntime, budget: int) -> None:
        self.fdp = fdp
        self.runtime = runtime
        self.budget = budget
        self.sent: list[bytes] = []
        self.closed = False

    async def receive(self) -> bytes | str | None:
        await trio.lowlevel.checkpoint()
        if self.budget <= 0 or not self.fdp.remaining() or self.closed:
            return None
        self.budget -= 1
        return self.frame()

    def _job_id(self) -> str:
        ids = sorted(self.runtime.dispatcher.jobs)
        if ids and self.fdp.bool():
            return str(self.fdp.pick(ids))
        return self.fdp.text(8)

    def frame(self) -> bytes | str:
        fdp = self.fdp
        op = fdp.int_in(0, 9)
        msg = agent.WorkerMessage()
        if op == 0:
            return fdp.bytes(64)
        if op == 1:
            return fdp.text(8)
        if op == 2:
            msg.register.type = fdp.int_in(0, 3)  # type: ignore[assignment]
            msg.register.agent_name = fdp.pick(NAMES)
            msg.register.version = "1.8.9"
            if fdp.bool():
                msg.register.allowed_permissions.can_publish = fdp.bool()
                msg.register.allowed_permissions.can_publish_sources.append(fdp.int_in(0, 6))  # type: ignore[arg-type]
        elif op in (3, 4):
            a = msg.availability
            a.job_id = self._job_id()
            a.available = op == 3 or fdp.bool()
            a.terminate = fdp.bool() and fdp.bool()
            a.participant_identity = fdp.pick(IDENTITIES)
            a.participant_name = fdp.text(8)
            if fdp.bool():
                a.participant_attributes[fdp.text(4)] = fdp.text(4)
        elif op == 5:
            msg.update_job.job_id = self._job_id()
            msg.update_job.status = fdp.int_in(0, 5)  # type: ignore[assignment]
            msg.update_job.error = fdp.text(8)
        elif op == 6:
            if fdp.bool():
                msg.update_worker.status = fdp.int_in(0, 2)  # type: ignore[assignment]
            msg.update_worker.load = fdp.pick([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")])
        elif op == 7:
            msg.ping.timestamp = fdp.int_in(0, 1 << 15)
        elif op == 8:
            msg.migrate_job.job_ids.extend(self._job_id() for _ in range(fdp.int_in(0, 3)))
        else:
            msg.simulate_job.room.name = fdp.pick(ROOMS)
        return msg.SerializeToString()

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self.sent.append(data)

    async def close(self, code: int = 1000) -> None:
        self.closed = True


def check_sent(runtime: AgentRuntime, transport: FuzzTransport) -> None:
    for data in transport.sent:
        msg = agent.ServerMessage()
        msg.ParseFromString(data)  # raises on a malformed frame: a finding
        if msg.HasField("assignment"):
            claims = verify_token(msg.assignment.token, {KEY: SECRET})
            assert claims.kind == "agent" and claims.video.agent and claims.video.room_join
            assert claims.video.room == msg.assignment.job.room.name
            assert claims.identity
    transport.sent.clear()


async def _main(data: bytes) -> None:
    fdp = Provider(data)
    manager = RoomManager()
    runtime = AgentRuntime(manager, {KEY: SECRET}, server_version="fuzz")
    manager.room_created_hooks.append(runtime.room_created)
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    transports: list[FuzzTransport] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await nursery.start(runtime.run)
        for _ in range(24):
            if not fdp.remaining():
                break
            op = fdp.int_in(0, 7)
            if op == 0 and len(transports) < 3:
                t = FuzzTransport(fdp, runtime, budget=fdp.int_in(1, 12))
                transports.append(t)
                nursery.start_soon(runtime.serve_worker, t, CLAIMS)
            elif op == 1:
                manager.create_room(fdp.pick(ROOMS))
            elif op == 2:
                room = manager.room(fdp.pick(ROOMS))
                if room is not None:
                    manager.delete_room(room.name)
            elif op == 3:
                room = manager.room(fdp.pick(ROOMS))
                if room is not None:
                    _p, fx = room.join(
                        identity=fdp.pick(IDENTITIES) or "ben",
                        now=manager.now(),
                        kind=fdp.pick(
                            [
                                models.ParticipantInfo.Kind.STANDARD,
                                models.ParticipantInfo.Kind.AGENT,
                            ]
                        ),
                    )
                    manager.apply(room, fx)
            elif op == 4:
                room = manager.room(fdp.pick(ROOMS))
                if room is not None and room.participants:
                    sid = fdp.pick(sorted(room.participants))
                    manager.remove(room, sid, models.DisconnectReason.CLIENT_INITIATED)
            elif op == 5:
                with contextlib.suppress(DispatchError):
                    runtime.create_dispatch(fdp.pick(ROOMS), fdp.pick(NAMES[:2]), metadata="m")
            elif op == 6:
                ids = sorted(runtime.dispatcher.dispatches)
                if ids:
                    d = runtime.dispatcher.dispatches[fdp.pick(ids)]
                    runtime.delete_dispatch(d.room, d.id)
            else:
                clock.jump(fdp.pick([0.5, 2.5, 11.0, 31.0]))
            await trio.testing.wait_all_tasks_blocked()
            ERRORS.check()
            runtime.dispatcher.check_invariants()
            for t in transports:
                check_sent(runtime, t)
        nursery.cancel_scope.cancel()
    ERRORS.check()


def test_one_input(data: bytes) -> None:
    run_trio(_main, data)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
