"""The browser SDK, ``livekit-client``, in headless Chromium against the real server:
two people in browser tabs, a browser and a Python SDK participant, chat, mute, leave,
refused tokens, and the demo page itself (see tests/browser_helpers.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio
from livekit import rtc

from pysfu.auth import VideoGrant, mint_token, verify_token
from pysfu.config import Config

from .browser_helpers import BrowserParticipant, chromium, new_participant
from .client_process import build_go_client, go_client
from .conftest import API_KEY, API_SECRET, RunningServer, make_config, start_server, stop_server
from .sdk_helpers import AudioProbe, CameraSource, ToneSource, VideoProbe, connected

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# Tests taking the ``browser`` fixture are skipped, saying why, when Chromium or
# Playwright is missing (see browser_helpers.skip_reason); the others still run.
pytestmark = pytest.mark.asyncio


@pytest.fixture
def server_config() -> Config:
    # Dev mode serves the demo page the browsers load livekit-client from.
    return make_config(dev=True)


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path) as b:
        yield b


def video_playing(state: dict) -> bool:
    return state["width"] > 0 and state["height"] > 0 and state["framesDecoded"] > 10


def audio_flowing(state: dict) -> bool:
    return state["samples"] > 48_000 and state["energy"] > 0.01


async def test_two_browsers_see_and_hear_each_other(
    server: RunningServer, browser: Browser
) -> None:
    alice = await new_participant(browser, server, "alice")
    bob = await new_participant(browser, server, "bob")
    await alice.join(server)
    await bob.join(server)
    assert sorted(await alice.call("publish")) == ["camera", "microphone"]
    assert sorted(await bob.call("publish")) == ["camera", "microphone"]
    for me, other in ((alice, bob), (bob, alice)):
        video = await me.wait_state("videoState", other.name, video_playing)
        assert not video["paused"]
        audio = await me.wait_state("audioState", other.name, audio_flowing)
        assert audio["packets"] > 0
        # The fake microphone plays a 440 Hz tone; it comes out as such.
        await me.wait_state("audioState", other.name, lambda s: abs(s["peakHz"] - 440) < 15)
    await alice.call("disconnect")
    await bob.call("disconnect")


async def test_browser_joins_on_v1_with_one_peer_connection(
    server: RunningServer, browser: Browser
) -> None:
    """Issue 13: livekit-client joins on single-PC /rtc/v1 (no fallback to /rtc, no
    "Consider upgrading your LiveKit server" warning) with one RTCPeerConnection, and
    media flows both ways with a Python SDK participant."""
    tone = ToneSource()
    web = await new_participant(browser, server, "web")
    result = await web.join(server)
    assert result["room"] == "room1"
    async with connected(server, "py") as (py, py_w):
        await web.wait_event("participant_connected", lambda e: e["identity"] == "py")
        await tone.publish(py)
        await web.call("publish")
        audio = await web.wait_state("audioState", "py", audio_flowing)
        assert audio["packets"] > 0
        await py_w.wait_for("track_subscribed", lambda t, pub, p: p.identity == "web")
        await tone.aclose()
    paths = [httpx.URL(url).path for url in web.websockets]
    assert paths == ["/rtc/v1"], web.websockets
    assert await web.peer_connections() == 1
    assert not any("upgrading" in line.lower() for line in web.console), web.console
    assert not web.errors(), web.console
    await web.call("disconnect")


async def test_browser_and_python_sdk_exchange_media_and_data(
    server: RunningServer, browser: Browser
) -> None:
    tone, camera = ToneSource(), CameraSource(320, 240)
    web = await new_participant(browser, server, "web")
    await web.join(server)
    async with connected(server, "py") as (py, py_w):
        await web.wait_event("participant_connected", lambda e: e["identity"] == "py")
        await tone.publish(py)
        await camera.publish(py)
        await web.call("publish")

        # Python -> browser: the SDK's 440 Hz tone and colour bars play in the page.
        video = await web.wait_state("videoState", "py", video_playing)
        assert (video["width"], video["height"]) == (320, 240)
        await web.wait_state(
            "audioState", "py", lambda s: audio_flowing(s) and abs(s["peakHz"] - 440) < 15
        )

        # Browser -> Python: Chromium's fake camera and the 440 Hz fake microphone.
        audio_args = await py_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO
        )
        video_args = await py_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        assert audio_args[2].identity == "web"
        assert audio_args[1].source == rtc.TrackSource.SOURCE_MICROPHONE
        assert video_args[1].source == rtc.TrackSource.SOURCE_CAMERA
        audio, frames = AudioProbe(audio_args[0]), VideoProbe(video_args[0])
        try:
            await audio.wait_tone(present=True, timeout=20)
            await frames.wait_frames(10)
            assert frames.size[0] > 0 and frames.size[1] > 0
        finally:
            await audio.aclose()
            await frames.aclose()

        # Data both ways, reliable and lossy, with topics.
        await web.call("publishData", "hello from the browser", True, "chat")
        (packet,) = await py_w.wait_for("data_received", lambda p: p.topic == "chat")
        assert packet.data == b"hello from the browser"
        assert packet.participant.identity == "web"
        assert packet.kind == rtc.DataPacketKind.KIND_RELIABLE
        await py.local_participant.publish_data(b"hello from python", reliable=True, topic="chat")
        got = await web.wait_event("data_received", lambda e: e["topic"] == "chat")
        assert (got["identity"], got["text"]) == ("py", "hello from python")
        await py.local_participant.publish_data(b"lossy", reliable=False, topic="telemetry")
        await web.call("publishData", "lossy too", False, "telemetry")
        # Lossy is best effort, but nothing is lost on loopback.
        got = await web.wait_event("data_received", lambda e: e["topic"] == "telemetry")
        assert got["text"] == "lossy"
        (packet,) = await py_w.wait_for("data_received", lambda p: p.topic == "telemetry")
        assert packet.data == b"lossy too"

        await tone.aclose()
        await camera.aclose()
    await web.wait_event("participant_disconnected", lambda e: e["identity"] == "py")
    await web.call("disconnect")


async def test_late_joiners_get_tracks_already_live(
    server: RunningServer, browser: Browser
) -> None:
    """Tracks published before someone joins reach them (they used to be lost: the
    join's bindings reached the media plane before it knew the new participant)."""
    tone = ToneSource()
    web = await new_participant(browser, server, "web")
    await web.join(server)
    await web.call("publish")
    async with connected(server, "py") as (py, py_w):
        await py_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        await tone.publish(py)
        late = await new_participant(browser, server, "late")
        await late.join(server)
        await late.wait_state("videoState", "web", video_playing)
        await late.wait_state("audioState", "web", audio_flowing)
        await late.wait_state("audioState", "py", audio_flowing)
        await tone.aclose()
    await late.call("disconnect")
    await web.call("disconnect")


async def _watching_a_camera(
    server: RunningServer, browser: Browser, preset: str, simulcast: bool
) -> tuple[BrowserParticipant, BrowserParticipant]:
    """alice publishes her camera at ``preset``; bob joins and sees it play."""
    alice = await new_participant(browser, server, "alice")
    bob = await new_participant(browser, server, "bob")
    await alice.join(server)
    await bob.join(server)
    await alice.call("publishCamera", preset, simulcast)
    await bob.wait_state("videoState", "alice", video_playing)
    return alice, bob


async def test_browser_simulcast_layers_follow_requested_quality(
    server: RunningServer, browser: Browser
) -> None:
    """A 720p camera goes out as three simulcast layers (rids q, h, f); the layer a
    subscriber receives follows the quality it asks for."""
    alice, bob = await _watching_a_camera(server, browser, "h720", simulcast=True)
    layers = await alice.call("sentLayers")
    assert sorted(layer["rid"] for layer in layers) == ["f", "h", "q"]
    await bob.call("setVideoQuality", "alice", "LOW")
    await bob.wait_state("videoState", "alice", lambda s: (s["width"], s["height"]) == (320, 180))
    # The upper layers need the browser's bandwidth estimate to ramp up (and CPU to
    # encode them): ask for HIGH and accept any layer above LOW.
    await bob.call("setVideoQuality", "alice", "HIGH")
    await bob.wait_state("videoState", "alice", lambda s: s["width"] > 320, timeout=45)
    await bob.call("setVideoQuality", "alice", "LOW")
    await bob.wait_state("videoState", "alice", lambda s: s["width"] == 320)
    await alice.call("disconnect")
    await bob.call("disconnect")


async def test_chat_between_browsers(server: RunningServer, browser: Browser) -> None:
    """Chat as LiveKit's own apps do it: reliable data with a topic, and text streams
    on topic "lk.chat" (what the demo page uses)."""
    alice = await new_participant(browser, server, "alice")
    bob = await new_participant(browser, server, "bob")
    await alice.join(server)
    await bob.join(server)
    await alice.wait_event("participant_connected", lambda e: e["identity"] == "bob")
    for i in range(5):
        await alice.call("publishData", f"message {i}", True, "chat")
    await bob.call("publishData", "reply", True, "chat")
    await bob.wait_event("data_received", lambda e: e["text"] == "message 4")
    got = [e["text"] for e in await bob.events() if e["name"] == "data_received"]
    assert got == [f"message {i}" for i in range(5)]  # reliable: all, in order, once
    reply = await alice.wait_event("data_received")
    assert (reply["identity"], reply["topic"], reply["text"]) == ("bob", "chat", "reply")
    long_text = "héllo " * 5000  # longer than one packet: chunked by the text stream
    await alice.call("sendText", long_text, "lk.chat")
    got_text = await bob.wait_event("text_received")
    assert (got_text["identity"], got_text["text"]) == ("alice", long_text)
    await alice.call("disconnect")
    await bob.call("disconnect")


async def test_mute_unpublish_and_leave_reach_the_other_side(
    server: RunningServer, browser: Browser
) -> None:
    alice = await new_participant(browser, server, "alice")
    await alice.join(server)
    async with connected(server, "py") as (_, py_w):
        bob = await new_participant(browser, server, "bob")
        await bob.join(server)
        await alice.call("publish")
        await bob.wait_state("videoState", "alice", video_playing)
        await py_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )

        # Mute the camera: the browser and the Python SDK both see it.
        await alice.call("setEnabled", "camera", False)
        muted = await bob.wait_event("track_muted", lambda e: e["identity"] == "alice")
        assert muted["source"] == "camera"
        (participant, pub) = await py_w.wait_for("track_muted")
        assert participant.identity == "alice" and pub.source == rtc.TrackSource.SOURCE_CAMERA
        await alice.call("setEnabled", "camera", True)
        await bob.wait_event("track_unmuted", lambda e: e["source"] == "camera")
        await py_w.wait_for("track_unmuted")
        # Video flows again after unmuting.
        before = await bob.call("videoState", "alice")
        await bob.wait_state(
            "videoState", "alice", lambda s: s["framesDecoded"] > before["framesDecoded"] + 10
        )

        # Unpublish the microphone.
        await alice.call("unpublish", "microphone")
        gone = await bob.wait_event("track_unpublished", lambda e: e["identity"] == "alice")
        assert gone["source"] == "microphone"
        (pub, participant) = await py_w.wait_for("track_unpublished")
        assert pub.source == rtc.TrackSource.SOURCE_MICROPHONE

        # Leave.
        await alice.call("disconnect")
        await bob.wait_event("participant_disconnected", lambda e: e["identity"] == "alice")
        (participant,) = await py_w.wait_for("participant_disconnected")
        assert participant.identity == "alice"
        assert await bob.call("remoteIdentities") == ["py"]
        await bob.call("disconnect")


