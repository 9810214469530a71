"""The media engine on several threads (shards) behind one port, through the real
server and the official Python SDK: a room whose participants sit on different shards
works as one, and a small room stays on one shard (no relaying)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pysfu.testing import RunningServer, make_config, start_server, stop_server

from .sdk_helpers import ToneSource, connected, hearing

pytestmark = pytest.mark.asyncio


def _two_shards(spread_after: int) -> Iterator[RunningServer]:
    running = start_server(make_config(workers=2, shard_spread_after=spread_after))
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def spread() -> Iterator[RunningServer]:
    """Two shards; every participant after the first of a room on the other one."""
    yield from _two_shards(1)


@pytest.fixture
def packed() -> Iterator[RunningServer]:
    """Two shards; rooms kept on one up to the default 32 participants."""
    yield from _two_shards(32)


async def _alice_heard_by_bob_and_carol(running: RunningServer) -> None:
    tone = ToneSource()
    async with (
        connected(running, "alice") as (alice, _),
        connected(running, "bob") as (_, bob_w),
        connected(running, "carol") as (_, carol_w),
    ):
        await tone.publish(alice)
        probes = [await hearing(watcher, "alice") for watcher in (bob_w, carol_w)]
        try:
            tone.amplitude = 0
            for probe in probes:
                await probe.wait_tone(present=False)
        finally:
            for probe in probes:
                await probe.aclose()
            await tone.aclose()


async def test_a_room_split_over_shards_hears_its_speaker(spread: RunningServer) -> None:
    await _alice_heard_by_bob_and_carol(spread)
    stats = spread.engine_stats()
    assert stats["shards"] == 2
    # bob sits on the other shard than alice: her packets crossed.
    assert stats["rtp_relayed"] > 0, stats


async def test_a_small_room_stays_on_one_shard(packed: RunningServer) -> None:
    await _alice_heard_by_bob_and_carol(packed)
    stats = packed.engine_stats()
    assert stats["shards"] == 2
    assert stats["rtp_relayed"] == 0, stats
