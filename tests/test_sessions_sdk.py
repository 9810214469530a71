"""A participant's session outlives its connections, as the official Python SDK
(``livekit``) and ``livekit-api`` expect (PROTOCOL.md §13): signal drops resume the same
session, frozen clients keep theirs, tokens are refreshed, and what the server API set
survives; plus the acknowledgements, privacy rules and leave reasons the SDK relies on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from livekit import api, rtc
from livekit.protocol import rtc as signal

from pysfu.auth import VideoGrant, mint_token
from pysfu.config import load_config

from .client_process import python_client
from .conftest import API_KEY, API_SECRET, RunningServer, start_server, stop_server
from .sdk_helpers import (
    AudioProbe,
    ToneSource,
    Watcher,
    connected,
    hearing,
    newest_track,
    simulate_signal_reconnect,
)
from .signal_client import signal_url
from .test_twirp import lkapi

pytestmark = pytest.mark.asyncio

Reason = rtc.DisconnectReason
# What must never reach the others when a participant's connection only wobbles.
LEAVE_EVENTS = ("participant_disconnected", "track_unsubscribed", "track_unpublished")


def left_events(watcher: Watcher) -> list[str]:
    return [name for name in watcher.names() if name in LEAVE_EVENTS]


@contextlib.asynccontextmanager
async def yaml_server(body: str) -> AsyncIterator[RunningServer]:
    """A server configured by a YAML file's text, as an operator would; the keys the
    test sets must be read, not ignored with a warning."""
    config, warnings = load_config(
        config_body=f"keys: {{{API_KEY}: {API_SECRET}}}\n{body}",
        bind=["127.0.0.1"],
        port=0,
        udp_port=0,
        tcp_port=0,
        env={},
    )
    assert not [w for w in warnings if "ignored" in w], warnings
    running = await asyncio.to_thread(start_server, config)
    try:
        yield running
    finally:
        await asyncio.to_thread(stop_server, running)


async def hearing_again(
    watcher: Watcher, identity: str, probe: AudioProbe, since: float
) -> AudioProbe:
    """Wait until ``identity`` is heard after ``since``, on the same track or on a new
    subscription (then the returned probe replaces ``probe``)."""
    async with asyncio.timeout(10):
        while not (probe.loud_at and probe.loud_at[-1] > since):
            track = newest_track(watcher, identity)
            if track is not None and track is not probe.track:
                await probe.aclose()
                probe = AudioProbe(track)
            await asyncio.sleep(0.05)
    return probe


# ---- resume -----------------------------------------------------------------------------


async def test_signal_reconnect_resumes_the_same_session(server: RunningServer) -> None:
    """A dropped signal WebSocket is resumed: same participant and track sids, nobody
    sees anything, and the listener hears at most a blip."""
    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, alice_w),
        connected(server, "bob") as (bob, bob_w),
    ):
        publication = await tone.publish(alice)
        probe = await hearing(bob_w, "alice")
        sid, track_sid = alice.local_participant.sid, publication.sid
        start = time.monotonic()
        await simulate_signal_reconnect(alice, alice_w)
        await asyncio.sleep(2)  # listen on past the resume
        gap = probe.longest_gap(start, time.monotonic())

        assert alice.local_participant.sid == sid, "a new participant: full reconnect, not resume"
        assert list(alice.local_participant.track_publications) == [track_sid]
        assert not alice_w.count("local_track_republished")
        assert not alice_w.count("participant_disconnected")  # a full reconnect drops bob
        assert bob.remote_participants["alice"].sid == sid
        assert list(bob.remote_participants["alice"].track_publications) == [track_sid]
        assert not left_events(bob_w), bob_w.names()
        assert gap < 0.3, f"bob heard nothing from alice for {gap:.2f} s"
        await probe.aclose()
        await tone.aclose()


async def test_frozen_publisher_keeps_its_session(server: RunningServer) -> None:
    """A publisher stopped dead for 20 s (a laptop lid) stays in the room with the same
    sid, and is heard again within a second of waking."""
    freeze_s = 20
    async with (
        connected(server, "bob") as (bob, bob_w),
        python_client(server.url, server.token_for("laptop"), "laptop", tone=True) as laptop,
    ):
        sid = (await laptop.wait_event("connected"))["sid"]
        probe = await hearing(bob_w, "laptop")
        laptop.freeze()
        frozen = time.monotonic()
        while time.monotonic() < frozen + freeze_s:
            assert not left_events(bob_w), (
                f"{bob_w.names()} after {time.monotonic() - frozen:.0f} s frozen"
            )
            await asyncio.sleep(0.25)
        thawed = time.monotonic()
        laptop.thaw()
        back = await probe.sound_after(thawed, timeout=10)
        assert back < 1.0, f"audio back {back:.2f} s after the thaw"
        assert bob.remote_participants["laptop"].sid == sid
        assert not left_events(bob_w), bob_w.names()
        await probe.aclose()


async def test_refreshed_token_resumes_after_expiry_and_api_state_survives(
    server: RunningServer,
) -> None:
    """The server refreshes the participant's token: a signal drop after the original
    token's end still resumes, and what the server API changed (metadata, attributes,
    a revoked right) survives the resume."""
    # Tokens are accepted up to a minute past ``exp`` (clock-skew leeway, as
    # livekit/protocol); this one was issued so that it is accepted for 15 s more.
    accepted_for_s, leeway_s = 15, 60
    token = mint_token(
        API_KEY,
        API_SECRET,
        identity="alice",
        grant=VideoGrant(room_join=True, room="room1"),
        ttl_s=20,
        now=time.time() + accepted_for_s - leeway_s - 20,
    )
    accepted_until = time.monotonic() + accepted_for_s
    async with (
        connected(server, "alice", token=token) as (alice, alice_w),
        connected(server, "bob") as (_, bob_w),
        lkapi(server) as lk,
    ):
        await alice_w.wait_for("token_refreshed", timeout=10)
        await alice.local_participant.publish_data(b"before", reliable=True)
        await bob_w.wait_for("data_received", lambda p: p.data == b"before")
        await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="room1",
                identity="alice",
                metadata="set-by-api",
                attributes={"role": "listener"},
                permission=api.ParticipantPermission(
                    can_subscribe=True, can_publish=True, can_publish_data=False
                ),
            )
        )
        await asyncio.sleep(accepted_until + 2 - time.monotonic())
        sid = alice.local_participant.sid
        await simulate_signal_reconnect(alice, alice_w)
        assert alice.local_participant.sid == sid, "not resumed: a new participant"

        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="room1"))
        (info,) = [p for p in listed.participants if p.identity == "alice"]
        assert (info.sid, info.metadata, dict(info.attributes)) == (
            sid,
            "set-by-api",
            {"role": "listener"},
        )
        assert not info.permission.can_publish_data, "the resume re-granted a revoked right"
        assert alice.local_participant.metadata == "set-by-api"
        await alice.local_participant.publish_data(b"after", reliable=True)
        await asyncio.sleep(1)
        assert not bob_w.count("data_received", lambda p: p.data == b"after")


async def attempt_resume(server: RunningServer, token: str, sid: str) -> list[str]:
    """Open a resume (``reconnect=1&sid=…``) with ``token``; what the server answered:
    the kinds of the signal messages it sent, or ``http <status>``."""
    url = signal_url(server.url, token, reconnect="1", sid=sid, reconnect_reason="1")
    answer: list[str] = []
    try:
        async with websockets.connect(url) as ws:
            with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
                async with asyncio.timeout(2):
                    async for data in ws:
                        assert isinstance(data, bytes)
                        kind = signal.SignalResponse.FromString(data).WhichOneof("message")
                        answer.append(str(kind))
    except websockets.InvalidStatus as exc:
        answer.append(f"http {exc.response.status_code}")
    return answer


async def test_resume_with_another_identitys_token_is_refused(server: RunningServer) -> None:
    """Presenting a valid token of another identity with the victim's sid takes
    nothing over: no ReconnectResponse, the victim stays and can still resume."""
    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, alice_w),
        connected(server, "bob") as (_, bob_w),
    ):
        await tone.publish(alice)  # the victim's media is up: a session worth resuming
        await bob_w.wait_for("track_subscribed")
        victim = alice.local_participant.sid
        answer = await attempt_resume(server, server.token_for("mallory"), victim)
        assert "reconnect" not in answer, answer
        assert not [n for n in alice_w.names() if n in ("reconnecting", "disconnected")]
        # The session is still alice's: her own resume finds it.
        await simulate_signal_reconnect(alice, alice_w)
        assert alice.local_participant.sid == victim
        assert not left_events(bob_w), bob_w.names()
        await tone.aclose()


# ---- acknowledgements ------------------------------------------------------------------


async def test_subscription_and_participant_updates_are_acknowledged(
    server: RunningServer,
) -> None:
    """``wait_for_subscription()`` resolves once someone subscribes (TrackSubscribed),
    and ``set_metadata``/``set_name``/``set_attributes`` return promptly
    (RequestResponse OK) instead of waiting out the SDK's 5 s timeout."""
    tone = ToneSource()
    async with (
        connected(server, "alice", can_update_own_metadata=True) as (alice, _),
        connected(server, "bob", auto_subscribe=False) as (_, bob_w),
    ):
        publication = await tone.publish(alice)
        (remote, _) = await bob_w.wait_for("track_published")
        remote.set_subscribed(True)
        await bob_w.wait_for("track_subscribed")
        subscribed = bob_w.time_of("track_subscribed")
        try:
            await asyncio.wait_for(publication.wait_for_subscription(), 5)
        except TimeoutError:
            raise AssertionError("wait_for_subscription() did not resolve") from None
        assert time.monotonic() - subscribed < 1.0

        me = alice.local_participant
        updates = {
            "set_metadata": me.set_metadata("meta"),
            "set_name": me.set_name("Alice"),
            "set_attributes": me.set_attributes({"k": "v"}),
        }
        for what, update in updates.items():
            start = time.monotonic()
            try:
                await asyncio.wait_for(update, 2)
            except TimeoutError:
                raise AssertionError(f"{what} took more than 2 s") from None
            took = time.monotonic() - start
            assert took < 0.5, f"{what} took {took:.2f} s"
        await bob_w.wait_for("participant_attributes_changed")
        await tone.aclose()


