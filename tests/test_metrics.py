"""Prometheus /metrics (prometheus_port): the text parses with the Prometheus client's
own parser, and its series follow what two SDK participants do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from .conftest import RunningServer, make_config, start_server, stop_server
from .sdk_helpers import AudioProbe, CameraSource, ToneSource, VideoProbe, connected

pytestmark = pytest.mark.asyncio


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = start_server(make_config(prometheus_port=0))
    try:
        yield running
    finally:
        stop_server(running)


async def _scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by (name, labels without node_id)."""
    port = server.server.metrics_port
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "node_id"))
            samples[(s.name, labels)] = s.value
    return samples


async def test_metrics_follow_a_call(server: RunningServer) -> None:
    before = await _scrape(server)
    assert before[("livekit_room_total", ())] == 0
    assert before[("livekit_participant_total", ())] == 0
    packets_in = ("livekit_packet_total", (("direction", "incoming"),))
    bytes_out = ("livekit_packet_bytes_total", (("direction", "outgoing"),))
    assert before[packets_in] == 0
    assert ("process_cpu_seconds_total", ()) in before

    tone = ToneSource()
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (_, bob_w):
        await tone.publish(alice)
        args = await bob_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_AUDIO
        )
        probe = AudioProbe(args[0])
        try:
            await probe.wait_tone(present=True)
            during = await _scrape(server)
            await asyncio.sleep(1)
            later = await _scrape(server)
        finally:
            await probe.aclose()
            await tone.aclose()

    # Two joins timed, each well under the slowest bucket.
    assert before[("livekit_session_start_time_ms_count", ())] == 0
    assert during[("livekit_session_start_time_ms_count", ())] == 2
    assert during[("livekit_session_start_time_ms_bucket", (("le", "10000.0"),))] == 2
    assert during[("livekit_room_total", ())] == 1
    assert during[("livekit_participant_total", ())] == 2
    assert during[("livekit_track_published_total", (("kind", "audio"),))] == 1
    assert during[("livekit_track_subscribed_total", (("kind", "audio"),))] == 1
    # Counters move with the media: audio every 10-20 ms in, forwarded out.
    assert during[packets_in] > 10
    assert later[packets_in] > during[packets_in]
    assert later[bytes_out] > during[bytes_out] > 0
    assert later[("livekit_pysfu_rtp_total", (("kind", "forwarded"),))] > 0
    assert any(name == "livekit_pysfu_engine_cpu_seconds_total" for name, _ in later)


async def test_metrics_port_serves_only_metrics(server: RunningServer) -> None:
    port = server.server.metrics_port
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{port}/rtc")
    assert reply.status_code == 404


async def test_rtcp_feedback_counted(server: RunningServer) -> None:
    camera = CameraSource(320, 240)
    async with connected(server, "alice") as (alice, _), connected(server, "bob") as (_, bob_w):
        await camera.publish(alice, simulcast=False)
        args = await bob_w.wait_for(
            "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
        )
        probe = VideoProbe(args[0])
        try:
            await probe.wait_frames(10)
            # str0m reports each stream's feedback once a second.
            for _ in range(30):
                samples = await _scrape(server)
                if samples[("livekit_pli_total", (("direction", "outgoing"),))] > 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            await probe.aclose()
            await camera.aclose()
    # A subscriber's first frame needs a keyframe: the server asked the publisher.
    assert samples[("livekit_pli_total", (("direction", "outgoing"),))] > 0
    assert samples[("livekit_pysfu_keyframe_requests_total", ())] > 0
    assert ("livekit_nack_total", (("direction", "incoming"),)) in samples
    assert ("livekit_fir_total", (("direction", "incoming"),)) in samples
    assert ("livekit_packet_loss_total", (("direction", "outgoing"),)) in samples
