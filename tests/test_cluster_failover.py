"""Losing a node, losing Redis, draining a node: clients of the official SDK come back
by themselves, through the nodes that remain."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest
from livekit import api, rtc

from pysfu.testing import API_KEY, API_SECRET, start_server, stop_server

from .cluster_helpers import (
    NodeProcess,
    RedisProcess,
    cluster,
    needs_redis,
    node_config,
    wait_registered,
    wait_settled,
    wait_views,
)
from .cluster_helpers import redis_server as redis_server
from .sdk_helpers import AudioProbe, ToneSource, Watcher
from .test_cluster import join_via, lkapi

pytestmark = [pytest.mark.asyncio, needs_redis]

FAILOVER_S = 30.0
"""The issue's bound: both participants back in the room, media flowing."""


@pytest.fixture
def node_process(redis_server: RedisProcess) -> Iterator[NodeProcess]:
    node = NodeProcess(redis_server, extra_yaml="room: {departure_timeout: 1}\n")
    try:
        yield node
    finally:
        node.close()


async def _admin(url: str) -> api.LiveKitAPI:
    return api.LiveKitAPI(url=url, api_key=API_KEY, api_secret=API_SECRET)


async def _hears(watcher: Watcher, other: str, timeout: float) -> AudioProbe:
    args = await watcher.wait_for(
        "track_subscribed",
        lambda t, pub, p: p.identity == other and t.kind == rtc.TrackKind.KIND_AUDIO,
        timeout=timeout,
    )
    probe = AudioProbe(args[0])
    await probe.wait_tone(present=True, timeout=timeout)
    return probe


async def test_kill_9_of_the_rooms_node(
    redis_server: RedisProcess, node_process: NodeProcess
) -> None:
    # The room is made while the doomed node is alone, so it is placed there.
    wait_registered(redis_server, 1)
    client = await _admin(node_process.http_url)
    try:
        await client.room.create_room(api.CreateRoomRequest(name="doomed"))
    finally:
        await client.aclose()
    survivor = start_server(node_config(redis_server))
    tones = [ToneSource(), ToneSource()]
    probes: list[AudioProbe] = []
    rooms: list[rtc.Room] = []
    try:
        wait_registered(redis_server, 2)
        alice, alice_w = await join_via(survivor, "alice", "doomed")
        bob, bob_w = await join_via(survivor, "bob", "doomed")
        rooms = [alice, bob]
        assert survivor.server.room("doomed") is None  # relayed to the doomed node
        await tones[0].publish(alice)
        await tones[1].publish(bob)
        probes += [await _hears(bob_w, "alice", 15), await _hears(alice_w, "bob", 15)]
        for probe in probes:
            await probe.aclose()
        probes.clear()

        after = [Watcher(alice), Watcher(bob)]
        node_process.kill()
        killed_at = time.monotonic()
        # The SDKs find the signal gone, fail to resume, rejoin through the same URL;
        # the survivor sees the dead node's rooms unplaced and hosts the room itself.
        probes.append(await _hears(after[1], "alice", FAILOVER_S))
        remaining = FAILOVER_S - (time.monotonic() - killed_at)
        probes.append(await _hears(after[0], "bob", max(remaining, 1)))
        assert time.monotonic() - killed_at < FAILOVER_S
        room = survivor.server.room("doomed")
        assert room is not None
        assert sorted(p.identity for p in room.participants.values()) == ["alice", "bob"]
        async with lkapi(survivor) as client:
            listed = await client.room.list_rooms(api.ListRoomsRequest())
            assert [r.name for r in listed.rooms] == ["doomed"]
    finally:
        for probe in probes:
            await probe.aclose()
        for tone in tones:
            await tone.aclose()
        for r in rooms:
            await r.disconnect()
        stop_server(survivor)


