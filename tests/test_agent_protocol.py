"""The ``/agent`` worker protocol and AgentDispatchService on the wire, with a raw
worker (livekit.protocol.agent messages over trio-websocket) against the real server:
what livekit-agents relies on, byte by byte, plus the server's own guarantees
(immediate assignment, migration on reconnect, re-dispatch of a lost worker's job,
dispatch events). The real framework runs in tests/test_agents_e2e.py."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from livekit.protocol import agent, agent_dispatch, webhook
from livekit.protocol import room as room_api
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from pysfu.auth import VideoGrant, mint_token, verify_token
from pysfu.rtc.dispatch import DEFAULT_ORPHAN_GRACE_S

from .conftest import API_KEY, API_SECRET, RunningServer, make_config, start_server, stop_server

pytestmark = pytest.mark.trio

JT = agent.JobType
JS = agent.JobStatus


def worker_token(**grant: bool) -> str:
    return mint_token(
        API_KEY, API_SECRET, identity="", grant=VideoGrant(**({"agent": True} | grant))
    )


class RawWorker:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.id = ""
        self.backlog: list[agent.ServerMessage] = []

    async def send(self, msg: agent.WorkerMessage) -> None:
        await self.ws.send_message(msg.SerializeToString())

    async def expect(self, kind: str, timeout: float = 5) -> agent.ServerMessage:
        for i, msg in enumerate(self.backlog):
            if msg.WhichOneof("message") == kind:
                return self.backlog.pop(i)
        with trio.fail_after(timeout):
            while True:
                data = await self.ws.get_message()
                assert isinstance(data, bytes)
                msg = agent.ServerMessage()
                msg.ParseFromString(data)
                if msg.WhichOneof("message") == kind:
                    return msg
                self.backlog.append(msg)

    async def nothing(self, kind: str, quiet_s: float = 0.5) -> None:
        with trio.move_on_after(quiet_s):
            msg = await self.expect(kind, timeout=quiet_s + 1)
            raise AssertionError(f"unexpected {kind}: {msg}")

    async def accept(self, identity: str) -> agent.JobAssignment:
        req = await self.expect("availability")
        await self.send(
            agent.WorkerMessage(
                availability=agent.AvailabilityResponse(
                    job_id=req.availability.job.id,
                    available=True,
                    participant_identity=identity,
                    participant_name="Raw Agent",
                    participant_attributes={"mine": "yes"},
                )
            )
        )
        return (await self.expect("assignment")).assignment


@asynccontextmanager
async def raw_worker(
    server: RunningServer, agent_name: str = "", job_type: int = JT.JT_ROOM
) -> AsyncIterator[RawWorker]:
    headers = [(b"authorization", f"Bearer {worker_token()}".encode())]
    async with open_websocket_url(server.url + "/agent", extra_headers=headers) as ws:
        w = RawWorker(ws)
        await w.send(
            agent.WorkerMessage(
                register=agent.RegisterWorkerRequest(
                    type=job_type,  # type: ignore[arg-type]
                    agent_name=agent_name,
                    version="raw",
                    allowed_permissions={"can_publish": True, "can_subscribe": True, "agent": True},
                )
            )
        )
        reply = await w.expect("register")
        w.id = reply.register.worker_id
        yield w


def twirp(
    server: RunningServer, service: str, method: str, req: object, room: str
) -> httpx.Response:
    token = mint_token(
        API_KEY,
        API_SECRET,
        identity="",
        grant=VideoGrant(room=room, room_admin=True, room_create=True),
    )
    return httpx.post(
        f"{server.http_url}/twirp/livekit.{service}/{method}",
        content=req.SerializeToString(),  # type: ignore[attr-defined]
        headers={"authorization": f"Bearer {token}", "content-type": "application/protobuf"},
    )


class EventLog:
    """``server.events()`` observed from the server's own Trio thread."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.events: list[webhook.WebhookEvent] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    async def _collect(self) -> None:
        with self.server.server.events() as events:
            self.ready.set()
            while not self.stop.is_set():
                with trio.move_on_after(0.1):
                    self.events.append(await events.receive())

    def run(self) -> None:
        trio.from_thread.run(self._collect, trio_token=self.server.token)

    def named(self, prefix: str) -> list[webhook.WebhookEvent]:
        return [e for e in list(self.events) if e.event.startswith(prefix)]


