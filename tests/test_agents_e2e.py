"""Real livekit-agents workers (PyPI ``livekit-agents==1.8.9``) against the real server.

The workers run tests/agent_worker/tone_agent.py as their own processes, from a
separate virtualenv: livekit-agents pins ``livekit==1.1.21`` while these tests use
the ``livekit`` 1.2.x SDK, and one environment cannot hold both. The session fixture
``agents_python`` makes that virtualenv once (``.venv-agents`` at the repository root,
reused while it holds the pinned version) or uses ``PYSFU_AGENTS_PYTHON`` when set.
No AI plugin and no network: the agent plays a tone, answers an RPC and echoes data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from livekit import api, rtc
from livekit.protocol import agent as agent_proto

from pysfu.auth import VideoGrant, mint_token

from .conftest import API_KEY, API_SECRET, RunningServer
from .sdk_helpers import AudioProbe, Watcher, join

ROOT = pathlib.Path(__file__).resolve().parent.parent
AGENT_SCRIPT = pathlib.Path(__file__).resolve().parent / "agent_worker" / "tone_agent.py"
AGENTS_REQUIREMENT = "livekit-agents==1.8.9"
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
JS = agent_proto.JobStatus

pytestmark = pytest.mark.asyncio


# ---- the agents virtualenv and worker processes --------------------------------------------


def _has_agents(python: pathlib.Path) -> bool:
    if not python.exists():
        return False
    probe = "import livekit.agents, sys; sys.exit(livekit.agents.__version__ != '1.8.9')"
    return (
        subprocess.run([str(python), "-c", probe], capture_output=True, check=False).returncode == 0
    )


@pytest.fixture(scope="session")
def agents_python() -> pathlib.Path:
    """An interpreter with livekit-agents 1.8.9: ``PYSFU_AGENTS_PYTHON``, or
    ``.venv-agents`` made here on first use (``python -m venv`` + pip from PyPI)."""
    override = os.environ.get("PYSFU_AGENTS_PYTHON")
    if override:
        python = pathlib.Path(override)
        assert _has_agents(python), f"PYSFU_AGENTS_PYTHON={override} lacks {AGENTS_REQUIREMENT}"
        return python
    venv = ROOT / ".venv-agents"
    python = venv / "bin" / "python"
    if not _has_agents(python):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", AGENTS_REQUIREMENT],
            check=True,
            timeout=1200,
        )
    assert _has_agents(python)
    return python


class WorkerProcess:
    """One ``tone_agent.py start`` process group (the worker and its job processes)."""

    def __init__(self, python: pathlib.Path, server: RunningServer, log: pathlib.Path, **env: str):
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(python), str(AGENT_SCRIPT), "start", "--log-level", "INFO"],
            env={
                **os.environ,
                "LIVEKIT_URL": server.url,
                "LIVEKIT_API_KEY": API_KEY,
                "LIVEKIT_API_SECRET": API_SECRET,
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=AGENT_SCRIPT.parent,
            start_new_session=True,
        )
        self.worker_id = ""

    def kill(self) -> None:
        """SIGKILL the whole group, as a machine that dies: nothing says goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray job processes
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _worker_ids(server: RunningServer) -> set[str]:
    return set(server.call(lambda: [w.id for w in server.server.agent_workers()]))


@pytest.fixture
def workers(
    agents_python: pathlib.Path, server: RunningServer, tmp_path: pathlib.Path
) -> Iterator[Any]:
    """``await workers.start(**env)`` starts a worker and returns once it registered."""
    started: list[WorkerProcess] = []

    class Starter:
        async def start(self, timeout: float = 90, **env: str) -> WorkerProcess:
            before = _worker_ids(server)
            w = WorkerProcess(agents_python, server, tmp_path / f"worker{len(started)}.log", **env)
            started.append(w)
            deadline = time.monotonic() + timeout
            while not (new := _worker_ids(server) - before):
                assert w.proc.poll() is None, f"worker exited:\n{w.output()}"
                assert time.monotonic() < deadline, f"worker did not register:\n{w.output()}"
                await asyncio.sleep(0.2)
            (w.worker_id,) = new
            return w

    try:
        yield Starter()
    finally:
        for w in started:
            w.stop()


# ---- helpers seen from a participant -------------------------------------------------------