async def test_nodes_recover_when_redis_restarts(redis_server: RedisProcess) -> None:
    with cluster(redis_server, 2) as nodes:
        alice, alice_w = await join_via(nodes[0], "alice", "kept")
        try:
            host = next(n for n in nodes if n.server.room("kept") is not None)
            other = nodes[1] if host is nodes[0] else nodes[0]
            redis_server.stop()
            await asyncio.sleep(2)  # heartbeats fail meanwhile; the room goes on
            redis_server.start()  # empty: no nodes, no placements
            wait_views(nodes)
            wait_settled(nodes)
            # The host re-asserted its room: a join through the other node finds it.
            bob, _ = await join_via(other, "bob", "kept")
            try:
                await alice_w.wait_for("participant_connected", lambda p: p.identity == "bob")
                assert other.server.room("kept") is None
                for node in nodes:
                    async with lkapi(node) as client:
                        listed = await client.room.list_rooms(api.ListRoomsRequest())
                        assert [(r.name, r.num_participants) for r in listed.rooms] == [("kept", 2)]
            finally:
                await bob.disconnect()
        finally:
            await alice.disconnect()


async def test_sigterm_drains_the_node(
    redis_server: RedisProcess, node_process: NodeProcess
) -> None:
    # Its room is made while it is alone, so it is placed there.
    wait_registered(redis_server, 1)
    client = await _admin(node_process.http_url)
    try:
        await client.room.create_room(api.CreateRoomRequest(name="before"))
    finally:
        await client.aclose()
    peer = start_server(node_config(redis_server))
    try:
        wait_registered(redis_server, 2)
        alice, alice_w = await join_via(peer, "alice", "before")
        assert peer.server.room("before") is None  # relayed to the draining node
        node_process.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)  # its DRAINING heartbeat is out
        async with lkapi(peer) as api_client:
            for i in range(8):
                await api_client.room.create_room(api.CreateRoomRequest(name=f"after-{i}"))
        # No new room went to the draining node (random selector: 1/256 by chance).
        assert all(peer.server.room(f"after-{i}") is not None for i in range(8))
        # Its room still works until it finishes; then the node exits by itself.
        assert node_process.proc.poll() is None
        bob, _ = await join_via(peer, "bob", "before")
        await alice_w.wait_for("participant_connected", lambda p: p.identity == "bob")
        await bob.disconnect()
        await alice.disconnect()
        assert await asyncio.to_thread(node_process.proc.wait, 20) == 0
    finally:
        stop_server(peer)


async def test_drain_moves_rooms_that_do_not_finish(redis_server: RedisProcess) -> None:
    import trio

    leaving = start_server(node_config(redis_server))
    staying = None
    tones = [ToneSource(), ToneSource()]
    rooms: list[rtc.Room] = []
    probes: list[AudioProbe] = []
    try:
        wait_registered(redis_server, 1)
        async with lkapi(leaving) as client:
            await client.room.create_room(api.CreateRoomRequest(name="moving"))
        staying = start_server(node_config(redis_server))
        wait_registered(redis_server, 2)
        alice, _ = await join_via(staying, "alice", "moving")
        bob, bob_w = await join_via(staying, "bob", "moving")
        rooms = [alice, bob]
        assert leaving.server.room("moving") is not None
        await tones[0].publish(alice)
        await tones[1].publish(bob)
        probes.append(await _hears(bob_w, "alice", 15))
        after = [Watcher(alice), Watcher(bob)]

        def drain() -> None:
            trio.from_thread.run(leaving.server.drain, 1.0, trio_token=leaving.token)

        await asyncio.to_thread(drain)
        # Told to reconnect (MIGRATION), the SDKs rejoin; the room is re-created on
        # the node that is not draining, and media flows there.
        probes.append(await _hears(after[1], "alice", FAILOVER_S))
        probes.append(await _hears(after[0], "bob", FAILOVER_S))
        assert leaving.server.room("moving") is None
        room = staying.server.room("moving")
        assert room is not None
        assert sorted(p.identity for p in room.participants.values()) == ["alice", "bob"]
    finally:
        for probe in probes:
            await probe.aclose()
        for tone in tones:
            await tone.aclose()
        for r in rooms:
            await r.disconnect()
        stop_server(leaving)
        if staying is not None:
            stop_server(staying)
