"""Room quality signals as official ``livekit`` Python SDK participants see them:
who is speaking (SpeakersChanged), how good each link is (ConnectionQualityUpdate)."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import RunningServer
from .sdk_helpers import ToneSource, Watcher, connected

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
    loud, silent = ToneSource(), ToneSource(amplitude=0.0)
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