# ---- privacy -----------------------------------------------------------------------------


async def test_subscription_permissions_stop_and_resume_media(server: RunningServer) -> None:
    """A publisher that allows only carol stops its media to bob at once; carol keeps
    hearing it. Allowing everyone again brings it back to bob. (The Python SDK shows no
    event when a track is forbidden, with livekit-server too; that the subscriber is
    told is checked with the browser SDK in test_browser.py.)"""
    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, _),
        connected(server, "bob") as (_, bob_w),
        connected(server, "carol") as (_, carol_w),
    ):
        await tone.publish(alice)
        bob_ears, carol_ears = await hearing(bob_w, "alice"), await hearing(carol_w, "alice")
        alice.local_participant.set_track_subscription_permissions(
            allow_all_participants=False,
            participant_permissions=[
                rtc.ParticipantTrackPermission(participant_identity="carol", allow_all=True)
            ],
        )
        revoked = time.monotonic()
        await asyncio.sleep(2)
        # A second for the change to travel; from then on bob must hear nothing.
        late = [t - revoked for t in bob_ears.loud_at if t > revoked + 1]
        assert not late, f"bob still got alice's audio {late[-1]:.1f} s after she forbade it"
        assert carol_ears.longest_gap(revoked, time.monotonic()) < 0.3
        assert not carol_w.count("track_unsubscribed")

        alice.local_participant.set_track_subscription_permissions(allow_all_participants=True)
        allowed = time.monotonic()
        bob_ears = await hearing_again(bob_w, "alice", bob_ears, allowed)
        await bob_ears.aclose()
        await carol_ears.aclose()
        await tone.aclose()


