"""The server API (Twirp RoomService) through the official Python server SDK,
``livekit-api``, with participants connected over real signaling WebSockets: what a
backend using LiveKit's SDK sees, and what its participants see as a consequence."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets
from livekit import api
from livekit.protocol import models, rtc
from websockets.asyncio.client import ClientConnection

from pysfu.auth import VideoGrant, mint_token

from .conftest import API_KEY, API_SECRET, RunningServer, make_config
from .signal_client import signal_url

pytestmark = pytest.mark.asyncio

State = models.ParticipantInfo.State
Reason = models.DisconnectReason
TIMEOUT_S = 5.0


# ---- a signaling client on asyncio (the SDK's loop) ---------------------------------------


class AsyncSignalClient:
    """The asyncio twin of ``tests.signal_client.SignalClient``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.backlog: list[rtc.SignalResponse] = []

    async def send(self, req: rtc.SignalRequest) -> None:
        await self.ws.send(req.SerializeToString())

    async def recv(self) -> rtc.SignalResponse:
        if self.backlog:
            return self.backlog.pop(0)
        data = await asyncio.wait_for(self.ws.recv(), TIMEOUT_S)
        assert isinstance(data, bytes), "signal frames must be binary"
        return rtc.SignalResponse.FromString(data)

    async def expect(self, kind: str) -> rtc.SignalResponse:
        """The next message of ``kind``, keeping the others in order for later."""
        skipped: list[rtc.SignalResponse] = []
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    msg = await self.recv()
                    if msg.WhichOneof("message") == kind:
                        return msg
                    skipped.append(msg)
        finally:
            self.backlog[:0] = skipped

    async def expect_update(
        self,
        identity: str,
        predicate: Callable[[models.ParticipantInfo], bool] = lambda p: True,
    ) -> models.ParticipantInfo:
        """The next ParticipantInfo for ``identity`` satisfying ``predicate``."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                msg = await self.expect("update")
                for p in msg.update.participants:
                    if p.identity == identity and predicate(p):
                        return p

    async def closed(self) -> None:
        """Wait until the server closes the socket."""
        async with asyncio.timeout(TIMEOUT_S):
            await self.ws.wait_closed()


@asynccontextmanager
async def joined(
    server: RunningServer, identity: str, room: str = "room1", **grant: object
) -> AsyncIterator[tuple[AsyncSignalClient, rtc.JoinResponse]]:
    """A participant connected to ``room``, with its JoinResponse."""
    url = signal_url(server.url, server.token_for(identity, room, **grant))
    async with websockets.connect(url) as ws:
        client = AsyncSignalClient(ws)
        join = (await client.expect("join")).join
        yield client, join


@asynccontextmanager
async def lkapi(server: RunningServer, **kw: str) -> AsyncIterator[api.LiveKitAPI]:
    if "token" not in kw:
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("api_secret", API_SECRET)
    client = api.LiveKitAPI(url=server.http_url, **kw)
    try:
        yield client
    finally:
        await client.aclose()


def publish_live(server: RunningServer, room_name: str, identity: str, cid: str) -> None:
    """Pretend the media of ``identity``'s publication ``cid`` reached the server."""
    manager = server.server.manager

    def arrive() -> None:
        room = manager.require_room(room_name)
        p = room.participant_by_identity(identity)
        assert p is not None
        _, fx = room.track_live(p.sid, cid=cid)
        manager.apply(room, fx)

    server.call(arrive)


async def publish(
    server: RunningServer, client: AsyncSignalClient, identity: str, cid: str = "mic-1"
) -> models.TrackInfo:
    """Publish an audio track and have its media arrive; returns its TrackInfo."""
    await client.send(
        rtc.SignalRequest(
            add_track=rtc.AddTrackRequest(
                cid=cid,
                name="mic",
                type=models.TrackType.AUDIO,
                source=models.TrackSource.MICROPHONE,
            )
        )
    )
    track = (await client.expect("track_published")).track_published.track
    publish_live(server, "room1", identity, cid)
    return track


