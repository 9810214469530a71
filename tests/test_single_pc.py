"""Issue 13: ``/rtc/v1``, one PeerConnection for both directions. The official Python
SDK tries it first; against pysfu it must connect there (no "falling back to v0"
warning) and publish and subscribe over that one PeerConnection."""

from __future__ import annotations

import logging

import pytest

from .conftest import RunningServer
from .sdk_helpers import AudioProbe, ToneSource, Watcher, connected

pytestmark = pytest.mark.asyncio

FALLBACK = "falling back to v0"


async def _hear(watcher: Watcher, identity: str) -> None:
    await watcher.wait_for("track_subscribed", lambda t, pub, p: p.identity == identity)
    participant = watcher.room.remote_participants[identity]
    track = next(p.track for p in participant.track_publications.values() if p.track)
    probe = AudioProbe(track)  # type: ignore[arg-type]
    try:
        await probe.wait_tone(present=True)
    finally:
        await probe.aclose()


async def test_python_sdk_joins_on_v1_and_media_flows_both_ways(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="livekit")
    async with (
        connected(server, "alice") as (alice, alice_w),
        connected(server, "bob") as (
            bob,
            bob_w,
        ),
    ):
        tone_a, tone_b = ToneSource(), ToneSource()
        await tone_a.publish(alice)
        await tone_b.publish(bob)
        await _hear(bob_w, "alice")
        await _hear(alice_w, "bob")
        # One engine peer per participant: the single PeerConnection.
        assert server.server.media is not None
        assert dict(server.server.media.engine.stats())["peers"] == 2
        await tone_a.aclose()
        await tone_b.aclose()
    said = [r.getMessage() for r in caplog.records]
    assert not any(FALLBACK in m or "v1 path not found" in m for m in said), [
        m for m in said if "v1" in m
    ]