async def wait_agent(
    watcher: Watcher, room: rtc.Room, timeout: float = 20
) -> rtc.RemoteParticipant:
    for p in room.remote_participants.values():
        if p.kind == AGENT_KIND:
            return p
    (p,) = await watcher.wait_for(
        "participant_connected", lambda p: p.kind == AGENT_KIND, timeout=timeout
    )
    assert isinstance(p, rtc.RemoteParticipant)
    return p


async def hear(watcher: Watcher, agent: rtc.RemoteParticipant, timeout: float = 20) -> None:
    """The agent's track reaches us and carries its tone."""
    track, _pub, _who = await watcher.wait_for(
        "track_subscribed", lambda t, p, who: who.identity == agent.identity, timeout=timeout
    )
    probe = AudioProbe(track)
    try:
        await probe.wait_tone(True, timeout=timeout)
    finally:
        await probe.aclose()


@contextlib.asynccontextmanager
async def admin_api(server: RunningServer) -> AsyncIterator[api.LiveKitAPI]:
    lk = api.LiveKitAPI(server.http_url, API_KEY, API_SECRET)
    try:
        yield lk
    finally:
        await lk.aclose()


async def eventually(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


# ---- tests ------------------------------------------------------------------------------------


async def test_unnamed_worker_joins_new_rooms_and_takes_the_next_job(
    server: RunningServer, workers: Any
) -> None:
    worker = await workers.start()
    room, watcher = await join(server, "ann", room="auto")
    try:
        agent = await wait_agent(watcher, room)
        assert agent.attributes["lk.agent_name"] == ""
        assert agent.attributes["pysfu.agent_job_id"].startswith("AJ_")
        await hear(watcher, agent)
        reply = await room.local_participant.perform_rpc(
            destination_identity=agent.identity, method="echo", payload="hello agent"
        )
        assert reply == "hello agent"
        await room.local_participant.publish_data(b"ping", topic="t")
        await watcher.wait_for(
            "data_received", lambda pkt: pkt.topic == "echo" and pkt.data == b"ping"
        )
    finally:
        await room.disconnect()

    # Deleting the room ends the job; the worker is free and takes the next room's.
    async with admin_api(server) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room="auto"))

    async def idle() -> bool:
        return server.call(lambda: all(not w.jobs for w in server.server.agent_workers()))

    await eventually(idle)
    room, watcher = await join(server, "ben", room="next")
    try:
        agent = await wait_agent(watcher, room)
        await hear(watcher, agent)
        jobs = server.call(lambda: [w.jobs for w in server.server.agent_workers()])
        assert [len(j) for j in jobs] == [1]
    finally:
        await room.disconnect()
    assert worker.proc.poll() is None


async def test_named_agent_dispatch_api_and_token_room_config(
    server: RunningServer, workers: Any
) -> None:
    await workers.start(AGENT_NAME="bot")
    async with admin_api(server) as lk:
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="bot", room="named", metadata="job-md")
        )
        assert dispatch.id.startswith("AD_") and dispatch.agent_name == "bot"
        room, watcher = await join(server, "ann", room="named")
        try:
            agent = await wait_agent(watcher, room)
            assert agent.attributes["lk.agent_name"] == "bot"
            assert agent.attributes["pysfu.agent_dispatch_id"] == dispatch.id

            async def metadata_announced() -> bool:
                return agent.attributes.get("job_metadata") == "job-md"

            await eventually(metadata_announced)
            await hear(watcher, agent)

            listed = await lk.agent_dispatch.list_dispatch(room_name="named")
            named = [d for d in listed if d.agent_name == "bot"]
            assert [d.id for d in named] == [dispatch.id]
            (job,) = named[0].state.jobs
            assert job.state.status == JS.JS_RUNNING
            assert job.state.participant_identity == agent.identity
            assert job.metadata == "job-md"

            await lk.agent_dispatch.delete_dispatch(dispatch.id, "named")
            await watcher.wait_for(
                "participant_disconnected", lambda p: p.identity == agent.identity, timeout=20
            )
            listed = await lk.agent_dispatch.list_dispatch(room_name="named")
            assert [d for d in listed if d.agent_name == "bot"] == []
        finally:
            await room.disconnect()

    # The holder of a token whose roomConfig names the agent creates the room with it.
    token = mint_token(
        API_KEY,
        API_SECRET,
        identity="cat",
        grant=VideoGrant(room_join=True, room="configured"),
        room_config={"agents": [{"agentName": "bot", "metadata": "from-token"}]},
    )
    room = rtc.Room()
    watcher = Watcher(room)
    await room.connect(server.url, token, rtc.RoomOptions(connect_timeout=15))
    try:
        agent = await wait_agent(watcher, room)
        assert agent.attributes["lk.agent_name"] == "bot"

        async def from_token() -> bool:
            return agent.attributes.get("job_metadata") == "from-token"

        await eventually(from_token)
    finally:
        await room.disconnect()