def room_names(resp: api.ListRoomsResponse) -> list[str]:
    return sorted(r.name for r in resp.rooms)


# ---- rooms --------------------------------------------------------------------------------


async def test_create_room_reflects_options(server: RunningServer) -> None:
    async with lkapi(server) as lk:
        room = await lk.room.create_room(
            api.CreateRoomRequest(
                name="opts",
                empty_timeout=600,
                departure_timeout=45,
                max_participants=3,
                metadata="hello",
            )
        )
        assert room.name == "opts" and room.sid.startswith("RM_")
        assert room.empty_timeout == 600 and room.departure_timeout == 45
        assert room.max_participants == 3 and room.metadata == "hello"
        assert abs(room.creation_time - time.time()) < 60
        assert room.num_participants == 0

        listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=["opts"]))).rooms
        assert len(listed) == 1 and listed[0] == room

        # Creating a room that exists returns it (same sid): CreateRoom is idempotent.
        again = await lk.room.create_room(api.CreateRoomRequest(name="opts"))
        assert again.sid == room.sid

        defaults = await lk.room.create_room(api.CreateRoomRequest(name="plain"))
        assert defaults.empty_timeout == 300 and defaults.departure_timeout == 20
        assert defaults.max_participants == 0 and defaults.metadata == ""

        created = server.call(server.server.room, "opts")
        assert created is not None and created.empty_timeout_s == 600


async def test_max_participants_turns_away_the_extra_participant(
    server: RunningServer,
) -> None:
    async with lkapi(server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="room1", max_participants=1))
    async with joined(server, "alice"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with joined(server, "bob"):
                pass
        assert info.value.response.status_code == 403


async def test_create_room_requires_a_name(server: RunningServer) -> None:
    async with lkapi(server) as lk:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.create_room(api.CreateRoomRequest(name=""))
    assert info.value.code == "invalid_argument" and info.value.status == 400


async def test_list_rooms_all_and_by_names(server: RunningServer) -> None:
    async with lkapi(server) as lk:
        assert list((await lk.room.list_rooms(api.ListRoomsRequest())).rooms) == []
        for name in ("a", "b", "c"):
            await lk.room.create_room(api.CreateRoomRequest(name=name))
        assert room_names(await lk.room.list_rooms(api.ListRoomsRequest())) == ["a", "b", "c"]
        picked = await lk.room.list_rooms(api.ListRoomsRequest(names=["c", "a", "zzz"]))
        assert room_names(picked) == ["a", "c"]
        async with joined(server, "alice", room="b"):
            b = (await lk.room.list_rooms(api.ListRoomsRequest(names=["b"]))).rooms[0]
            assert b.num_participants == 1


async def test_delete_room_disconnects_everyone(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, _),
        joined(server, "bob") as (bob, _),
    ):
        await lk.room.delete_room(api.DeleteRoomRequest(room="room1"))
        for client in (alice, bob):
            leave = (await client.expect("leave")).leave
            assert leave.reason == Reason.ROOM_DELETED
            assert leave.action == rtc.LeaveRequest.Action.DISCONNECT
            assert not leave.can_reconnect
            await client.closed()
        assert room_names(await lk.room.list_rooms(api.ListRoomsRequest())) == []
        with pytest.raises(api.TwirpError) as info:
            await lk.room.delete_room(api.DeleteRoomRequest(room="room1"))
        assert info.value.code == "not_found" and info.value.status == 404


async def test_update_room_metadata_reaches_participants(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, _),
        joined(server, "bob") as (bob, _),
    ):
        room = await lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="room1", metadata="agenda: tests")
        )
        assert room.metadata == "agenda: tests" and room.name == "room1"
        for client in (alice, bob):
            update = (await client.expect("room_update")).room_update
            assert update.room.metadata == "agenda: tests"
            assert update.room.sid == room.sid
        listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=["room1"]))).rooms
        assert listed[0].metadata == "agenda: tests"


# ---- participants -------------------------------------------------------------------------


