"""The browser SDK, ``livekit-client``, in headless Chromium against the real server:
two people in browser tabs, a browser and a Python SDK participant, chat, mute, leave,
refused tokens, and the demo page itself (see tests/browser_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from livekit import rtc
from playwright.async_api import Browser

from pysfu.config import Config

from .browser_helpers import chromium, new_participant, skip_reason
from .conftest import RunningServer, make_config
from .sdk_helpers import AudioProbe, CameraSource, ToneSource, VideoProbe, connected

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


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


async def test_v1_falls_back_to_v0(server: RunningServer, browser: Browser) -> None:
    """livekit-client tries single-PC /rtc/v1 first; pysfu answers 404 there and
    /rtc/v1/validate 404 (without "requested room does not exist"), so the client retries
    on /rtc without surfacing an error (PROTOCOL.md §1)."""
    alice = await new_participant(browser, server, "alice")
    result = await alice.join(server)
    assert result["room"] == "room1"
    paths = [httpx.URL(url).path for url in alice.websockets]
    assert paths == ["/rtc/v1", "/rtc"], alice.websockets
    assert any("v1 RTC path not found" in line for line in alice.console)
    assert not alice.errors(), alice.console
    await alice.call("disconnect")


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
