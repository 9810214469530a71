"""Several pysfu nodes sharing one Redis (``redis:``), driven with the official SDKs:
a room lives on one node, clients connect through any node, the server API answers
from any node, rooms spread over the nodes, webhooks go out once per event."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from livekit import api, rtc

from pysfu.config import NodeSelectorConfig
from pysfu.testing import API_KEY, API_SECRET, RunningServer

from .cluster_helpers import RedisProcess, cluster, needs_redis, node_ids
from .cluster_helpers import redis_server as redis_server
from .sdk_helpers import AudioProbe, ToneSource, Watcher
from .test_webhooks_e2e import Receiver

pytestmark = [pytest.mark.asyncio, needs_redis]


@pytest.fixture
def two_nodes(redis_server: RedisProcess) -> Iterator[list[RunningServer]]:
    with cluster(redis_server, 2) as nodes:
        yield nodes


def host_of(nodes: list[RunningServer], room: str) -> RunningServer:
    hosts = [n for n in nodes if n.server.room(room) is not None]
    assert len(hosts) == 1, f"room {room!r} is on {len(hosts)} nodes"
    return hosts[0]


async def join_via(
    node: RunningServer, identity: str, room: str = "room1"
) -> tuple[rtc.Room, Watcher]:
    r = rtc.Room()
    watcher = Watcher(r)
    await r.connect(
        node.url,
        node.token_for(identity, room),
        rtc.RoomOptions(auto_subscribe=True, connect_timeout=15),
    )
    return r, watcher


@asynccontextmanager
async def lkapi(node: RunningServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(url=node.http_url, api_key=API_KEY, api_secret=API_SECRET)
    try:
        yield client
    finally:
        await client.aclose()


async def test_participants_on_different_nodes_hear_each_other(
    two_nodes: list[RunningServer],
) -> None:
    a, b = two_nodes
    alice, alice_w = await join_via(a, "alice")
    bob, bob_w = await join_via(b, "bob")
    tones = [ToneSource(440.0), ToneSource(440.0)]
    try:
        host = host_of(two_nodes, "room1")
        await alice_w.wait_for("participant_connected", lambda p: p.identity == "bob")
        assert "alice" in bob.remote_participants
        await tones[0].publish(alice)
        await tones[1].publish(bob)
        heard = []
        for watcher, other in ((bob_w, "alice"), (alice_w, "bob")):
            args = await watcher.wait_for(
                "track_subscribed",
                lambda t, pub, p, other=other: p.identity == other
                and t.kind == rtc.TrackKind.KIND_AUDIO,
            )
            heard.append(AudioProbe(args[0]))
        try:
            for probe in heard:
                await probe.wait_tone(present=True)
        finally:
            for probe in heard:
                await probe.aclose()
        assert len(host.server.room("room1").participants) == 2  # type: ignore[union-attr]
    finally:
        for tone in tones:
            await tone.aclose()
        await alice.disconnect()
        await bob.disconnect()