@asynccontextmanager
async def event_log(server: RunningServer) -> AsyncIterator[EventLog]:
    log = EventLog(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, log.run)
        await trio.to_thread.run_sync(log.ready.wait)
        try:
            yield log
        finally:
            log.stop.set()


async def wait_until(pred: object, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.05)


# ---- tests ------------------------------------------------------------------------------------


async def test_agent_route_needs_the_agent_grant(server: RunningServer) -> None:
    for headers in ([], [(b"authorization", f"Bearer {server.token_for('x')}".encode())]):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(server.url + "/agent", extra_headers=headers):
                pass
        assert info.value.status_code == 401


async def test_register_then_new_room_gets_an_agent_token_at_once(server: RunningServer) -> None:
    async with event_log(server) as events, raw_worker(server) as w:
        assert w.id.startswith("AW_")
        r = twirp(server, "RoomService", "CreateRoom", room_api.CreateRoomRequest(name="fresh"), "")
        assert r.status_code == 200
        req = await w.expect("availability", timeout=2)  # immediate: a worker is free
        job = req.availability.job
        assert job.room.name == "fresh" and job.type == JT.JT_ROOM and job.id.startswith("AJ_")
        assert job.dispatch_id.startswith("AD_")
        await w.send(
            agent.WorkerMessage(
                availability=agent.AvailabilityResponse(
                    job_id=job.id,
                    available=True,
                    participant_identity="raw-agent",
                    participant_name="Raw",
                    participant_attributes={"mine": "yes"},
                )
            )
        )
        assignment = (await w.expect("assignment")).assignment
        claims = verify_token(assignment.token, {API_KEY: API_SECRET})
        assert claims.kind == "agent" and claims.identity == "raw-agent" and claims.name == "Raw"
        assert claims.video.room == "fresh" and claims.video.room_join and claims.video.agent
        assert claims.attributes["lk.agent_name"] == ""
        assert claims.attributes["mine"] == "yes"
        assert claims.attributes["pysfu.agent_job_id"] == job.id
        assert claims.attributes["pysfu.agent_dispatch_id"] == job.dispatch_id
        assert assignment.job.state.status == JS.JS_RUNNING

        await w.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)))
        assert (await w.expect("pong")).pong.last_timestamp == 1234

        await wait_until(lambda: events.named("agent_job_assigned"))
        (assigned,) = events.named("agent_job_assigned")
        assert assigned.job.id == job.id and assigned.job.state.worker_id == w.id
        assert assigned.room.name == "fresh"

        r = twirp(server, "RoomService", "DeleteRoom", room_api.DeleteRoomRequest(room="fresh"), "")
        assert (await w.expect("termination")).termination.job_id == job.id
        await wait_until(lambda: events.named("agent_job_ended"))
        assert events.named("agent_job_ended")[0].job.state.status == JS.JS_SUCCESS


async def test_dispatch_service_and_python_api(server: RunningServer) -> None:
    async with raw_worker(server, agent_name="named") as w:
        workers = await server.acall(server.server.agent_workers)
        assert [(x.id, x.agent_name) for x in workers] == [(w.id, "named")]
        req = agent_dispatch.CreateAgentDispatchRequest(agent_name="named", room="d", metadata="md")
        r = twirp(server, "AgentDispatchService", "CreateDispatch", req, "d")
        assert r.status_code == 200, r.text
        created = agent_dispatch.AgentDispatch.FromString(r.content)
        offer = (await w.expect("availability")).availability.job
        assert offer.dispatch_id == created.id and offer.metadata == "md"
        assert offer.agent_name == "named"
        # Unnamed dispatches (the room's implicit one) are not for a named worker.
        await w.nothing("availability")

        # Another room's admin may not touch this room's dispatches.
        r = twirp(
            server,
            "AgentDispatchService",
            "ListDispatch",
            agent_dispatch.ListAgentDispatchRequest(room="d"),
            "other",
        )
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"

        listed = await server.acall(server.server.list_dispatches, "d")
        assert [d.id for d in listed if d.agent_name == "named"] == [created.id]
        await server.acall(server.server.delete_dispatch, "d", created.id)
        listed = await server.acall(server.server.list_dispatches, "d")
        assert [d.id for d in listed if d.agent_name == "named"] == []
        r = twirp(
            server,
            "AgentDispatchService",
            "DeleteDispatch",
            agent_dispatch.DeleteAgentDispatchRequest(room="d", dispatch_id=created.id),
            "d",
        )
        assert r.status_code == 404


