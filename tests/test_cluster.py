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

from pysfu.config import NodeSelectorConfig, RedisConfig
from pysfu.testing import API_KEY, API_SECRET, RunningServer, make_config, start_server, stop_server

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
                lambda t, pub, p, other=other: (
                    p.identity == other and t.kind == rtc.TrackKind.KIND_AUDIO
                ),
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


async def test_server_api_answers_from_every_node(two_nodes: list[RunningServer]) -> None:
    a, b = two_nodes
    alice, alice_w = await join_via(a, "alice", "api-room")
    bob, bob_w = await join_via(b, "bob", "api-room")
    try:
        host = host_of(two_nodes, "api-room")
        other = b if host is a else a
        await alice_w.wait_for("participant_connected", lambda p: p.identity == "bob")
        # Every node gives the same answer, wherever the room is.
        for node in two_nodes:
            async with lkapi(node) as client:
                rooms = await client.room.list_rooms(api.ListRoomsRequest())
                assert [r.name for r in rooms.rooms] == ["api-room"]
                assert rooms.rooms[0].num_participants == 2
                listed = await client.room.list_participants(
                    api.ListParticipantsRequest(room="api-room")
                )
                assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]
        # Changes sent to the node without the room reach the room and its clients.
        async with lkapi(other) as client:
            updated = await client.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room="api-room", metadata="from elsewhere")
            )
            assert updated.metadata == "from elsewhere"
            await client.room.remove_participant(
                api.RoomParticipantIdentity(room="api-room", identity="bob")
            )
        await bob_w.wait_for("disconnected", timeout=10)
        await alice_w.wait_for("participant_disconnected", lambda p: p.identity == "bob")
        for _ in range(50):
            if alice.metadata == "from elsewhere":
                break
            await asyncio.sleep(0.1)
        assert alice.metadata == "from elsewhere"
        async with lkapi(other) as client:
            listed = await client.room.list_participants(
                api.ListParticipantsRequest(room="api-room")
            )
            assert [p.identity for p in listed.participants] == ["alice"]
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def test_rooms_spread_over_nodes_by_the_selector(redis_server: RedisProcess) -> None:
    selector = NodeSelectorConfig(sort_by="rooms")
    with cluster(redis_server, 3, node_selector=selector) as nodes:
        async with lkapi(nodes[0]) as client:
            for i in range(9):
                await client.room.create_room(api.CreateRoomRequest(name=f"spread-{i}"))
            listed = await client.room.list_rooms(api.ListRoomsRequest())
        assert sorted(r.name for r in listed.rooms) == [f"spread-{i}" for i in range(9)]
        per_node = Counter(
            node_id
            for i in range(9)
            for node_id, node in zip(node_ids(nodes), nodes, strict=True)
            if node.server.room(f"spread-{i}") is not None
        )
        # Fewest rooms first: three each, none on two nodes.
        assert sorted(per_node.values()) == [3, 3, 3]


async def test_random_selector_uses_every_node(redis_server: RedisProcess) -> None:
    with cluster(redis_server, 2) as nodes:
        async with lkapi(nodes[1]) as client:
            for i in range(16):
                await client.room.create_room(api.CreateRoomRequest(name=f"any-{i}"))
        counts = [len(n.server.rooms) for n in nodes]
        assert sum(counts) == 16
        assert min(counts) > 0  # 2 * 0.5**16 odds of failing by chance


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


async def test_webhooks_sent_once_per_event(redis_server: RedisProcess, receiver: Receiver) -> None:
    hooks: dict[str, Any] = {"webhook_api_key": API_KEY, "webhook_urls": (receiver.url,)}
    with cluster(redis_server, 2, **hooks) as nodes:
        alice, alice_w = await join_via(nodes[0], "alice", "hooked")
        bob, _ = await join_via(nodes[1], "bob", "hooked")
        await alice_w.wait_for("participant_connected", lambda p: p.identity == "bob")
        await bob.disconnect()
        await alice_w.wait_for("participant_disconnected", lambda p: p.identity == "bob")
        await alice.disconnect()
        async with lkapi(nodes[1]) as client:
            await client.room.delete_room(api.DeleteRoomRequest(room="hooked"))
        await receiver.await_event("room_finished")
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
    events = Counter(receiver.for_room("hooked"))
    assert events["room_started"] == 1
    assert events["participant_joined"] == 2
    assert events["participant_left"] == 2
    assert events["room_finished"] == 1


async def test_both_participants_relayed_to_a_third_node(redis_server: RedisProcess) -> None:
    with cluster(redis_server, 3) as nodes:
        async with lkapi(nodes[0]) as client:
            await client.room.create_room(api.CreateRoomRequest(name="third"))
        host = host_of(nodes, "third")
        a, b = (n for n in nodes if n is not host)
        alice, _ = await join_via(a, "alice", "third")
        bob, bob_w = await join_via(b, "bob", "third")
        tone = ToneSource()
        try:
            assert alice.local_participant.sid in host.server.room("third").participants  # type: ignore[union-attr]
            await tone.publish(alice)
            args = await bob_w.wait_for(
                "track_subscribed",
                lambda t, pub, p: p.identity == "alice" and t.kind == rtc.TrackKind.KIND_AUDIO,
            )
            probe = AudioProbe(args[0])
            try:
                await probe.wait_tone(present=True)
            finally:
                await probe.aclose()
            # Data goes the same way: through both relays and the host.
            got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            bob.on("data_received", lambda pkt: got.done() or got.set_result(pkt.data))
            await alice.local_participant.publish_data(b"over two relays", reliable=True)
            assert await asyncio.wait_for(got, 10) == b"over two relays"
            assert a.server.room("third") is None and b.server.room("third") is None
        finally:
            await tone.aclose()
            await alice.disconnect()
            await bob.disconnect()


async def test_placement_of_a_room_that_never_came_expires(
    redis_server: RedisProcess,
) -> None:
    import redis as redis_py

    with cluster(redis_server, 2, auto_create=False) as nodes:
        # A join for a room nobody created is placed, then refused by the room's node.
        with pytest.raises(rtc.ConnectError):
            await join_via(nodes[0], "alice", "never")
        r = redis_py.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            ttl = r.pttl("pysfu:room:never")
            assert 0 < ttl <= 30_000  # it will go; a hosted room's is refreshed instead
            async with lkapi(nodes[1]) as client:
                await client.room.create_room(api.CreateRoomRequest(name="real"))
            await asyncio.sleep(2.5)  # two heartbeats
            assert r.pttl("pysfu:room:real") > 28_000
        finally:
            r.close()


async def test_redis_password() -> None:
    secured = RedisProcess(password="s3cret-redis")
    try:
        good = start_server(
            make_config(redis=RedisConfig(address=secured.address, password="s3cret-redis"))
        )
        bad = start_server(make_config(redis=RedisConfig(address=secured.address, password="no")))
        try:
            async with lkapi(good) as client:
                await client.room.create_room(api.CreateRoomRequest(name="locked"))
            assert good.server.room("locked") is not None
            # A node Redis refuses is no member: it routes nothing, it answers 503.
            async with lkapi(bad) as client:
                with pytest.raises(api.TwirpError) as refused:
                    await client.room.create_room(api.CreateRoomRequest(name="other"))
            assert refused.value.status == 503
            assert bad.server.room("other") is None
        finally:
            stop_server(good)
            stop_server(bad)
    finally:
        secured.close()
