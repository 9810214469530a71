"""Signaling over the real server on loopback, with a client built from
livekit-protocol messages: what any LiveKit client sees on the wire."""

from __future__ import annotations

import gc
import pathlib
import time
from contextlib import AsyncExitStack
from urllib.parse import urlencode

import attrs
import httpx
import pytest
import trio
from livekit.protocol import models, rtc
from trio_websocket import ConnectionRejected, open_websocket_url

from pysfu.auth import VideoGrant, mint_token
from pysfu.media.sdp import media_sections
from pysfu.rtc.room import Effects
from pysfu.signal.join_request import encode_join_request

from .conftest import API_KEY, API_SECRET, RunningServer, make_config
from .signal_client import SignalClient, connect

JOIN_REQUEST = encode_join_request(
    rtc.JoinRequest(connection_settings=rtc.ConnectionSettings(auto_subscribe=True))
)

pytestmark = pytest.mark.trio

State = models.ParticipantInfo.State
Reason = models.DisconnectReason


def _semver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


async def test_join_response_is_first_and_complete(server: RunningServer) -> None:
    async with connect(
        server.url,
        server.token_for(
            "alice", name="Alice A", metadata="md", attributes={"k": "v"}, kind="agent"
        ),
    ) as ws:
        client = SignalClient(ws)
        first = await client.recv()
        assert first.WhichOneof("message") == "join"
        join = first.join
        assert join.room.sid.startswith("RM_") and join.room.name == "room1"
        assert join.participant.sid.startswith("PA_")
        assert join.participant.identity == "alice"
        assert join.participant.name == "Alice A" and join.participant.metadata == "md"
        assert dict(join.participant.attributes) == {"k": "v"}
        assert join.participant.kind == models.ParticipantInfo.Kind.AGENT
        assert join.participant.version > 0
        assert join.participant.permission.can_publish
        assert join.participant.permission.can_subscribe
        assert _semver(join.server_version) >= (1, 8, 0)
        assert _semver(join.server_info.version) >= (1, 8, 0)
        assert join.ping_interval == 5 and join.ping_timeout == 15
        # fast_publish for a participant that may publish, as the reference.
        assert join.subscriber_primary and join.fast_publish
        assert list(join.other_participants) == []


