"""One way to start the real server for integration tests: in its own thread with its
own Trio loop, on free loopback ports, so that Trio and asyncio tests (the official
SDKs run on asyncio) drive it the same way."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs
import pytest
import trio

from pysfu.auth import VideoGrant, mint_token
from pysfu.config import Config
from pysfu.server import Server

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
    base: dict[str, Any] = {
        "keys": {API_KEY: API_SECRET},
        "bind_addresses": ("127.0.0.1",),
        "port": 0,
        "udp_port": 0,
    }
    base.update(overrides)
    return Config(**base)


@pytest.fixture
def server_config() -> Config:
    return make_config()


@pytest.fixture
def server(server_config: Config) -> Iterator[RunningServer]:
    running = start_server(server_config)
    try:
        yield running
    finally:
        stop_server(running)
