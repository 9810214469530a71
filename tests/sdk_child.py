"""A Python SDK participant in a process of its own, so that a test can freeze it
(SIGSTOP, as a sleeping laptop) or kill it. Run by :func:`tests.client_process.python_client`:

    python -m tests.sdk_child URL TOKEN [--tone] [--camera] [--watch-video] [--listen]

It prints one JSON line per event on stdout (``connected`` with its sid, ``published``
with its track's sid, then room events) and stays until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from livekit import rtc

from .sdk_helpers import CameraSource, ToneSource


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--tone", action="store_true", help="publish a 440 Hz microphone")
    parser.add_argument("--camera", action="store_true", help="publish a simulcast camera")
    parser.add_argument(
        "--watch-video",
        action="store_true",
        help="report each second the size and count of video frames received",
    )
    parser.add_argument(
        "--listen",
        action="store_true",
        help="play out received audio and report each second its receive statistics",
    )
    args = parser.parse_args()

    room = rtc.Room()
    room.on(
        "participant_connected",
        lambda p: emit("participant_connected", identity=p.identity, sid=p.sid),
    )
    room.on(
        "participant_disconnected",
        lambda p: emit("participant_disconnected", identity=p.identity, sid=p.sid),
    )
    watchers: list[asyncio.Task[None]] = []

    async def watch(track: rtc.Track) -> None:
        frames, width, height, since = 0, 0, 0, time.monotonic()
        async for event in rtc.VideoStream(track):
            frames += 1
            width, height = event.frame.width, event.frame.height
            if time.monotonic() - since >= 1.0:
                emit("video", width=width, height=height, frames=frames)
                frames, since = 0, time.monotonic()

    async def listen(track: rtc.Track) -> None:
        # Pulling the audio is playout: libwebrtc's jitter buffer (and its NACK
        # list) runs only while someone reads it.
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)

        async def report() -> None:
            while True:
                await asyncio.sleep(1.0)
                for s in await track.get_stats():
                    if s.WhichOneof("stats") == "inbound_rtp":
                        rtp = s.inbound_rtp
                        emit(
                            "audio",
                            packets_received=rtp.received.packets_received,
                            packets_lost=rtp.received.packets_lost,
                            nack_count=rtp.inbound.nack_count,
                            concealed_samples=rtp.inbound.concealed_samples,
                            total_samples_received=rtp.inbound.total_samples_received,
                        )

        reporter = asyncio.create_task(report())
        try:
            async for _ in stream:
                pass
        finally:
            reporter.cancel()

    def subscribed(track: rtc.Track, *_: Any) -> None:
        if args.watch_video and track.kind == rtc.TrackKind.KIND_VIDEO:
            watchers.append(asyncio.create_task(watch(track)))
        if args.listen and track.kind == rtc.TrackKind.KIND_AUDIO:
            watchers.append(asyncio.create_task(listen(track)))

    room.on("track_subscribed", subscribed)
    room.on("reconnecting", lambda: emit("reconnecting"))
    room.on("reconnected", lambda: emit("reconnected"))
    room.on("disconnected", lambda reason: emit("disconnected", reason=int(reason)))
    await room.connect(args.url, args.token, rtc.RoomOptions(connect_timeout=15))
    me = room.local_participant
    emit("connected", identity=me.identity, sid=me.sid)
    tone = ToneSource()  # held here: its feeding task lives as long as the process
    if args.tone:
        publication = await tone.publish(room)
        emit("published", track_sid=publication.sid)
    camera = CameraSource()
    if args.camera:
        publication = await camera.publish(room)
        emit("published", track_sid=publication.sid)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