async def test_remote_unmute_is_refused_by_default(server: RunningServer) -> None:
    """An admin cannot re-open a microphone its user muted (``failed_precondition``,
    as livekit-server without ``room.enable_remote_unmute``); muting still works."""
    tone = ToneSource()
    async with (
        connected(server, "alice") as (alice, alice_w),
        connected(server, "bob") as (_, bob_w),
        lkapi(server) as lk,
    ):
        publication = await tone.publish(alice)
        await bob_w.wait_for("track_subscribed")
        tone.track.mute()
        await bob_w.wait_for("track_muted")
        request = api.MuteRoomTrackRequest(
            room="room1", identity="alice", track_sid=publication.sid, muted=False
        )
        with pytest.raises(api.TwirpError) as refused:
            await lk.room.mute_published_track(request)
        assert refused.value.code == "failed_precondition"
        await asyncio.sleep(0.5)
        assert publication.muted and not bob_w.count("track_unmuted")

        tone.track.unmute()
        await bob_w.wait_for("track_unmuted")
        request.muted = True
        await lk.room.mute_published_track(request)
        await alice_w.wait_for("track_muted", lambda p, pub: p.identity == "alice")
        await bob_w.wait_for("track_muted", lambda *a: bob_w.count("track_muted") == 2)
        await tone.aclose()


