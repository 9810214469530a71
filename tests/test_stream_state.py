"""StreamStateUpdate (issue 14): when a subscriber's bandwidth estimate does not fit
even the lowest layer of a video track, a server with
``rtc.congestion_control.allow_pause`` stops forwarding it and tells the subscriber
the track is PAUSED, and ACTIVE once it fits again, as the reference's stream
allocator does; without it (the default, as on the reference) the track keeps its
lowest layer. The subscriber is livekit-client in headless Chromium run inside a
network namespace the test makes, whose downlink is rate-limited with tc;
livekit-client reports the change as ``TrackStreamStateChanged``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pysfu.testing import make_config, start_server, stop_server

from .browser_helpers import BrowserParticipant, chromium, new_participant
from .netns import Netns, netns
from .sdk_helpers import CameraSource, connected

pytestmark = pytest.mark.asyncio


def _playing(state: dict[str, Any]) -> bool:
    return bool(state["framesDecoded"] > 10)


async def _decoded(viewer: BrowserParticipant) -> int:
    return int((await viewer.call("videoState", "pub"))["framesDecoded"])


@contextlib.asynccontextmanager
async def _watching(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[Netns, BrowserParticipant]]:
    """A camera published from the host and a browser subscriber in a namespace,
    decoding it."""
    camera = CameraSource(1280, 720, fps=15)
    with netns() as ns:
        running = start_server(
            make_config(bind_addresses=(ns.host_ip,), node_ip=ns.host_ip, dev=True, **config)
        )
        try:
            async with (
                connected(running, "pub") as (pub_room, _),
                chromium(tmp_path, wrap=ns.exec_argv) as browser,
            ):
                await camera.publish(pub_room)
                narrow = await new_participant(browser, running, "narrow")
                await narrow.join(running)
                await narrow.wait_state("videoState", "pub", _playing, timeout=40)
                yield ns, narrow
                await narrow.call("disconnect")
        finally:
            await camera.aclose()
            stop_server(running)


async def test_a_subscriber_whose_link_fits_no_layer_is_paused_then_resumed(
    tmp_path: Path,
) -> None:
    async with _watching(tmp_path, allow_pause=True) as (ns, narrow):
        # Below even the lowest layer (and the estimate's floor); media only, so
        # that the StreamStateUpdate is not held in TCP's backoff.
        ns.limit("30kbit", media_only=True)
        paused = await narrow.wait_event(
            "track_stream_state_changed", lambda e: e["state"] == "paused", timeout=40
        )
        assert paused["identity"] == "pub" and paused["kind"] == "video", paused
        ns.limit("")
        await narrow.wait_event(
            "track_stream_state_changed", lambda e: e["state"] == "active", timeout=60
        )
        before = await _decoded(narrow)

        def again(s: dict[str, Any]) -> bool:
            return bool(s["framesDecoded"] > before + 10)

        await narrow.wait_state("videoState", "pub", again, timeout=30)


async def test_without_allow_pause_a_link_that_fits_no_layer_keeps_the_lowest(
    tmp_path: Path,
) -> None:
    async with _watching(tmp_path) as (ns, narrow):
        # Below the lowest layer, but above what a few frames need over a while:
        # the subscriber keeps decoding (slowly) and is never told PAUSED.
        ns.limit("60kbit", media_only=True)
        await asyncio.sleep(15)  # the estimate falls below the lowest layer by then
        before = await _decoded(narrow)
        # Long enough for a keyframe to get through a link that loses half of what
        # it is sent (one in ten 10 s windows here had none).
        await asyncio.sleep(20)
        after = await _decoded(narrow)
        ns.limit("")
        events = [e for e in await narrow.events() if e["name"] == "track_stream_state_changed"]
        assert not [e for e in events if e["state"] == "paused"], events
        assert after > before, (before, after)
