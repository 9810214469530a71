"""Media, data and RPC between official ``livekit`` Python SDK participants through the
real server on loopback: what two people using the SDK see and hear."""

from __future__ import annotations

import asyncio
import socket

import pytest
from livekit import rtc

from .client_process import python_client
from .conftest import RunningServer
from .sdk_helpers import AudioProbe, CameraSource, ToneSource, VideoProbe, connected

pytestmark = pytest.mark.asyncio


def _first_track(watcher_args: tuple, kind: int) -> rtc.Track:
    track = watcher_args[0]
    assert track.kind == kind
    return track


async def test_audio_and_video_reach_auto_subscriber(server: RunningServer) -> None:
    tone, camera = ToneSource(), CameraSource(320, 240)
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (_, bob_w):
        await tone.publish(alice)
        await camera.publish(alice)
        audio_args = await bob_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO
        )
        video_args = await bob_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        assert audio_args[2].identity == "alice"
        assert audio_args[1].source == rtc.TrackSource.SOURCE_MICROPHONE
        audio, video = AudioProbe(audio_args[0]), VideoProbe(video_args[0])
        try:
            await audio.wait_tone(present=True)
            await video.wait_frames(10)
            assert video.size == (320, 240)
        finally:
            await audio.aclose()
            await video.aclose()
        await tone.aclose()
        await camera.aclose()


async def test_selective_subscription(server: RunningServer) -> None:
    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, _),
        connected(server, "carol", auto_subscribe=False) as (_, carol_w),
    ):
        await tone.publish(alice)
        (pub, participant) = await carol_w.wait_for("track_published")
        assert participant.identity == "alice" and not pub.subscribed
        pub.set_subscribed(True)
        (track, _, _) = await carol_w.wait_for("track_subscribed")
        probe = AudioProbe(track)
        await probe.wait_tone(present=True)
        await probe.aclose()
        pub.set_subscribed(False)
        await carol_w.wait_for("track_unsubscribed")
        pub.set_subscribed(True)
        count = sum(1 for name, _ in carol_w.seen if name == "track_subscribed")
        (track, _, _) = await carol_w.wait_for(
            "track_subscribed",
            lambda *a: sum(1 for n, _ in carol_w.seen if n == "track_subscribed") > count,
        )
        probe = AudioProbe(track)
        await probe.wait_tone(present=True)
        await probe.aclose()
        await tone.aclose()


async def test_mute_and_unpublish_are_seen(server: RunningServer) -> None:
    tone = ToneSource()
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (_, bob_w):
        publication = await tone.publish(alice)
        (track, _, _) = await bob_w.wait_for("track_subscribed")
        probe = AudioProbe(track)
        await probe.wait_tone(present=True)
        tone.track.mute()
        await bob_w.wait_for("track_muted")
        await probe.wait_tone(present=False)
        tone.track.unmute()
        await bob_w.wait_for("track_unmuted")
        await probe.wait_tone(present=True)
        await probe.aclose()
        await alice.local_participant.unpublish_track(publication.sid)
        (unpublished, _) = await bob_w.wait_for("track_unpublished")
        assert unpublished.sid == publication.sid
        await tone.aclose()


async def test_data_reaches_everyone_or_named_identities(server: RunningServer) -> None:
    async with (
        connected(server, "alice") as (alice, _),
        connected(server, "bob") as (
            _,
            bob_w,
        ),
        connected(server, "carol") as (_, carol_w),
    ):
        await bob_w.wait_for("participant_connected", lambda p: p.identity == "carol")
        await alice.local_participant.publish_data(b"to-all", reliable=True, topic="chat")
        for w in (bob_w, carol_w):
            (packet,) = await w.wait_for("data_received", lambda p: p.data == b"to-all")
            assert packet.topic == "chat" and packet.participant.identity == "alice"
        await alice.local_participant.publish_data(
            b"lossy-bob", reliable=False, destination_identities=["bob"]
        )
        await bob_w.wait_for("data_received", lambda p: p.data == b"lossy-bob")
        await alice.local_participant.publish_data(
            b"only-carol", reliable=True, destination_identities=["carol"]
        )
        await carol_w.wait_for("data_received", lambda p: p.data == b"only-carol")
        await asyncio.sleep(0.5)
        assert not any(n == "data_received" and a[0].data == b"only-carol" for n, a in bob_w.seen)