async def test_remote_unmute_when_the_config_allows_it() -> None:
    tone = ToneSource()
    async with (
        yaml_server("room: {enable_remote_unmute: true}\n") as server,
        connected(server, "alice") as (alice, _),
        connected(server, "bob") as (_, bob_w),
        lkapi(server) as lk,
    ):
        publication = await tone.publish(alice)
        await bob_w.wait_for("track_subscribed")
        tone.track.mute()
        await bob_w.wait_for("track_muted")
        await lk.room.mute_published_track(
            api.MuteRoomTrackRequest(
                room="room1", identity="alice", track_sid=publication.sid, muted=False
            )
        )
        await bob_w.wait_for("track_unmuted")
        await tone.aclose()


# ---- leaving and rooms -------------------------------------------------------------------


async def test_clean_leave_reads_client_initiated(server: RunningServer) -> None:
    """``room.disconnect()`` reaches the others as CLIENT_INITIATED, every time (the
    DTLS close can overtake the LeaveRequest)."""
    reasons: list[str] = []
    async with connected(server, "bob") as (_, bob_w):
        for run in range(5):
            tone = ToneSource()
            async with connected(server, "alice") as (alice, _):
                await tone.publish(alice)
                await bob_w.wait_for(
                    "track_subscribed",
                    lambda *a, run=run: bob_w.count("track_subscribed") > run,
                )
            (gone,) = await bob_w.wait_for(
                "participant_disconnected",
                lambda p, run=run: bob_w.count("participant_disconnected") > run,
            )
            reasons.append(Reason.Name(gone.disconnect_reason or 0))
            await tone.aclose()
    assert reasons == ["CLIENT_INITIATED"] * 5


async def test_rooms_are_not_created_by_joining_when_auto_create_is_off() -> None:
    """``room.auto_create: false``: a join to a room that does not exist is refused
    (404, as livekit-server's room allocator), unless the token may create rooms;
    a room created through the API can be joined."""
    async with yaml_server("room: {auto_create: false}\n") as server, lkapi(server) as lk:
        token = server.token_for("alice", "nowhere")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            validate = await http.get("/rtc/validate", params={"access_token": token})
        assert validate.status_code == 404, validate.text
        with pytest.raises(rtc.ConnectError):
            async with connected(server, "alice", token=token):
                pass
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in listed.rooms] == []

        await lk.room.create_room(api.CreateRoomRequest(name="planned"))
        async with connected(server, "alice", room="planned") as (room, _):
            assert room.name == "planned"
        async with connected(server, "owner", room="adhoc", room_create=True) as (room, _):
            assert room.name == "adhoc"