NOT_ALLOWED = 0  # livekit-client's ConnectionErrorReason.NotAllowed


async def test_refused_tokens_show_not_allowed(server: RunningServer, browser: Browser) -> None:
    web = await new_participant(browser, server, "web")
    wrong_secret = mint_token(
        API_KEY, "another-secret-another-secret-0123", identity="web", room="room1"
    )
    other_server = mint_token("otherkey", API_SECRET, identity="web", room="room1")
    expired = mint_token(
        API_KEY, API_SECRET, identity="web", room="room1", ttl_s=1, now=time.time() - 3600
    )
    no_join = mint_token(
        API_KEY, API_SECRET, identity="web", grant=VideoGrant(room="room1", room_admin=True)
    )
    for token, why in (
        ("not-a-token", "garbage"),
        (wrong_secret, "wrong secret"),
        (other_server, "unknown API key"),
        (expired, "expired"),
        (no_join, "no roomJoin grant"),
    ):
        result = await web.connect(server, token)
        assert not result["ok"], why
        error = result["error"]
        assert error["name"] == "ConnectionError", (why, error)
        # Room.connect re-wraps the error: reason and status are kept (reasonName is not).
        assert (error["reason"], error["status"]) == (NOT_ALLOWED, 401), (why, error)
        assert error["message"].startswith("could not establish signal connection: "), why
        assert len(error["message"]) > 40, why  # with the server's reason from /rtc/validate
    # A full room is refused with 403, also "not allowed".
    await asyncio.to_thread(
        server.call, lambda: server.server.create_room("small", max_participants=1)
    )
    async with connected(server, "first", room="small"):
        result = await web.connect(server, server.token_for("web", "small"))
        assert not result["ok"]
        assert (result["error"]["reason"], result["error"]["status"]) == (NOT_ALLOWED, 403)
        assert "full" in result["error"]["message"]
    assert await asyncio.to_thread(server.call, server.server.room, "room1") is None