async def test_list_and_get_participants(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice", name="Alice", metadata="md-a") as (_, alice_join),
        joined(server, "bob") as (_, bob_join),
    ):
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        by_identity = {p.identity: p for p in listed.participants}
        assert sorted(by_identity) == ["alice", "bob"]
        assert by_identity["bob"].sid == bob_join.participant.sid

        alice = await lk.room.get_participant(
            api.RoomParticipantIdentity(room="room1", identity="alice")
        )
        assert alice.sid == alice_join.participant.sid
        assert alice.name == "Alice" and alice.metadata == "md-a"
        assert alice.state == State.JOINING
        assert alice.permission.can_publish and alice.permission.can_subscribe
        assert alice.joined_at > 0

        with pytest.raises(api.TwirpError) as info:
            await lk.room.get_participant(
                api.RoomParticipantIdentity(room="room1", identity="nobody")
            )
        assert info.value.code == "not_found" and info.value.status == 404


async def test_hidden_participants_are_listed_for_admins(server: RunningServer) -> None:
    async with lkapi(server) as lk, joined(server, "ghost", hidden=True):
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        assert [p.identity for p in listed.participants] == ["ghost"]
        assert listed.participants[0].permission.hidden


async def test_remove_participant(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, alice_join),
        joined(server, "bob") as (bob, _),
    ):
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room="room1", identity="alice")
        )
        leave = (await alice.expect("leave")).leave
        assert leave.reason == Reason.PARTICIPANT_REMOVED
        assert leave.action == rtc.LeaveRequest.Action.DISCONNECT
        await alice.closed()
        gone = await bob.expect_update("alice", lambda p: p.state == State.DISCONNECTED)
        assert gone.sid == alice_join.participant.sid
        assert gone.disconnect_reason == Reason.PARTICIPANT_REMOVED
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        assert [p.identity for p in listed.participants] == ["bob"]
        with pytest.raises(api.TwirpError) as info:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room="room1", identity="alice")
            )
        assert info.value.code == "not_found"


async def test_mute_published_track(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, _),
        joined(server, "bob") as (bob, _),
    ):
        track = await publish(server, alice, "alice")
        seen = await bob.expect_update("alice", lambda p: len(p.tracks) == 1)
        assert seen.tracks[0].sid == track.sid and not seen.tracks[0].muted

        resp = await lk.room.mute_published_track(
            api.MuteRoomTrackRequest(
                room="room1", identity="alice", track_sid=track.sid, muted=True
            )
        )
        assert resp.track.sid == track.sid and resp.track.muted
        mute = (await alice.expect("mute")).mute
        assert mute.sid == track.sid and mute.muted
        muted = await bob.expect_update("alice", lambda p: p.tracks and p.tracks[0].muted)
        assert muted.version > seen.version

        # Privacy default of the reference: the API cannot re-open a microphone.
        with pytest.raises(api.TwirpError) as refused:
            await lk.room.mute_published_track(
                api.MuteRoomTrackRequest(
                    room="room1", identity="alice", track_sid=track.sid, muted=False
                )
            )
        assert refused.value.code == "failed_precondition"
        room = server.call(server.server.room, "room1")
        assert room.participant_by_identity("alice").publications[track.sid].info.muted

        with pytest.raises(api.TwirpError) as info:
            await lk.room.mute_published_track(
                api.MuteRoomTrackRequest(
                    room="room1", identity="alice", track_sid="TR_nope", muted=True
                )
            )
        assert info.value.code == "not_found"


@pytest.mark.parametrize("server_config", [make_config(enable_remote_unmute=True)])
async def test_remote_unmute_when_the_config_enables_it(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, _),
        joined(server, "bob") as (bob, _),
    ):
        track = await publish(server, alice, "alice")
        await bob.expect_update("alice", lambda p: len(p.tracks) == 1)
        for muted in (True, False):
            resp = await lk.room.mute_published_track(
                api.MuteRoomTrackRequest(
                    room="room1", identity="alice", track_sid=track.sid, muted=muted
                )
            )
            assert resp.track.muted is muted
            mute = (await alice.expect("mute")).mute
            assert mute.sid == track.sid and mute.muted is muted
        await bob.expect_update("alice", lambda p: p.tracks and not p.tracks[0].muted)