async def test_two_participants_see_each_other_and_leave(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws_a:
        alice = SignalClient(ws_a)
        await alice.expect("join")
        async with connect(server.url, server.token_for("bob")) as ws_b:
            bob = SignalClient(ws_b)
            join = (await bob.expect("join")).join
            assert [p.identity for p in join.other_participants] == ["alice"]
            seen = await alice.expect_update("bob")
            assert seen.sid == join.participant.sid
            await bob.send(
                rtc.SignalRequest(
                    leave=rtc.LeaveRequest(
                        reason=Reason.CLIENT_INITIATED, action=rtc.LeaveRequest.Action.DISCONNECT
                    )
                )
            )
            gone = await alice.expect_update("bob", lambda p: p.state == State.DISCONNECTED)
            assert gone.disconnect_reason == Reason.CLIENT_INITIATED
        room = await server.acall(server.server.room, "room1")
        assert [p.identity for p in room.participants.values()] == ["alice"]


def _engine_peers(server: RunningServer) -> int:
    media = server.server.media
    assert media is not None
    return media.engine.stats()["peers"]


async def test_publisher_peer_is_made_only_when_the_client_publishes(
    server: RunningServer,
) -> None:
    # A subscribe-only participant never offers on its publisher PeerConnection, so
    # the engine holds its subscriber peer alone; the first publisher candidate (or
    # offer) brings the publisher peer.
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        assert await server.acall(_engine_peers, server) == 1
        candidate = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"
        init = f'{{"candidate": "{candidate}", "sdpMid": "0", "sdpMLineIndex": 0}}'
        await alice.send(
            rtc.SignalRequest(
                trickle=rtc.TrickleRequest(candidateInit=init, target=rtc.SignalTarget.PUBLISHER)
            )
        )
        await alice.send(rtc.SignalRequest(ping=1))
        await alice.expect("pong")
        assert await server.acall(_engine_peers, server) == 2
    with trio.fail_after(5):
        while await server.acall(_engine_peers, server):
            await trio.sleep(0.05)


def _live_effects() -> int:
    gc.collect()
    return sum(isinstance(o, Effects) for o in gc.get_objects())


async def test_sessions_keep_no_join_effects(server: RunningServer) -> None:
    # Each join sends an update to everyone already there; a session that held on to
    # its join's Effects would keep those messages alive for its whole life.
    async with AsyncExitStack() as stack:
        for i in range(6):
            ws = await stack.enter_async_context(connect(server.url, server.token_for(f"p{i}")))
            await SignalClient(ws).expect("join")
        assert await server.acall(_live_effects) == 0


async def test_socket_drop_is_noticed(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws_a:
        alice = SignalClient(ws_a)
        await alice.expect("join")
        async with connect(server.url, server.token_for("bob")) as ws_b:
            await SignalClient(ws_b).expect("join")
        gone = await alice.expect_update("bob", lambda p: p.state == State.DISCONNECTED)
        assert gone.identity == "bob"


async def _short_ping_timeout(server: RunningServer) -> None:
    # The server has no setting for the ping timeout (15 s, as LiveKit); shorten it here
    # before anyone joins so the test stays fast. JoinResponses then announce 1 s.
    manager = server.server.manager
    identity = attrs.evolve(manager.server, ping_timeout_s=1)
    await server.acall(setattr, manager, "server", identity)


async def _keep_pinging(client: SignalClient) -> None:
    while True:
        await client.send(rtc.SignalRequest(ping=int(time.time() * 1000)))
        await trio.sleep(0.2)


async def test_client_that_never_pings_is_kept(server: RunningServer) -> None:
    # server-sdk-go clients send no signal-level pings (they rely on WebSocket
    # ping/pong): silence alone must not remove anyone, as with the reference.
    await _short_ping_timeout(server)
    async with (
        connect(server.url, server.token_for("alice")) as ws_a,
        connect(server.url, server.token_for("bob")) as ws_b,
    ):
        alice, bob = SignalClient(ws_a), SignalClient(ws_b)
        assert (await alice.expect("join")).join.ping_timeout == 1
        await bob.expect("join")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_pinging, bob)  # alice says nothing after joining
            await trio.sleep(3.5)
            room = await server.acall(server.server.room, "room1")
            assert sorted(p.identity for p in room.participants.values()) == ["alice", "bob"]
            nursery.cancel_scope.cancel()


async def test_client_that_stops_pinging_loses_its_connection(server: RunningServer) -> None:
    # A client that pings is held to the ping timeout: its connection is dropped.
    # Having never connected media it has nothing to resume, so it goes (SIGNAL_CLOSE).
    await _short_ping_timeout(server)
    async with (
        connect(server.url, server.token_for("alice")) as ws_a,
        connect(server.url, server.token_for("bob")) as ws_b,
    ):
        alice, bob = SignalClient(ws_a), SignalClient(ws_b)
        await alice.expect("join")
        await bob.expect("join")
        await alice.send(rtc.SignalRequest(ping=1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_pinging, bob)
            gone = await bob.expect_update("alice", lambda p: p.state == State.DISCONNECTED)
            assert gone.disconnect_reason == Reason.SIGNAL_CLOSE
            await trio.sleep(1.5)  # longer than the timeout: bob's pings keep him in
            room = await server.acall(server.server.room, "room1")
            assert [p.identity for p in room.participants.values()] == ["bob"]
            nursery.cancel_scope.cancel()


async def test_duplicate_identity_replaces_older_connection(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("bob")) as ws_b:
        bob = SignalClient(ws_b)
        await bob.expect("join")
        async with connect(server.url, server.token_for("alice")) as ws_a1:
            old = SignalClient(ws_a1)
            old_sid = (await old.expect("join")).join.participant.sid
            async with connect(server.url, server.token_for("alice")) as ws_a2:
                new = SignalClient(ws_a2)
                new_join = (await new.expect("join")).join
                assert new_join.participant.sid != old_sid
                leave = (await old.expect("leave")).leave
                assert leave.reason == Reason.DUPLICATE_IDENTITY
                assert leave.action == rtc.LeaveRequest.Action.DISCONNECT
                gone = await bob.expect_update(
                    "alice", lambda p: p.sid == old_sid and p.state == State.DISCONNECTED
                )
                assert gone.disconnect_reason == Reason.DUPLICATE_IDENTITY
                await bob.expect_update("alice", lambda p: p.sid == new_join.participant.sid)
                room = await server.acall(server.server.room, "room1")
                assert sorted(p.identity for p in room.participants.values()) == ["alice", "bob"]


async def test_metadata_update_refused_without_grant(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        await alice.send(
            rtc.SignalRequest(
                update_metadata=rtc.UpdateParticipantMetadata(metadata="hi", request_id=7)
            )
        )
        resp = (await alice.expect("request_response")).request_response
        assert resp.request_id == 7
        assert resp.reason == rtc.RequestResponse.Reason.NOT_ALLOWED


async def test_metadata_name_attributes_update_with_growing_versions(
    server: RunningServer,
) -> None:
    token = server.token_for("alice", can_update_own_metadata=True)
    async with (
        connect(server.url, token) as ws_a,
        connect(server.url, server.token_for("bob")) as ws_b,
    ):
        alice, bob = SignalClient(ws_a), SignalClient(ws_b)
        v0 = (await alice.expect("join")).join.participant.version
        await bob.expect("join")
        await alice.send(
            rtc.SignalRequest(
                update_metadata=rtc.UpdateParticipantMetadata(
                    metadata="m1", name="Alice", attributes={"a": "1", "b": "2"}, request_id=1
                )
            )
        )
        mine = await alice.expect_update("alice", lambda p: p.metadata == "m1")
        assert mine.name == "Alice" and dict(mine.attributes) == {"a": "1", "b": "2"}
        assert mine.version > v0
        theirs = await bob.expect_update("alice", lambda p: p.metadata == "m1")
        assert theirs.version == mine.version
        # An empty value deletes an attribute, as in LiveKit.
        await alice.send(
            rtc.SignalRequest(
                update_metadata=rtc.UpdateParticipantMetadata(attributes={"a": ""}, request_id=2)
            )
        )
        later = await bob.expect_update("alice", lambda p: "a" not in p.attributes)
        assert dict(later.attributes) == {"b": "2"} and later.version > theirs.version


async def test_ping_both_forms(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        await alice.send(rtc.SignalRequest(ping=123))
        pong = await alice.expect("pong")
        assert abs(pong.pong - time.time() * 1000) < 60_000
        await alice.send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=456, rtt=10)))
        resp = (await alice.expect("pong_resp")).pong_resp
        assert resp.last_ping_timestamp == 456 and resp.timestamp > 0


async def test_bad_frames_are_ignored_and_session_survives(server: RunningServer) -> None:
    async with (
        connect(server.url, server.token_for("alice")) as ws_a,
        connect(server.url, server.token_for("bob")) as ws_b,
    ):
        alice, bob = SignalClient(ws_a), SignalClient(ws_b)
        await alice.expect("join")
        await bob.expect("join")
        await ws_a.send_message("this is text, not protobuf")
        await ws_a.send_message(b"\xff\xff\xff\xff garbage")
        await ws_a.send_message(b"")
        await alice.send(rtc.SignalRequest(ping=1))
        assert (await alice.expect("pong")).pong > 0
        await bob.send(rtc.SignalRequest(ping=1))
        assert (await bob.expect("pong")).pong > 0


async def test_add_track_and_source_permission(server: RunningServer) -> None:
    token = server.token_for("alice", can_publish_sources=("microphone",))
    async with connect(server.url, token) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        await alice.send(
            rtc.SignalRequest(
                add_track=rtc.AddTrackRequest(
                    cid="mic-1",
                    name="mic",
                    type=models.TrackType.AUDIO,
                    source=models.TrackSource.MICROPHONE,
                )
            )
        )
        published = (await alice.expect("track_published")).track_published
        assert published.cid == "mic-1" and published.track.sid.startswith("TR_")
        assert published.track.source == models.TrackSource.MICROPHONE
        await alice.send(
            rtc.SignalRequest(
                add_track=rtc.AddTrackRequest(
                    cid="cam-1",
                    name="cam",
                    type=models.TrackType.VIDEO,
                    source=models.TrackSource.CAMERA,
                )
            )
        )
        refused = (await alice.expect("request_response")).request_response
        assert refused.reason == rtc.RequestResponse.Reason.NOT_ALLOWED
        assert refused.add_track.cid == "cam-1"


async def test_hidden_participant_is_not_announced(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws_a:
        alice = SignalClient(ws_a)
        await alice.expect("join")
        async with connect(server.url, server.token_for("ghost", hidden=True)) as ws_g:
            ghost_join = (await SignalClient(ws_g).expect("join")).join
            assert [p.identity for p in ghost_join.other_participants] == ["alice"]
            async with connect(server.url, server.token_for("bob")) as ws_b:
                bob_join = (await SignalClient(ws_b).expect("join")).join
                assert [p.identity for p in bob_join.other_participants] == ["alice"]
        updates = await alice.drain()
        identities = {
            p.identity for m in updates if m.HasField("update") for p in m.update.participants
        }
        assert "bob" in identities and "ghost" not in identities


async def test_reconnect_for_unknown_session_forces_full_rejoin(server: RunningServer) -> None:
    async with connect(
        server.url, server.token_for("alice"), reconnect="1", sid="PA_unknown"
    ) as ws:
        leave = (await SignalClient(ws).recv()).leave
        assert leave.reason == Reason.STATE_MISMATCH
        assert leave.action == rtc.LeaveRequest.Action.RECONNECT


async def test_deleting_room_tells_everyone(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        await server.acall(server.server.delete_room, "room1")
        leave = (await alice.expect("leave")).leave
        assert leave.reason == Reason.ROOM_DELETED
    assert await server.acall(server.server.room, "room1") is None


def _bad_tokens() -> dict[str, str]:
    good = VideoGrant(room_join=True, room="room1")
    return {
        "wrong secret": mint_token(API_KEY, "x" * 40, identity="a", grant=good),
        "unknown key": mint_token("other", API_SECRET, identity="a", grant=good),
        "expired": mint_token(
            API_KEY, API_SECRET, identity="a", grant=good, now=time.time() - 7200, ttl_s=60
        ),
        "no join grant": mint_token(
            API_KEY, API_SECRET, identity="a", grant=VideoGrant(room="room1")
        ),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize("case", sorted(_bad_tokens()))
async def test_bad_tokens_get_401_before_upgrade(server: RunningServer, case: str) -> None:
    token = _bad_tokens()[case]
    with pytest.raises(ConnectionRejected) as info:
        async with connect(server.url, token):
            pass
    assert info.value.status_code == 401
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{server.http_url}/rtc/validate", params={"access_token": token})
    assert r.status_code == 401 and r.text


async def test_http_routes(server: RunningServer) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http_url + "/")).text == "OK"
        ok = await http.get(
            f"{server.http_url}/rtc/validate",
            headers={"Authorization": "Bearer " + server.token_for("a")},
        )
        assert ok.status_code == 200 and ok.text == "success"
        # /rtc/v1/validate answers what the /rtc/v1 upgrade would (issue 13).
        v1 = await http.get(
            f"{server.http_url}/rtc/v1/validate",
            params={"access_token": server.token_for("a"), "join_request": JOIN_REQUEST},
        )
        assert v1.status_code == 200 and v1.text == "success", v1.text
        assert v1.headers["access-control-allow-origin"] == "*"
        for query, status, why in (
            ({"join_request": JOIN_REQUEST}, 401, "no access token"),
            ({"access_token": server.token_for("a")}, 400, "join_request is required"),
            ({"access_token": server.token_for("a"), "join_request": "%%%"}, 400, "base64"),
        ):
            bad = await http.get(f"{server.http_url}/rtc/v1/validate", params=query)
            assert (bad.status_code, why in bad.text) == (status, True), bad.text
    url = server.url + "/rtc/v1?access_token=" + server.token_for("a") + "&join_request=AAAA"
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url):
            pass
    assert info.value.status_code == 400


async def test_room_config_in_token_shapes_the_new_room(server: RunningServer) -> None:
    config = {"emptyTimeout": 42, "departureTimeout": 7, "maxParticipants": 1, "metadata": "m"}
    token = mint_token(
        API_KEY,
        API_SECRET,
        identity="alice",
        room_config=config,
        grant=VideoGrant(room_join=True, room="configured"),
    )
    async with connect(server.url, token) as ws:
        join = (await SignalClient(ws).expect("join")).join
        assert join.room.empty_timeout == 42 and join.room.departure_timeout == 7
        assert join.room.max_participants == 1 and join.room.metadata == "m"
        full = mint_token(
            API_KEY, API_SECRET, identity="bob", grant=VideoGrant(room_join=True, room="configured")
        )
        with pytest.raises(ConnectionRejected) as info:
            async with connect(server.url, full):
                pass
        assert info.value.status_code == 403


async def test_clients_closing_while_the_server_sends_do_not_stop_it(
    server: RunningServer,
) -> None:
    # Each reconnect join gets a LeaveRequest and a close while the client closes too:
    # the race that once escaped hypercorn and stopped the whole server.
    async def one() -> None:
        async with connect(server.url, server.token_for("racer"), reconnect="1") as ws:
            await SignalClient(ws).recv()

    for _ in range(5):
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one)
    async with connect(server.url, server.token_for("alice")) as ws:
        assert (await SignalClient(ws).recv()).HasField("join")
    assert "error" not in server.box