async def test_token_names_the_room(server: RunningServer, browser: Browser) -> None:
    """A LiveKit client never says which room it wants: the token names it. A token for
    another room joins that room, where the others of room1 are not."""
    async with connected(server, "py", room="room1") as (_, py_w):
        web = await new_participant(browser, server, "web")
        result = await web.join(server, room="elsewhere")
        assert result["room"] == "elsewhere"
        assert await web.call("remoteIdentities") == []
        await asyncio.sleep(0.5)
        assert not [name for name, _ in py_w.seen if name == "participant_connected"]
        await web.call("disconnect")


async def _ui_join(browser: Browser, server: RunningServer, identity: str) -> Page:
    context = await browser.new_context(viewport={"width": 1100, "height": 420})
    page = await context.new_page()
    await page.goto(f"{server.http_url}/demo/?room=demo&identity={identity}")
    await page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('ready')"
    )
    # The form is prefilled from the query string; the token field stays empty, so the
    # page asks the server's dev-only token endpoint.
    await page.click("#join")
    await page.wait_for_function("() => document.body.classList.contains('joined')")
    return page


TILE_PLAYING_JS = """(identity) => {
  const tile = document.querySelector(`.tile[data-identity="${identity}"]`);
  const video = tile && tile.querySelector('video');
  return !!video && video.videoWidth > 0 && !video.paused
    && video.getVideoPlaybackQuality().totalVideoFrames > 5;
}"""


