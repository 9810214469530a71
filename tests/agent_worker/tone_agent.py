"""A livekit-agents worker for pysfu's end-to-end tests (no AI plugins, no network).

Run by tests/test_agents_e2e.py in the agents virtualenv (livekit-agents pins an
older ``livekit`` than the tests use), as ``python tone_agent.py start`` with
LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET set. Environment:

- ``AGENT_NAME``: register for explicit dispatch under this name (default: unnamed);
- ``AGENT_OUTPUT=roomio``: play the tone through the agents framework's room audio
  output (``_ParticipantAudioOutput``, what ``AgentSession`` speaks through), which
  waits for a subscriber (``wait_for_subscription``) before it sends a frame;
  otherwise through a plain ``rtc.AudioSource`` track.

Each job: joins the room, plays a 440 Hz tone, answers the RPC ``echo`` with its
payload, and sends every data packet back to its sender on topic ``echo``. Its job
metadata is announced as the participant attribute ``job_metadata``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType, cli
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

SAMPLE_RATE = 48000
FRAME_SAMPLES = 480  # 10 ms
TONE_HZ = 440.0

log = logging.getLogger("tone-agent")

server = AgentServer(
    # One warm process, no HTTP health port clash between two workers on one host.
    num_idle_processes=1,
    port=0,
    # The test box is shared and busy: CPU load must not mark the worker full.
    load_fnc=lambda: 0.0,
    job_executor_type=JobExecutorType.PROCESS,
    initialize_process_timeout=60.0,
    shutdown_process_timeout=5.0,
)


def tone_frame(start: int) -> rtc.AudioFrame:
    frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, FRAME_SAMPLES)
    data = frame.data
    for i in range(FRAME_SAMPLES):
        t = (start + i) / SAMPLE_RATE
        data[i] = int(8000 * math.sin(2 * math.pi * TONE_HZ * t))
    return frame


async def play_plain(ctx: JobContext) -> None:
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, options)
    n = 0
    while True:
        await source.capture_frame(tone_frame(n))
        n += FRAME_SAMPLES


async def play_roomio(ctx: JobContext) -> None:
    output = _ParticipantAudioOutput(
        ctx.room,
        sample_rate=SAMPLE_RATE,
        num_channels=1,
        track_publish_options=rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    start = asyncio.create_task(output.start())
    await output.subscribed
    log.info("audio output has a subscriber")
    n = 0
    while True:
        # capture_frame queues; pace it like a TTS stream at real time.
        await output.capture_frame(tone_frame(n))
        n += FRAME_SAMPLES
        await asyncio.sleep(FRAME_SAMPLES / SAMPLE_RATE)
    await start


@server.rtc_session(agent_name=os.environ.get("AGENT_NAME", ""))
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    room = ctx.room

    async def echo(data: rtc.RpcInvocationData) -> str:
        return data.payload

    room.local_participant.register_rpc_method("echo", echo)

    pending: set[asyncio.Task[None]] = set()

    @room.on("data_received")
    def _on_data(packet: rtc.DataPacket) -> None:
        if packet.participant is None:
            return
        task = asyncio.ensure_future(
            room.local_participant.publish_data(
                packet.data, topic="echo", destination_identities=[packet.participant.identity]
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    await room.local_participant.set_attributes({"job_metadata": ctx.job.metadata})
    if os.environ.get("AGENT_OUTPUT") == "roomio":
        await play_roomio(ctx)
    else:
        await play_plain(ctx)


if __name__ == "__main__":
    cli.run_app(server)
