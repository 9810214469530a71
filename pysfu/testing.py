"""Test helpers for code that embeds or talks to pysfu (public, like ``trio.testing``).

- :func:`start_server` / :func:`stop_server`: the real server in its own thread with
  its own Trio loop, on free loopback ports, so Trio and asyncio code (the official
  SDKs run on asyncio) drive it the same way; :class:`RunningServer` mints tokens.
- :class:`MemoryTransport`: a signal connection in memory (frames in, responses out),
  and :func:`join`: the server's own join choreography over it, for sans-socket tests
  of rooms and sessions (a manager with the null media plane, a mock clock).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio
from livekit.protocol import rtc

from .auth import Claims, VideoGrant, mint_token
from .config import Config
from .runtime.manager import JoinParams, RoomManager
from .runtime.sessions import ParticipantSession
from .server import Server
from .signal import connection

__all__ = [
    "API_KEY",
    "API_SECRET",
    "MemoryTransport",
    "RunningServer",
    "claims_for",
    "join",
    "make_config",
    "resume",
    "start_server",
    "stop_server",
]

API_KEY = "testkey"
API_SECRET = "testsecret-testsecret-testsecret-0123"

T = TypeVar("T")


@attrs.define
class RunningServer:
    server: Server
    token: trio.lowlevel.TrioToken
    thread: threading.Thread
    box: dict[str, Any] = attrs.field(factory=dict)
    """Holds the server thread's exception, if it died."""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def engine_stats(self) -> dict[str, int]:
        """The media engine's counters and gauges, summed over its shards."""
        media = self.server.media
        assert media is not None, "the server has no media engine yet"
        return dict(media.engine.stats())

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a sync function in the server's Trio thread (room state is not
        thread-safe) and return its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """``call`` from a Trio test (whose own loop must not block)."""
        return await trio.to_thread.run_sync(self.call, fn, *args)

    def token_for(
        self,
        identity: str,
        room: str = "room1",
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: str = "standard",
        **grant: Any,
    ) -> str:
        video = VideoGrant(room_join=True, room=room, **grant)
        return mint_token(
            API_KEY,
            API_SECRET,
            identity=identity,
            grant=video,
            name=name,
            metadata=metadata,
            attributes=attributes,
            kind=kind,
        )

    def admin_token(self, room: str = "", **grant: Any) -> str:
        video = VideoGrant(room=room, room_admin=True, room_create=True, room_list=True, **grant)
        return mint_token(API_KEY, API_SECRET, identity="", grant=video)


def start_server(config: Config) -> RunningServer:
    """Start ``config`` in a background thread; returns once it listens."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        server = Server(config)
        # Keep the run alive after serve() returns until stop_server has seen aclose()
        # complete; otherwise trio's shutdown cancels that call as it returns.
        released = trio.Event()
        box["release"] = released.set
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            box["server"] = server
            box["token"] = trio.lowlevel.current_trio_token()
            ready.set()
        await released.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # surfaced at start, or when the server stops
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(120):
        raise RuntimeError("server did not start within 120 s")
    if "error" in box:
        raise box["error"]
    return RunningServer(server=box["server"], token=box["token"], thread=thread, box=box)


def stop_server(running: RunningServer) -> None:
    if "error" in running.box:
        raise AssertionError("the server crashed") from running.box["error"]
    with contextlib.suppress(trio.RunFinishedError):
        trio.from_thread.run(running.server.aclose, trio_token=running.token)
        trio.from_thread.run_sync(running.box["release"], trio_token=running.token)
    running.thread.join(10)
    if "error" in running.box:
        # A server that died mid-test is a bug even if the test did not notice.
        raise AssertionError("the server crashed") from running.box["error"]


def make_config(**overrides: Any) -> Config:
    """A loopback configuration on free ports with the test key pair."""
    base: dict[str, Any] = {
        "keys": {API_KEY: API_SECRET},
        "bind_addresses": ("127.0.0.1",),
        "port": 0,
        "udp_port": 0,
        "tcp_port": 0,
        # Several shards whatever the machine, and a room's participants spread over
        # them from the second one on: every test with two participants crosses
        # shards. PYSFU_TEST_WORKERS=1 runs the suite on one engine thread.
        "workers": int(os.environ.get("PYSFU_TEST_WORKERS", "2")),
        "shard_spread_after": 1,
    }
    base.update(overrides)
    return Config(**base)


class MemoryTransport:
    """The client end of one signal connection, in memory: :meth:`send_frame` and
    :meth:`hang_up` act as the client; ``received`` holds what the server sent."""

    def __init__(self) -> None:
        self.to_server, self._from_client = trio.open_memory_channel[bytes | str](math.inf)
        self.received: list[rtc.SignalResponse] = []
        self.closed = False

    # ---- the server's side (SignalTransport) ---------------------------------------------

    async def receive(self) -> bytes | str | None:
        try:
            return await self._from_client.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise trio.ClosedResourceError("closed")
        msg = rtc.SignalResponse()
        msg.ParseFromString(data)
        self.on_message(msg)
        self.received.append(msg)

    async def close(self, code: int = 1000) -> None:
        self.closed = True

    # ---- the client's side ------------------------------------------------------------------

    def on_message(self, msg: rtc.SignalResponse) -> None:
        """Called for each message before it is recorded (subclasses check them)."""

    def send_frame(self, frame: bytes | str) -> None:
        self.to_server.send_nowait(frame)

    def send_request(self, req: rtc.SignalRequest) -> None:
        self.send_frame(req.SerializeToString())

    def hang_up(self) -> None:
        self.to_server.close()

    def kinds(self) -> list[str | None]:
        return [m.WhichOneof("message") for m in self.received]


async def join(
    manager: RoomManager,
    claims: Claims,
    transport: MemoryTransport,
    params: JoinParams | None = None,
    *,
    task_status: trio.TaskStatus[ParticipantSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Join as the server does for a WebSocket and serve ``transport`` until it ends
    (``await nursery.start(join, ...)`` gives the session once joined)."""
    session = manager.join(claims, params or JoinParams())
    task_status.started(session)
    await connection.serve(manager, session, transport)


async def resume(
    manager: RoomManager,
    claims: Claims,
    sid: str,
    transport: MemoryTransport,
    *,
    task_status: trio.TaskStatus[ParticipantSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Resume session ``sid`` as the server does for ``reconnect=1`` and serve
    ``transport`` (raises ResumeRefused where the server sends Leave{RECONNECT})."""
    session, first = manager.resume(claims, sid)
    task_status.started(session)
    await connection.serve(manager, session, transport, first=first)


def claims_for(identity: str, room: str, *, api_key: str = API_KEY, **grant: Any) -> Claims:
    """Verified-token claims as a join would carry them (for sans-socket tests)."""
    return Claims(
        api_key=api_key,
        identity=identity,
        video=VideoGrant(room_join=True, room=room, **grant),
        expires_at=time.time() + 3600,
    )