async def test_update_participant_is_seen_by_everyone(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice", attributes={"keep": "1", "drop": "x"}) as (alice, join),
        joined(server, "bob") as (bob, _),
    ):
        info = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="room1",
                identity="alice",
                name="Alice Liddell",
                metadata="role=host",
                attributes={"new": "2", "drop": ""},
                permission=models.ParticipantPermission(
                    can_publish=False, can_subscribe=True, can_publish_data=True
                ),
            )
        )
        assert info.name == "Alice Liddell" and info.metadata == "role=host"
        assert dict(info.attributes) == {"keep": "1", "new": "2"}
        assert not info.permission.can_publish
        assert info.version > join.participant.version

        for client in (bob, alice):
            seen = await client.expect_update("alice", lambda p: p.metadata == "role=host")
            assert seen.name == "Alice Liddell"
            assert dict(seen.attributes) == {"keep": "1", "new": "2"}
            assert not seen.permission.can_publish
            assert seen.version == info.version

        # Only what the request sets changes.
        info = await lk.room.update_participant(
            api.UpdateParticipantRequest(room="room1", identity="alice", metadata="m2")
        )
        assert info.name == "Alice Liddell" and info.metadata == "m2"
        assert not info.permission.can_publish

        # The new permission is enforced: alice may no longer publish.
        await alice.send(
            rtc.SignalRequest(add_track=rtc.AddTrackRequest(cid="c", type=models.TrackType.AUDIO))
        )
        refused = (await alice.expect("request_response")).request_response
        assert refused.reason == rtc.RequestResponse.Reason.NOT_ALLOWED


async def test_update_subscriptions(server: RunningServer) -> None:
    async with (
        lkapi(server) as lk,
        joined(server, "alice") as (alice, _),
        joined(server, "bob") as (_, bob_join),
    ):
        track = await publish(server, alice, "alice")
        bob_sid = bob_join.participant.sid

        def subscription() -> tuple[bool, bool]:
            room = server.server.manager.require_room("room1")
            sub = room.subscriptions[(bob_sid, track.sid)]
            return sub.desired, sub.bound

        assert server.call(subscription) == (True, True)  # auto-subscribed
        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="room1", identity="bob", track_sids=[track.sid], subscribe=False
            )
        )
        assert server.call(subscription) == (False, False)
        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="room1",
                identity="bob",
                participant_tracks=[
                    models.ParticipantTracks(participant_sid="x", track_sids=[track.sid])
                ],
                subscribe=True,
            )
        )
        assert server.call(subscription) == (True, True)


async def test_update_subscriptions_to_unknown_track_tells_the_subscriber(
    server: RunningServer,
) -> None:
    async with lkapi(server) as lk, joined(server, "bob") as (bob, _):
        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="room1", identity="bob", track_sids=["TR_missing"], subscribe=True
            )
        )
        resp = (await bob.expect("subscription_response")).subscription_response
        assert resp.track_sid == "TR_missing"
        assert resp.err == models.SubscriptionError.SE_TRACK_NOTFOUND


async def test_send_data_is_accepted(server: RunningServer) -> None:
    async with lkapi(server) as lk, joined(server, "alice"):
        for req in (
            api.SendDataRequest(room="room1", data=b"hello", kind=api.DataPacket.RELIABLE),
            api.SendDataRequest(
                room="room1",
                data=b"x",
                kind=api.DataPacket.LOSSY,
                destination_identities=["alice"],
                topic="chat",
            ),
            api.SendDataRequest(room="room1", data=b"x", destination_identities=["nobody"]),
        ):
            assert await lk.room.send_data(req) == api.SendDataResponse()
        with pytest.raises(api.TwirpError) as info:
            await lk.room.send_data(api.SendDataRequest(room="nowhere", data=b"x"))
        assert info.value.code == "not_found"


