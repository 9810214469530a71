"""A participant built with LiveKit's Go SDK (``github.com/livekit/server-sdk-go/v2``, what
``lk`` and Go apps use) against the real server: tests/go is built once per session."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from livekit.protocol.models import DisconnectReason

from .client_process import build_go_client, go_client
from .conftest import RunningServer
from .sdk_helpers import connected

pytestmark = pytest.mark.asyncio

STAY_S = 60


@pytest.fixture(scope="session")
def go_client_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_client(tmp_path_factory.mktemp("goclient"))


@pytest.mark.slow
async def test_go_participant_that_never_pings_stays(
    server: RunningServer, go_client_binary: Path
) -> None:
    """server-sdk-go sends no signal-level pings (it relies on WebSocket ping/pong): it
    must stay as long as it likes, seen by others throughout, and still get data."""
    async with connected(server, "watcher") as (watcher, watcher_w):
        token = server.token_for("gopher")
        async with go_client(
            go_client_binary, server.url, token, "gopher", duration_s=STAY_S
        ) as gopher:
            joined = await gopher.wait_event("connected")
            await watcher_w.wait_for("participant_connected", lambda p: p.identity == "gopher")
            start = time.monotonic()
            while time.monotonic() < start + STAY_S - 5:  # fail as soon as a side sees a drop
                gone = [a[0] for n, a in watcher_w.seen if n == "participant_disconnected"]
                assert not gone, (
                    f"the Go participant was removed after {time.monotonic() - start:.0f} s, "
                    f"reason {DisconnectReason.Name(gone[0].disconnect_reason or 0)}"
                )
                assert not gopher.saw("disconnected"), gopher.events
                await asyncio.sleep(0.5)
            assert watcher.remote_participants["gopher"].sid == joined["sid"]
            await watcher.local_participant.publish_data(b"still there?", reliable=True)
            got = await gopher.wait_event("data_received", timeout=10)
            assert (got["identity"], got["payload"]) == ("watcher", "still there?")
            await gopher.wait_event("left", timeout=15)
            assert not gopher.saw("disconnected"), gopher.events