async def test_two_workers_share_jobs_and_a_killed_workers_job_moves(
    server: RunningServer, workers: Any
) -> None:
    first = await workers.start()
    second = await workers.start()
    rooms: list[tuple[rtc.Room, Watcher]] = []
    try:
        for name in ("share1", "share2"):
            r, w = await join(server, f"user-{name}", room=name)
            rooms.append((r, w))
            await wait_agent(w, r)

        def job_counts() -> dict[str, int]:
            return {w.id: len(w.jobs) for w in server.server.agent_workers()}

        assert server.call(job_counts) == {first.worker_id: 1, second.worker_id: 1}

        def worker_of(room_name: str) -> str:
            (d,) = server.server.list_dispatches(room_name)
            return next(j.state.worker_id for j in d.state.jobs if j.state.status == JS.JS_RUNNING)

        victim = first if server.call(worker_of, "share1") == first.worker_id else second
        survivor = second if victim is first else first
        victim_room = "share1" if server.call(worker_of, "share1") == victim.worker_id else "share2"
        r, w = rooms[0] if victim_room == "share1" else rooms[1]
        old_agent = await wait_agent(w, r)
        await hear(w, old_agent)

        killed_at = time.monotonic()
        victim.kill()
        (new_agent,) = await w.wait_for(
            "participant_connected",
            lambda p: p.kind == AGENT_KIND and p.identity != old_agent.identity,
            timeout=20,
        )
        await hear(w, new_agent)
        assert time.monotonic() - killed_at < 20
        assert server.call(worker_of, victim_room) == survivor.worker_id
        (d,) = server.call(server.server.list_dispatches, victim_room)
        statuses = [(j.state.status, j.state.error) for j in d.state.jobs]
        assert statuses == [(JS.JS_FAILED, "worker lost"), (JS.JS_RUNNING, "")]
        # The lost worker's agent is not left behind in the room.
        await w.wait_for(
            "participant_disconnected", lambda p: p.identity == old_agent.identity, timeout=20
        )
    finally:
        for r, _ in rooms:
            await r.disconnect()


async def test_agent_session_room_output_plays_once_subscribed(
    server: RunningServer, workers: Any
) -> None:
    """The agents framework's room audio output (what AgentSession speaks through)
    sends nothing until ``wait_for_subscription`` returns, i.e. until the server says
    TrackSubscribed to the agent. It must play to a subscriber."""
    await workers.start(AGENT_OUTPUT="roomio")
    room, watcher = await join(server, "listener", room="roomio")
    try:
        agent = await wait_agent(watcher, room)
        await hear(watcher, agent, timeout=30)
    finally:
        await room.disconnect()


async def test_participant_job_per_joining_participant(server: RunningServer) -> None:
    """A JT_PARTICIPANT worker gets one job per (non-agent) participant, naming it
    (a raw worker over ``websockets``: the job type, not the framework, is the point)."""
    import websockets

    token = mint_token(API_KEY, API_SECRET, identity="", grant=VideoGrant(agent=True))
    async with websockets.connect(
        server.url + "/agent", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        register = agent_proto.WorkerMessage(
            register=agent_proto.RegisterWorkerRequest(type=agent_proto.JobType.JT_PARTICIPANT)
        )
        await ws.send(register.SerializeToString())
        reply = agent_proto.ServerMessage.FromString(await ws.recv())  # type: ignore[arg-type]
        assert reply.register.worker_id.startswith("AW_")
        room, _watcher = await join(server, "pat", room="per-participant")
        try:
            async with asyncio.timeout(15):
                while True:
                    msg = agent_proto.ServerMessage.FromString(await ws.recv())  # type: ignore[arg-type]
                    if msg.HasField("availability"):
                        break
            job = msg.availability.job
            assert job.type == agent_proto.JobType.JT_PARTICIPANT
            assert job.participant.identity == "pat" and job.room.name == "per-participant"
        finally:
            await room.disconnect()