# ---- authorization ------------------------------------------------------------------------


def _token(grant: VideoGrant, **kw: float) -> str:
    return mint_token(API_KEY, API_SECRET, identity="backend", grant=grant, **kw)


async def test_requests_without_a_token_are_unauthenticated(server: RunningServer) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{server.http_url}/twirp/livekit.RoomService/ListRooms",
            content=api.ListRoomsRequest().SerializeToString(),
            headers={"Content-Type": "application/protobuf"},
        )
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == "unauthenticated" and r.json()["msg"]


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "unknown key", "expired", "not yet valid", "garbage"],
)
async def test_bad_tokens_are_unauthenticated(server: RunningServer, how: str) -> None:
    everything = VideoGrant(room_create=True, room_list=True)
    kw: dict[str, str] = {
        "wrong secret": {"api_key": API_KEY, "api_secret": "not-the-secret-" * 3},
        "unknown key": {"api_key": "someone-else", "api_secret": API_SECRET},
        "expired": {"token": _token(everything, now=time.time() - 7200, ttl_s=60)},
        "not yet valid": {"token": _token(everything, now=time.time() + 3600)},
        "garbage": {"token": "not.a.jwt"},
    }[how]
    async with lkapi(server, **kw) as lk:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.list_rooms(api.ListRoomsRequest())
    assert info.value.code == "unauthenticated" and info.value.status == 401


async def test_missing_grants_are_refused_as_the_reference_server_does(
    server: RunningServer,
) -> None:
    list_only = _token(VideoGrant(room_list=True))
    create_only = _token(VideoGrant(room_create=True))
    join_only = _token(VideoGrant(room_join=True, room="room1"))
    async with lkapi(server, token=list_only) as lk:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.create_room(api.CreateRoomRequest(name="x"))
        assert info.value.code == "unauthenticated" and info.value.status == 401
        with pytest.raises(api.TwirpError) as info:
            await lk.room.delete_room(api.DeleteRoomRequest(room="x"))
        assert info.value.code == "unauthenticated"
    async with lkapi(server, token=create_only) as lk:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.list_rooms(api.ListRoomsRequest())
        assert info.value.code == "unauthenticated" and info.value.status == 401
    async with lkapi(server, token=join_only) as lk:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        assert info.value.code == "unauthenticated"
    assert server.call(lambda: server.server.rooms) == []


async def test_room_admin_of_another_room_is_refused(server: RunningServer) -> None:
    other_admin = _token(VideoGrant(room_admin=True, room="other"))
    async with lkapi(server, token=other_admin) as lk, joined(server, "alice") as (alice, _):
        calls = [
            lk.room.list_participants(api.ListParticipantsRequest(room="room1")),
            lk.room.get_participant(api.RoomParticipantIdentity(room="room1", identity="alice")),
            lk.room.remove_participant(api.RoomParticipantIdentity(room="room1", identity="alice")),
            lk.room.update_participant(
                api.UpdateParticipantRequest(room="room1", identity="alice", metadata="pwn")
            ),
            lk.room.mute_published_track(
                api.MuteRoomTrackRequest(room="room1", identity="alice", track_sid="TR_x")
            ),
            lk.room.update_subscriptions(
                api.UpdateSubscriptionsRequest(room="room1", identity="alice")
            ),
            lk.room.send_data(api.SendDataRequest(room="room1", data=b"x")),
            lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room="room1", metadata="pwn")
            ),
        ]
        for call in calls:
            with pytest.raises(api.TwirpError) as info:
                await call
            assert info.value.code == "unauthenticated" and info.value.status == 401
        # Nothing happened to alice or the room.
        await alice.send(rtc.SignalRequest(ping=1))
        assert (await alice.expect("pong")).pong > 0
        room = server.call(server.server.manager.require_room, "room1")
        assert room.metadata == "" and room.participant_by_identity("alice") is not None


