"""Room quality signals as official ``livekit`` Python SDK participants see them:
who is speaking (SpeakersChanged), how good each link is (ConnectionQualityUpdate)."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc

from .client_process import python_client
from .conftest import RunningServer, make_config, start_server, stop_server
from .netns import netns
from .sdk_helpers import CameraSource, ToneSource, Watcher, connected

pytestmark = pytest.mark.asyncio


def _speakers(watcher: Watcher) -> list[str]:
    """The active speakers the SDK last announced (``active_speakers_changed``)."""
    for name, args in reversed(watcher.seen):
        if name == "active_speakers_changed":
            return [p.identity for p in args[0]]
    return []


async def _speakers_become(watcher: Watcher, identities: list[str], timeout: float) -> None:
    """Wait until the SDK's active speakers are ``identities``; fail after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while _speakers(watcher) != identities:
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"active speakers {_speakers(watcher)}, not {identities}, after {timeout} s"
        ) from None


async def test_the_loud_publisher_is_the_active_speaker(server: RunningServer) -> None:
    # A short capture queue: silence reaches the server when the test says it starts.
    loud, silent = ToneSource(queue_ms=100), ToneSource(amplitude=0.0, queue_ms=100)
    async with (
        connected(server, "listener") as (_, listener_w),
        connected(server, "loud") as (loud_room, loud_w),
        connected(server, "silent") as (silent_room, _),
    ):
        await silent.publish(silent_room)
        await loud.publish(loud_room)
        for who in ("loud", "silent"):
            await listener_w.wait_for("track_subscribed", lambda t, pub, p, w=who: p.identity == w)
        try:
            # The tone plays from the start: the listener sees it within a second
            # of receiving the track (the reference: 400 ms updates, 2-window EMA).
            await _speakers_become(listener_w, ["loud"], timeout=1.0)
            # The speaker sees itself too; the silent one never speaks.
            await _speakers_become(loud_w, ["loud"], timeout=1.0)
            loud.amplitude = 0.0
            await _speakers_become(listener_w, [], timeout=2.0)
            assert not any(
                any(p.identity == "silent" for p in args[0])
                for name, args in listener_w.seen
                if name == "active_speakers_changed"
            )
        finally:
            await loud.aclose()
            await silent.aclose()


def _qualities(watcher: Watcher, identity: str) -> list[rtc.ConnectionQuality]:
    return [
        args[1]
        for name, args in watcher.seen
        if name == "connection_quality_changed" and args[0].identity == identity
    ]


async def test_connection_quality_is_excellent_on_loopback(server: RunningServer) -> None:
    tone, camera = ToneSource(), CameraSource()
    async with (
        connected(server, "alice") as (alice, alice_w),
        connected(server, "bob") as (_, bob_w),
    ):
        await tone.publish(alice)
        await camera.publish(alice)
        try:
            # The reference scores every 5 s and tells a participant its own quality
            # and that of those it subscribes to.
            await bob_w.wait_for(
                "connection_quality_changed", lambda p, q: p.identity == "alice", timeout=15
            )
            await alice_w.wait_for(
                "connection_quality_changed", lambda p, q: p.identity == "alice", timeout=15
            )
            await bob_w.wait_for(
                "connection_quality_changed", lambda p, q: p.identity == "bob", timeout=15
            )
            await asyncio.sleep(6)  # another scoring window with media flowing
            for watcher in (alice_w, bob_w):
                for who in ("alice", "bob") if watcher is bob_w else ("alice",):
                    assert set(_qualities(watcher, who)) == {
                        rtc.ConnectionQuality.QUALITY_EXCELLENT
                    }
        finally:
            await tone.aclose()
            await camera.aclose()


async def test_connection_quality_is_poor_under_ten_percent_loss() -> None:
    """A publisher whose link loses 10 % (on a veth into a namespace the test makes)
    reads POOR to those subscribed to it, as on the reference (video loses
    its quality level at 2 % and 6 %)."""
    with netns() as ns:
        running = start_server(make_config(bind_addresses=(ns.host_ip,), node_ip=ns.host_ip))
        try:
            async with connected(running, "watcher") as (_, watcher):
                token = running.token_for("lossy", "room1")
                async with python_client(
                    running.url, token, "lossy", camera=True, wrap=ns.exec_argv
                ) as lossy:
                    await lossy.wait_event("published")
                    await watcher.wait_for("track_subscribed", lambda t, pub, p: True)
                    ns.lose(10)
                    await watcher.wait_for(
                        "connection_quality_changed",
                        lambda p, q: (
                            p.identity == "lossy" and q == rtc.ConnectionQuality.QUALITY_POOR
                        ),
                        timeout=30,
                    )
        finally:
            stop_server(running)


async def test_a_constrained_subscriber_steps_down_and_back_up() -> None:
    """A subscriber behind a 400 kbit/s downlink (tc in a namespace the test makes)
    receiving a three-layer camera is moved to a lower layer by its bandwidth
    estimate, keeps receiving, and returns to the top layer when the limit is lifted.
    Congestion control is on by default, as on the reference."""
    camera = CameraSource(1280, 720, fps=15)
    with netns() as ns:
        config = make_config(bind_addresses=(ns.host_ip,), node_ip=ns.host_ip)
        running = start_server(config)
        try:
            async with connected(running, "pub") as (pub_room, _):
                await camera.publish(pub_room)
                token = running.token_for("narrow", "room1")
                async with python_client(
                    running.url, token, "narrow", watch_video=True, wrap=ns.exec_argv
                ) as narrow:
                    await narrow.wait_event("video", lambda e: e["width"] == 1280, timeout=40)
                    ns.limit("400kbit")
                    limited = len(narrow.events)
                    await narrow.wait_event("video", lambda e: e["width"] < 1280, timeout=10)
                    # After stepping down: video keeps coming every second.
                    start = len(narrow.events)
                    await asyncio.sleep(6)
                    after = [e for e in narrow.events[start:] if e["event"] == "video"]
                    assert len(after) >= 4, narrow.events[limited:]
                    assert all(e["width"] < 1280 for e in after[1:]), after
                    ns.limit("")
                    lifted = len(narrow.events)
                    await narrow.wait_event(
                        "video",
                        lambda e: e["width"] == 1280 and narrow.events.index(e) >= lifted,
                        timeout=40,
                    )
        finally:
            await camera.aclose()
            stop_server(running)
