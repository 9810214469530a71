"""A new subscriber's first picture when the publisher ignores keyframe requests
(issue 14): lk's file publishers (server-sdk-go file tracks) send keyframes only where
their files have them. The server starts a waiting subscriber on a keyframe of any
layer below the one it wants, as the reference does, and switches up later."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from livekit import rtc

from pysfu.testing import RunningServer

from .client_process import build_go_client, go_client
from .sdk_helpers import VideoProbe, connected

pytestmark = pytest.mark.asyncio

LAYERS = (("q", "160x90", 15), ("h", "320x180", 10_000), ("f", "640x360", 10_000))
"""rid, size, keyframe interval in frames (15 fps): LOW has one every second, MEDIUM
and HIGH only their first."""


def _keyframes(ivf: Path) -> int:
    data = ivf.read_bytes()
    at, count = struct.unpack_from("<H", data, 6)[0], 0
    while at + 12 <= len(data):
        size = struct.unpack_from("<I", data, at)[0]
        frame = data[at + 12 : at + 12 + size]
        count += bool(frame) and frame[0] & 1 == 0  # VP8: bit 0 clear on keyframes
        at += 12 + size
    return count


def _encode_layers(out: Path) -> list[Path]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs ffmpeg (with libvpx) to encode the file publisher's layers")
    files = []
    for rid, size, gop in LAYERS:
        path = out / f"layer_{rid}.ivf"
        source = f"testsrc=size={size}:rate=15"
        encode = ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k"]
        keyframes = ["-g", str(gop), "-keyint_min", str(gop)]
        read = ["-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", "40"]
        subprocess.run(
            [ffmpeg, *read, *encode, *keyframes, str(path)],
            check=True,
            timeout=120,
        )
        files.append(path)
    assert [_keyframes(f) for f in files[1:]] == [1, 1], "MEDIUM/HIGH: one keyframe"
    return files


async def test_a_late_subscriber_sees_video_when_the_publisher_ignores_keyframe_requests(
    server: RunningServer, tmp_path: Path
) -> None:
    files = _encode_layers(tmp_path)
    binary = build_go_client(tmp_path)
    token = server.token_for("filecam")
    async with go_client(
        binary, server.url, token, "filecam", duration_s=60, publish_ivf=files
    ) as cam:
        await cam.wait_event("published", timeout=30)
        # The only MEDIUM and HIGH keyframes are long gone when the subscriber comes.
        await asyncio.sleep(4)
        async with connected(server, "late") as (_, watcher):
            args = await watcher.wait_for(
                "track_subscribed", lambda t, pub, p: t.kind == rtc.TrackKind.KIND_VIDEO
            )
            probe = VideoProbe(args[0])
            try:
                # A LOW keyframe comes every second; without starting on it the HIGH
                # layer it asked for has no keyframe for the next 30 s.
                await probe.wait_frames(5, timeout=8)
            finally:
                await probe.aclose()