async def test_rpc_and_text_streams(server: RunningServer) -> None:
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (bob, _):

        @bob.local_participant.register_rpc_method("greet")
        async def greet(data: rtc.RpcInvocationData) -> str:
            return f"hello {data.caller_identity}: {data.payload}"

        reply = await alice.local_participant.perform_rpc(
            destination_identity="bob", method="greet", payload="hi", response_timeout=10
        )
        assert reply == "hello alice: hi"

        received: asyncio.Queue[str] = asyncio.Queue()

        async def read(reader: rtc.TextStreamReader, identity: str) -> None:
            await received.put(f"{identity}:{await reader.read_all()}")

        tasks: set[asyncio.Task[None]] = set()
        bob.register_text_stream_handler(
            "chat", lambda r, ident: tasks.add(asyncio.create_task(read(r, ident)))
        )
        await alice.local_participant.send_text("streamed text", topic="chat")
        async with asyncio.timeout(10):
            assert await received.get() == "alice:streamed text"


async def test_server_send_data_reaches_participants(server: RunningServer) -> None:
    from livekit import api

    async with connected(server, "bob", room="room1") as (_, bob_w):
        async with api.LiveKitAPI(server.http_url, *server_keys()) as lk:
            await lk.room.send_data(
                api.SendDataRequest(room="room1", data=b"from-server", kind=0, topic="srv")
            )
        (packet,) = await bob_w.wait_for("data_received", lambda p: p.data == b"from-server")
        assert packet.topic == "srv"


def server_keys() -> tuple[str, str]:
    from .conftest import API_KEY, API_SECRET

    return API_KEY, API_SECRET


async def test_duplicate_identity_replaces_and_room_keeps_working(
    server: RunningServer,
) -> None:
    async with connected(server, "bob") as (bob, bob_w):
        first = rtc.Room()
        reasons: list[int] = []
        first.on("disconnected", lambda reason: reasons.append(reason))
        await first.connect(server.url, server.token_for("alice"))
        async with connected(server, "alice") as (second, _):
            async with asyncio.timeout(15):
                while not reasons:
                    await asyncio.sleep(0.05)
            assert reasons[0] == rtc.DisconnectReason.DUPLICATE_IDENTITY
            await second.local_participant.publish_data(b"still-here")
            await bob_w.wait_for("data_received", lambda p: p.data == b"still-here")
            # The newcomer publishes nothing: others hear of it in the next update
            # batch (0.5 s), which its data may overtake.
            sid = second.local_participant.sid
            await bob_w.wait_for("participant_connected", lambda p: p.sid == sid)
            assert [p.identity for p in bob.remote_participants.values()] == ["alice"]
        await first.disconnect()


async def test_three_participants_publish_and_subscribe(server: RunningServer) -> None:
    names = ["p1", "p2", "p3"]
    tones = [ToneSource(freq=300 + 200 * i) for i in range(3)]
    async with (
        connected(server, "p1") as (r1, w1),
        connected(server, "p2") as (
            r2,
            w2,
        ),
        connected(server, "p3") as (r3, w3),
    ):
        for room, tone in zip((r1, r2, r3), tones, strict=True):
            await tone.publish(room)
        for me, watcher in zip(names, (w1, w2, w3), strict=True):
            others = {n for n in names if n != me}
            got: set[str] = set()
            async with asyncio.timeout(20):
                while got != others:
                    seen = frozenset(got)
                    (_, _, participant) = await watcher.wait_for(
                        "track_subscribed", lambda t, pub, p, seen=seen: p.identity not in seen
                    )
                    got.add(participant.identity)
        for tone in tones:
            await tone.aclose()