@pytest.mark.parametrize("server_config", [make_config(auto_create=False)])
async def test_joins_do_not_create_rooms_when_auto_create_is_off(server: RunningServer) -> None:
    token = server.token_for("alice", "not-yet")
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{server.http_url}/rtc/validate", params={"access_token": token})
    assert resp.status_code == 404 and "requested room does not exist" in resp.text
    with pytest.raises(ConnectionRejected) as info:
        async with connect(server.url, token):
            pass
    assert info.value.status_code == 404
    assert await server.acall(server.server.room, "not-yet") is None
    await server.acall(server.server.create_room, "not-yet")
    async with connect(server.url, token) as ws:
        assert (await SignalClient(ws).expect("join")).join.room.name == "not-yet"


CHROME_OFFER = (
    pathlib.Path(__file__).resolve().parent.parent / "rust/engine/src/fuzz/chrome_offer.sdp"
).read_text()


async def test_v1_join_request_carries_tracks_and_the_offer(server: RunningServer) -> None:
    """Issue 13: on /rtc/v1 the JoinRequest's tracks and publisher offer are handled as
    v0 requests: JoinResponse (not subscriber-primary), TrackPublishedResponse for the
    announced track, then the answer to the offer (its id kept), and never a server
    offer (the SDKs ignore one on their single PeerConnection)."""
    # The client receives on a second audio section (as the SDKs' recvonly ones).
    receive = CHROME_OFFER.split("m=video")[0].split("m=audio", 1)[1]
    receive = receive.replace("a=mid:0", "a=mid:9").replace("a=sendonly", "a=recvonly")
    receive = "\r\n".join(
        ln for ln in receive.split("\r\n") if not ln.startswith(("a=msid", "a=ssrc"))
    )
    offer_sdp = CHROME_OFFER.replace("m=application", "m=audio" + receive + "m=application")
    offer_sdp = offer_sdp.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 9 2")
    request = rtc.JoinRequest(
        connection_settings=rtc.ConnectionSettings(auto_subscribe=True),
        add_track_requests=[rtc.AddTrackRequest(cid="TR_audio1", name="mic", type=0)],
        publisher_offer=rtc.SessionDescription(type="offer", sdp=offer_sdp, id=7),
    )
    query = urlencode(
        {"access_token": server.token_for("a"), "join_request": encode_join_request(request)}
    )
    async with open_websocket_url(f"{server.url}/rtc/v1?{query}") as ws:
        client = SignalClient(ws)
        first = await client.recv()
        assert first.WhichOneof("message") == "join"
        assert not first.join.subscriber_primary
        published = await client.expect("track_published")
        assert published.track_published.cid == "TR_audio1"
        answer = (await client.expect("answer")).answer
        assert answer.id == 7 and answer.type == "answer"
        sections = {s.mid: s for s in media_sections(answer.sdp)}
        assert sections["0"].direction == "recvonly", "the client's track comes in"
        assert sections["9"].direction == "inactive", "nothing to send there yet"
        with trio.move_on_after(1):
            while True:
                msg = await client.recv(2)
                assert msg.WhichOneof("message") != "offer", msg