async def test_unknown_room_is_not_found(server: RunningServer) -> None:
    async with lkapi(server) as lk:
        for call in (
            lk.room.list_participants(api.ListParticipantsRequest(room="nowhere")),
            lk.room.get_participant(api.RoomParticipantIdentity(room="nowhere", identity="a")),
            lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room="nowhere", metadata="m")
            ),
            lk.room.delete_room(api.DeleteRoomRequest(room="nowhere")),
        ):
            with pytest.raises(api.TwirpError) as info:
                await call
            assert info.value.code == "not_found" and info.value.status == 404


# ---- the wire: JSON bodies and malformed requests ------------------------------------------


async def _post(
    server: RunningServer, method: str, body: bytes, content_type: str, token: str | None = None
) -> httpx.Response:
    token = token if token is not None else server.admin_token("room1")
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server.http_url}/twirp/livekit.RoomService/{method}",
            content=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
        )


async def test_json_bodies(server: RunningServer) -> None:
    # Keys may be camelCase or snake_case, as with livekit-server.
    r = await _post(
        server,
        "CreateRoom",
        json.dumps({"name": "room1", "emptyTimeout": 42, "max_participants": 7}).encode(),
        "application/json",
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    created = r.json()
    assert created["name"] == "room1" and created["sid"].startswith("RM_")
    assert created["empty_timeout"] == 42 and created["max_participants"] == 7

    # Unset fields are present, as Twirp's JSON marshaler emits them.
    assert created["metadata"] == "" and created["num_participants"] == 0

    r = await _post(server, "ListRooms", b"{}", "application/json")
    assert r.status_code == 200
    assert [room["name"] for room in r.json()["rooms"]] == ["room1"]
    r = await _post(server, "ListRooms", b'{"names": ["nothing"]}', "application/json")
    assert r.status_code == 200 and r.json() == {"rooms": []}

    # An empty body is an empty request.
    r = await _post(server, "ListRooms", b"", "application/json; charset=utf-8")
    assert r.status_code == 200 and len(r.json()["rooms"]) == 1

    async with joined(server, "alice") as (alice, _):
        r = await _post(
            server,
            "UpdateRoomMetadata",
            json.dumps({"room": "room1", "metadata": "via json"}).encode(),
            "application/json",
        )
        assert r.status_code == 200 and r.json()["metadata"] == "via json"
        assert (await alice.expect("room_update")).room_update.room.metadata == "via json"

        r = await _post(
            server,
            "GetParticipant",
            json.dumps({"room": "room1", "identity": "alice"}).encode(),
            "application/json",
        )
        assert r.status_code == 200 and r.json()["identity"] == "alice"

    r = await _post(
        server,
        "GetParticipant",
        json.dumps({"room": "room1", "identity": "alice"}).encode(),
        "application/json",
    )
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_malformed_bodies(server: RunningServer) -> None:
    # A length prefix running past the end of the body.
    r = await _post(server, "CreateRoom", b"\x0a\xff\x01abc", "application/protobuf")
    assert r.status_code == 400 and r.json()["code"] == "malformed"
    r = await _post(server, "CreateRoom", b"{not json", "application/json")
    assert r.status_code == 400 and r.json()["code"] == "malformed"
    r = await _post(server, "CreateRoom", b'{"emptyTimeout": "soon"}', "application/json")
    assert r.status_code == 400 and r.json()["code"] == "malformed"
    assert server.call(lambda: server.server.rooms) == []


async def test_unknown_method_and_content_type_are_bad_route(server: RunningServer) -> None:
    r = await _post(server, "FlyToTheMoon", b"", "application/protobuf")
    assert r.status_code == 404 and r.json()["code"] == "bad_route"
    r = await _post(server, "ListRooms", b"names: 'x'", "text/plain")
    assert r.status_code == 404 and r.json()["code"] == "bad_route"
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{server.http_url}/twirp/livekit.EgressService/ListEgress",
            content=b"{}",
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 404 and r.json()["code"] == "bad_route"