async def test_killed_client_is_cleaned_up(server: RunningServer) -> None:
    async with (
        connected(server, "bob") as (_, bob_w),
        python_client(server.url, server.token_for("victim"), "victim") as victim,
    ):
        await victim.wait_event("connected")
        await bob_w.wait_for("participant_connected", lambda p: p.identity == "victim")
        victim.proc.kill()
        # Within the ping timeout (15 s), plus margin for a loaded CI machine.
        await bob_w.wait_for(
            "participant_disconnected", lambda p: p.identity == "victim", timeout=25
        )


async def test_garbage_udp_does_not_disturb_sessions(server: RunningServer) -> None:
    import random

    tone = ToneSource()
    rng = random.Random(7)
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (_, bob_w):
        await tone.publish(alice)
        (track, _, _) = await bob_w.wait_for("track_subscribed")
        probe = AudioProbe(track)
        await probe.wait_tone(present=True)
        port = server.server.udp_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(3000):
                kind = i % 5
                if kind == 0:
                    payload = rng.randbytes(rng.randint(0, 1500))
                elif kind == 1:  # truncated STUN binding request
                    payload = b"\x00\x01\x00\x08\x21\x12\xa4\x42" + rng.randbytes(
                        rng.randint(0, 12)
                    )
                elif kind == 2:  # RTP-looking
                    payload = b"\x80" + rng.randbytes(rng.randint(0, 40))
                elif kind == 3:  # RTCP-looking
                    payload = b"\x81\xc8" + rng.randbytes(rng.randint(0, 30))
                else:  # DTLS-looking
                    payload = b"\x16\xfe\xfd" + rng.randbytes(rng.randint(0, 60))
                sock.sendto(payload, ("127.0.0.1", port))
                if i % 500 == 0:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(1)
        await probe.wait_tone(present=True)
        await probe.aclose()
        await tone.aclose()


async def test_simulcast_layer_follows_requested_quality(server: RunningServer) -> None:
    # 4:3 so that the SDK's low layer is smaller: for 16:9 640x360 the Rust SDK's
    # default simulcast sends q at the H360 preset, i.e. 640x360 like h (scale 1.0).
    camera = CameraSource(640, 480, fps=15)
    async with (
        connected(server, "alice") as (alice, _),
        connected(server, "bob") as (_, bob_w),
    ):
        await camera.publish(alice, simulcast=True)
        (track, publication, _) = await bob_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        assert publication.simulcasted
        video = VideoProbe(track)
        try:
            # The browser-style default is the highest layer the publisher sends.
            async with asyncio.timeout(20):
                while video.size != (640, 480):
                    await video.wait_frames(1)
            publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_LOW)
            async with asyncio.timeout(20):
                while video.size[0] >= 640 or video.size[0] == 0:
                    await video.wait_frames(1)
            assert video.size[0] < 640 and video.size[1] < 480
            publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)
            async with asyncio.timeout(20):
                while video.size != (640, 480):
                    await video.wait_frames(1)
        finally:
            await video.aclose()
            await camera.aclose()


async def test_server_api_sees_and_mutes_live_tracks(server: RunningServer) -> None:
    from livekit import api
    from livekit.protocol import models

    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, _),
        connected(server, "bob") as (_, bob_w),
        api.LiveKitAPI(server.http_url, *server_keys()) as lk,
    ):
        publication = await tone.publish(alice)
        (track, _, _) = await bob_w.wait_for("track_subscribed")
        probe = AudioProbe(track)
        await probe.wait_tone(present=True)
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        by_identity = {p.identity: p for p in listed.participants}
        assert set(by_identity) == {"alice", "bob"}
        info = by_identity["alice"]
        assert info.state == models.ParticipantInfo.State.ACTIVE
        assert [t.sid for t in info.tracks] == [publication.sid]
        assert info.tracks[0].source == models.TrackSource.MICROPHONE
        await lk.room.mute_published_track(
            api.MuteRoomTrackRequest(
                room="room1", identity="alice", track_sid=publication.sid, muted=True
            )
        )
        await bob_w.wait_for("track_muted")
        await probe.wait_tone(present=False)
        await probe.aclose()
        await tone.aclose()