async def test_reconnecting_worker_keeps_its_job(server: RunningServer) -> None:
    await server.acall(server.server.create_room, "keep")
    async with raw_worker(server) as first:
        assignment = await first.accept("agent-keep")
    async with event_log(server) as events, raw_worker(server) as second:
        await second.send(
            agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=[assignment.job.id]))
        )
        await wait_until(lambda: events.named("agent_job_migrated"))
        # Past the grace, no re-dispatch: the job is the reconnected worker's.
        await second.nothing("availability", quiet_s=DEFAULT_ORPHAN_GRACE_S + 1)
        (d,) = await server.acall(server.server.list_dispatches, "keep")
        (job,) = d.state.jobs
        assert job.state.worker_id == second.id and job.state.status == JS.JS_RUNNING


async def test_lost_workers_job_is_dispatched_again(server: RunningServer) -> None:
    await server.acall(server.server.create_room, "move")
    async with raw_worker(server) as doomed:
        first = await doomed.accept("agent-1")
    async with raw_worker(server) as taker:
        # It does not claim the job (no MigrateJobRequest): after the grace the job is
        # dispatched again, as a new job of the same dispatch.
        with trio.fail_after(DEFAULT_ORPHAN_GRACE_S + 5):
            offer = (await taker.expect("availability", timeout=30)).availability
        assert offer.job.room.name == "move" and offer.job.id != first.job.id
        assert offer.job.dispatch_id == first.job.dispatch_id
    (d,) = await server.acall(server.server.list_dispatches, "move")
    assert (d.state.jobs[0].state.status, d.state.jobs[0].state.error) == (
        JS.JS_FAILED,
        "worker lost",
    )


async def test_broken_workers_are_closed_and_the_server_lives(server: RunningServer) -> None:
    headers = [(b"authorization", f"Bearer {worker_token()}".encode())]
    for frame in (b"\xff\xff\xff", "text", None):
        async with open_websocket_url(server.url + "/agent", extra_headers=headers) as ws:
            if frame is None:  # registered, then garbage
                await ws.send_message(
                    agent.WorkerMessage(
                        register=agent.RegisterWorkerRequest(type=7)
                    ).SerializeToString()  # type: ignore[arg-type]
                )
            else:
                await ws.send_message(frame)
            with trio.fail_after(5), pytest.raises(Exception):  # noqa: B017 - any close
                while True:
                    await ws.get_message()
    assert await server.acall(server.server.agent_workers) == []
    async with raw_worker(server) as w:
        assert w.id


async def test_create_room_agents(server: RunningServer) -> None:
    async with raw_worker(server, agent_name="cr") as room_worker:
        req = room_api.CreateRoomRequest(
            name="configured",
            agents=[agent_dispatch.RoomAgentDispatch(agent_name="cr", metadata="from-create")],
        )
        assert twirp(server, "RoomService", "CreateRoom", req, "").status_code == 200
        job = (await room_worker.expect("availability")).availability.job
        assert (job.type, job.metadata, job.room.name) == (JT.JT_ROOM, "from-create", "configured")


async def test_dispatch_to_a_missing_room_needs_auto_create() -> None:
    running = await trio.to_thread.run_sync(start_server, make_config(auto_create=False))
    try:
        req = agent_dispatch.CreateAgentDispatchRequest(agent_name="x", room="nope")
        r = twirp(running, "AgentDispatchService", "CreateDispatch", req, "nope")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert await running.acall(running.server.room, "nope") is None
    finally:
        await trio.to_thread.run_sync(stop_server, running)