async def test_demo_page_two_people(
    server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    alice = await _ui_join(browser, server, "alice")
    bob = await _ui_join(browser, server, "bob")
    for page in (alice, bob):
        for identity in ("alice", "bob"):  # each sees both tiles with live video
            await page.wait_for_function(TILE_PLAYING_JS, arg=identity, timeout=30_000)
        await page.wait_for_function(
            "() => document.querySelector('#people').textContent.startsWith('2 in room')"
        )
    # Chat (text stream on lk.chat) from bob reaches alice.
    await bob.fill("#chat-text", "hi alice")
    await bob.click("#chat-form button")
    await alice.wait_for_function(
        "() => document.querySelector('#chat-log').textContent.includes('bob: hi alice')"
    )
    await alice.fill("#chat-text", "hi bob")
    await alice.click("#chat-form button")
    await bob.wait_for_function(
        "() => document.querySelector('#chat-log').textContent.includes('alice: hi bob')"
    )
    # Muting the mic shows on the other side.
    await bob.click("#toggle-mic")
    await alice.wait_for_function(
        "() => document.querySelector('.tile[data-identity=\"bob\"] .label')"
        ".textContent.includes('mic muted')"
    )
    await bob.click("#toggle-mic")
    await alice.wait_for_function(
        "() => document.querySelector('.tile[data-identity=\"bob\"] .label')"
        ".textContent.includes('mic on')"
    )
    await asyncio.sleep(1)  # let both fake cameras draw a few frames for the picture
    shot = tmp_path / "demo.png"
    await alice.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("PYSFU_DEMO_SCREENSHOT"):  # how docs/demo.png is made
        shutil.copy(shot, os.environ["PYSFU_DEMO_SCREENSHOT"])
    # Leaving removes the tile on the other side.
    await bob.click("#leave")
    await alice.wait_for_function("() => !document.querySelector('.tile[data-identity=\"bob\"]')")
    await alice.click("#leave")


async def test_demo_routes_in_dev_mode(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/")).text == "OK"  # the health check stays at /
        moved = await http.get("/demo")
        assert moved.status_code == 308 and moved.headers["location"] == "/demo/"
        page = await http.get("/demo/")
        assert page.headers["content-type"].startswith("text/html")
        assert '<script src="demo.js">' in page.text
        script = await http.get("/demo/demo.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert 100_000 < len(script.content) < 1_000_000  # livekit-client, minified
        minted = await http.get("/demo/token", params={"room": "r", "identity": "me"})
        claims = verify_token(minted.json()["token"], {API_KEY: API_SECRET})
        assert (claims.identity, claims.video.room, claims.video.room_join) == ("me", "r", True)
        assert (await http.get("/demo/token", params={"room": "r"})).status_code == 400


async def test_no_demo_routes_without_dev() -> None:
    running = await asyncio.to_thread(start_server, make_config())
    try:
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            for path in ("/demo/", "/demo/demo.js", "/demo/token?room=r&identity=me"):
                assert (await http.get(path)).status_code == 404
            assert (await http.get("/")).text == "OK"
    finally:
        await asyncio.to_thread(stop_server, running)


async def test_browser_signal_reconnect_resumes_unnoticed(
    server: RunningServer, browser: Browser
) -> None:
    """livekit-client's ``simulateScenario('signal-reconnect')`` resumes the session
    (Reconnected without a full Reconnecting), the Python SDK participant sees nothing,
    and a reliable message sent while the signal was down arrives exactly once."""
    web = await new_participant(browser, server, "web")
    await web.join(server)
    async with connected(server, "py") as (py, py_w):
        await web.call("setEnabled", "microphone", True)
        await py_w.wait_for("track_subscribed", lambda t, pub, p: p.identity == "web")
        sid = await web.call("localSid")
        await web.call("signalReconnectSending", "sent in the gap", "gap")
        await web.wait_event("reconnected")
        await py_w.wait_for("data_received", lambda p: p.topic == "gap")
        await asyncio.sleep(1.5)  # a duplicate would follow by now
        names = [e["name"] for e in await web.events()]
        assert "reconnecting" not in names, f"a full reconnect: {names}"
        assert "participant_disconnected" not in names
        assert await web.call("localSid") == sid
        assert py.remote_participants["web"].sid == sid
        left = ("participant_disconnected", "track_unpublished", "track_unsubscribed")
        assert not [n for n in py_w.names() if n in left], py_w.names()
        got = [a[0].data for n, a in py_w.seen if n == "data_received" and a[0].topic == "gap"]
        assert got == [b"sent in the gap"]
    await web.call("disconnect")


async def test_browser_is_told_when_a_track_is_forbidden(
    server: RunningServer, browser: Browser
) -> None:
    """A Python SDK publisher forbids its track to everyone: the browser subscriber is
    told (TrackSubscriptionPermissionChanged, not_allowed) and its audio stops; allowed
    again, it is told and the audio flows."""
    tone = ToneSource()
    web = await new_participant(browser, server, "web")
    await web.join(server)
    async with connected(server, "py") as (py, _):
        await tone.publish(py)
        await web.wait_state("audioState", "py", audio_flowing)
        py.local_participant.set_track_subscription_permissions(allow_all_participants=False)
        told = await web.wait_event("track_subscription_permission_changed", timeout=10)
        assert (told["identity"], told["status"]) == ("py", "not_allowed")
        await asyncio.sleep(1)  # in flight when forbidden
        before = await web.call("audioState", "py")
        await asyncio.sleep(1.5)
        after = await web.call("audioState", "py")
        assert after is None or before is None or after["packets"] == before["packets"], (
            f"audio still reaches a forbidden subscriber: {before} -> {after}"
        )
        py.local_participant.set_track_subscription_permissions(allow_all_participants=True)
        await web.wait_event(
            "track_subscription_permission_changed", lambda e: e["status"] == "allowed"
        )
        start = await web.call("audioState", "py")
        await web.wait_state(
            "audioState",
            "py",
            lambda s: audio_flowing(s) and s["packets"] > (start or {"packets": 0})["packets"],
        )
        await tone.aclose()
    await web.call("disconnect")


async def _frames_in(bob: BrowserParticipant, identity: str, seconds: float) -> int:
    """Frames bob decodes of ``identity``'s video over ``seconds``."""
    before = (await bob.call("videoState", identity))["framesDecoded"]
    await asyncio.sleep(seconds)
    return int((await bob.call("videoState", identity))["framesDecoded"] - before)


async def test_disabled_track_stops_reaching_that_subscriber(
    server: RunningServer, browser: Browser
) -> None:
    """A subscriber that disables a video (what adaptive stream does when it is
    hidden) stops receiving it; enabling it brings it back."""
    alice, bob = await _watching_a_camera(server, browser, "h360", simulcast=False)
    await bob.call("setTrackEnabled", "alice", "video", False)
    await asyncio.sleep(1)  # what was in flight
    assert await _frames_in(bob, "alice", 2.0) <= 2
    await bob.call("setTrackEnabled", "alice", "video", True)
    await bob.wait_state("videoState", "alice", lambda s: True)
    assert await _frames_in(bob, "alice", 3.0) > 10
    await alice.call("disconnect")
    await bob.call("disconnect")


async def test_video_frame_rate_follows_the_subscribers_fps(
    server: RunningServer, browser: Browser
) -> None:
    """A subscriber that asks for a lower frame rate (``setVideoFPS``) gets one: the
    server drops the publisher's upper VP8 temporal layers for it, the picture goes
    on, and asking for the full rate brings the frames back."""
    alice, bob = await _watching_a_camera(server, browser, "h360", simulcast=True)
    full = await _frames_in(bob, "alice", 3.0)
    assert full > 30, f"{full} frames in 3 s before any limit"
    await bob.call("setVideoFPS", "alice", 5)
    await asyncio.sleep(2)  # a measurement of the layers' rates, and what was in flight
    limited = await _frames_in(bob, "alice", 3.0)
    assert 3 <= limited <= full * 0.6, f"{limited} frames at 5 fps, {full} before"
    await bob.call("setVideoFPS", "alice", 30)
    await asyncio.sleep(2)
    restored = await _frames_in(bob, "alice", 3.0)
    assert restored > limited * 1.5, f"{restored} frames once 30 fps is asked, {limited} limited"
    await alice.call("disconnect")
    await bob.call("disconnect")


async def _active_rids(alice: BrowserParticipant) -> set[str]:
    encodings = await alice.call("encodings")
    return {e["rid"] for e in encodings or [] if e["active"]}


async def _wait_active_rids(alice: BrowserParticipant, want: set[str], timeout: float) -> None:
    last: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while (last := await _active_rids(alice)) != want:
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"active encodings {last}, not {want}, after {timeout} s") from None


async def test_dynacast_pauses_layers_nobody_receives(
    server: RunningServer, browser: Browser
) -> None:
    """With ``dynacast: true``, a publisher whose only subscriber asks for LOW stops
    encoding the higher layers, and with no subscriber at all stops every layer."""
    alice = await new_participant(browser, server, "alice")
    bob = await new_participant(browser, server, "bob")
    await alice.join(server, options={"dynacast": True})
    await bob.join(server)
    await alice.call("publishCamera", "h720", True)
    await bob.wait_state("videoState", "alice", video_playing)
    await _wait_active_rids(alice, {"q", "h", "f"}, timeout=10)
    await bob.call("setVideoQuality", "alice", "LOW")
    await _wait_active_rids(alice, {"q"}, timeout=10)
    await bob.wait_state("videoState", "alice", lambda s: s["width"] == 320)
    await bob.call("disconnect")
    await _wait_active_rids(alice, set(), timeout=10)
    await alice.call("disconnect")


async def test_browser_restricted_to_relay_connects_through_the_embedded_turn_server(
    browser: Browser,
) -> None:
    """Issue 13: with turn.enabled the browser gets the TURN server in ice_servers and,
    restricted to relay candidates (iceTransportPolicy 'relay'), connects through it;
    a Python SDK participant hears its microphone."""
    running = start_server(make_config(dev=True, turn_enabled=True, turn_udp_port=0))
    try:
        web = await new_participant(browser, running, "web")
        token = running.token_for("web", "room1")
        relay = {"rtcConfig": {"iceTransportPolicy": "relay"}}
        result = await web.call("connect", running.url, token, {}, relay)
        assert result["ok"], f"{result} {web.console[-20:]}"
        async with connected(running, "py") as (_, py_w):
            await web.call("publish")
            (track, _, _) = await py_w.wait_for(
                "track_subscribed",
                lambda t, pub, p: p.identity == "web" and t.kind == rtc.TrackKind.KIND_AUDIO,
            )
            probe = AudioProbe(track)
            try:
                await probe.wait_tone(present=True)
            finally:
                await probe.aclose()
        assert running.server.turn is not None and running.server.turn.relayed > 0
        await web.call("disconnect")
    finally:
        stop_server(running)


async def test_browser_red_audio_reaches_red_and_plain_subscribers(
    server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    """livekit-client publishes its microphone as RED (RFC 2198) when the server's
    answer accepts ``red/48000/2``, as the reference's does: the track is announced as
    ``audio/red``, a browser and a Python SDK subscriber (both negotiate RED) hear the
    tone, and a server-sdk-go subscriber (pion, no RED) gets the primary Opus frames."""
    binary = build_go_client(tmp_path)
    web = await new_participant(browser, server, "web")
    listener = await new_participant(browser, server, "listener")
    await web.join(server)
    await listener.join(server)
    token = server.token_for("go")
    async with (
        connected(server, "py") as (_, py_w),
        go_client(binary, server.url, token, "go", duration_s=60, listen=True) as go,
    ):
        await go.wait_event("connected", timeout=20)
        await web.call("publishMicrophone")
        args = await py_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO
        )
        assert args[1].mime_type.lower() == "audio/red"
        probe = AudioProbe(args[0])
        try:
            await probe.wait_tone(present=True, timeout=20)
        finally:
            await probe.aclose()
        await listener.wait_state(
            "audioState", "web", lambda s: audio_flowing(s) and abs(s["peakHz"] - 440) < 15
        )
        # Counted since the Go client subscribed: Opus frames only, no RED headers.
        report = await go.wait_event("audio", lambda e: e["packets"] > 100, timeout=20)
        assert report["codec"].lower() == "audio/opus", report
        assert report["red_like"] == 0, report
    await web.call("disconnect")
    await listener.call("disconnect")
