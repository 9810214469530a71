"""Helpers for tests driving the official ``livekit`` Python SDK against pysfu."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from livekit import rtc

from .conftest import RunningServer

SAMPLE_RATE = 48_000
FRAME_MS = 10
TONE_HZ = 440.0


class Watcher:
    """Collects every Room event so a test can wait for one matching a predicate."""

    NAMES = (
        "participant_connected",
        "participant_disconnected",
        "track_published",
        "track_unpublished",
        "track_subscribed",
        "track_unsubscribed",
        "track_subscription_failed",
        "track_muted",
        "track_unmuted",
        "data_received",
        "participant_metadata_changed",
        "participant_name_changed",
        "participant_attributes_changed",
        "participant_permissions_changed",
        "local_track_subscribed",
        "local_track_republished",
        "reconnecting",
        "reconnected",
        "token_refreshed",
        "transcription_received",
        "active_speakers_changed",
        "connection_quality_changed",
        "disconnected",
    )

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.seen: list[tuple[str, tuple[Any, ...]]] = []
        self.times: list[float] = []
        """``time.monotonic()`` of each entry of ``seen``."""
        self._changed = asyncio.Event()
        for name in self.NAMES:
            room.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.seen.append((name, args))
            self.times.append(time.monotonic())
            self._changed.set()

        return record

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def count(self, name: str, pred: Callable[..., bool] = lambda *a: True) -> int:
        return sum(1 for seen_name, args in self.seen if seen_name == name and pred(*args))

    def time_of(self, name: str, pred: Callable[..., bool] = lambda *a: True) -> float:
        """When the first ``name`` event matching ``pred`` arrived (it must have)."""
        for (seen_name, args), at in zip(self.seen, self.times, strict=True):
            if seen_name == name and pred(*args):
                return at
        raise AssertionError(f"no {name} event; saw {self.names()}")

    async def wait_for(
        self, name: str, pred: Callable[..., bool] = lambda *a: True, timeout: float = 15
    ) -> tuple[Any, ...]:
        """Args of the first ``name`` event (past or future) matching ``pred``."""
        try:
            async with asyncio.timeout(timeout):
                index = 0
                while True:
                    while index < len(self.seen):
                        seen_name, args = self.seen[index]
                        index += 1
                        if seen_name == name and pred(*args):
                            return args
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no matching {name} event within {timeout} s; saw {self.names()}"
            ) from None


async def join(
    server: RunningServer,
    identity: str,
    *,
    room: str = "room1",
    auto_subscribe: bool = True,
    token: str | None = None,
    **grant: Any,
) -> tuple[rtc.Room, Watcher]:
    """Connect ``identity`` (with ``token``, or one for ``room`` with ``grant``)."""
    r = rtc.Room()
    watcher = Watcher(r)
    await r.connect(
        server.url,
        token or server.token_for(identity, room, **grant),
        rtc.RoomOptions(auto_subscribe=auto_subscribe, connect_timeout=15),
    )
    return r, watcher


@contextlib.asynccontextmanager
async def connected(
    server: RunningServer, identity: str, **kw: Any
) -> AsyncIterator[tuple[rtc.Room, Watcher]]:
    r, w = await join(server, identity, **kw)
    try:
        yield r, w
    finally:
        await r.disconnect()


async def simulate_signal_reconnect(room: rtc.Room, watcher: Watcher, timeout: float = 20) -> None:
    """Drop the room's signal WebSocket with the SDK's own chaos hook
    (SIMULATE_SIGNAL_RECONNECT) and wait until the SDK says it is back; fails at once
    if the SDK gives up instead."""
    before = (watcher.count("reconnected"), watcher.count("disconnected"))
    await room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT)
    async with asyncio.timeout(timeout):
        while (watcher.count("reconnected"), watcher.count("disconnected")) == before:
            await asyncio.sleep(0.02)
    if watcher.count("disconnected") > before[1]:
        (reason,) = next(a for n, a in reversed(watcher.seen) if n == "disconnected")
        raise AssertionError(
            f"the SDK gave up reconnecting: disconnected, reason "
            f"{rtc.DisconnectReason.Name(reason)}; events {watcher.names()}"
        )


class ToneSource:
    """A microphone track playing a sine tone, fed in real time. ``amplitude`` (0..1
    of full scale; 0 is a silent microphone) may be changed while it plays; it is
    heard after at most ``queue_ms`` (the SDK's capture queue)."""

    def __init__(
        self, freq: float = TONE_HZ, *, amplitude: float = 0.5, queue_ms: int = 1000
    ) -> None:
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=queue_ms)
        self.track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        self.freq = freq
        self.amplitude = amplitude
        self._task: asyncio.Task[None] | None = None

    async def _feed(self) -> None:
        n = SAMPLE_RATE * FRAME_MS // 1000
        phase = 0
        while True:
            frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, n)
            t = (np.arange(n) + phase) / SAMPLE_RATE
            wave = self.amplitude * 32767 * np.sin(2 * math.pi * self.freq * t)
            samples = wave.astype(np.int16)
            np.frombuffer(frame.data, dtype=np.int16)[:] = samples
            phase += n
            await self.source.capture_frame(frame)

    async def publish(self, room: rtc.Room, **options: Any) -> rtc.LocalTrackPublication:
        """Publish as a microphone; ``options``: more TrackPublishOptions fields."""
        self._task = asyncio.create_task(self._feed())
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, **options)
        return await room.local_participant.publish_track(self.track, opts)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class CameraSource:
    """A camera track of moving colour bars, fed at ``fps``."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.source = rtc.VideoSource(width, height)
        self.track = rtc.LocalVideoTrack.create_video_track("camera", self.source)
        self._task: asyncio.Task[None] | None = None

    async def _feed(self) -> None:
        n = 0
        while True:
            data = np.zeros((self.height, self.width, 4), dtype=np.uint8)
            data[:, :, 0] = (np.arange(self.width) + n * 4) % 256
            data[:, :, 1] = 128
            data[:, :, 3] = 255
            frame = rtc.VideoFrame(
                self.width, self.height, rtc.VideoBufferType.RGBA, data.tobytes()
            )
            self.source.capture_frame(frame)
            n += 1
            await asyncio.sleep(1 / self.fps)

    async def publish(self, room: rtc.Room, *, simulcast: bool = True) -> rtc.LocalTrackPublication:
        self._task = asyncio.create_task(self._feed())
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=simulcast)
        return await room.local_participant.publish_track(self.track, opts)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def tone_ratio(samples: np.ndarray, freq: float = TONE_HZ) -> float:
    """Share of the signal's energy at ``freq`` (1.0 = a pure tone, ~0 = noise/silence)."""
    x = samples.astype(np.float64)
    total = float(np.sum(x * x))
    if total < 1e3:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    band = (freqs > freq - 20) & (freqs < freq + 20)
    return float(spectrum[band].sum() / spectrum.sum())


LOUD_RMS = 2000.0
"""A frame louder than this carries the tone (sent at RMS ~11600); the receiver's packet
loss concealment fades below it within a few frames of the packets stopping."""


class AudioProbe:
    """Reads a remote audio track, keeps the last half second of samples, and notes when
    each loud frame arrived (to measure gaps in what a listener hears)."""

    def __init__(self, track: rtc.Track) -> None:
        self.track = track
        self.stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        self.frames = 0
        self.recent: list[np.ndarray] = []
        self.loud_at: list[float] = []
        """``time.monotonic()`` of every frame louder than :data:`LOUD_RMS`."""
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.stream:
            self.frames += 1
            samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            self.recent.append(samples)
            del self.recent[:-50]
            if math.sqrt(float(np.mean(samples.astype(np.float64) ** 2))) > LOUD_RMS:
                self.loud_at.append(time.monotonic())

    def longest_gap(self, start: float, end: float) -> float:
        """The longest stretch of ``[start, end]`` (monotonic times) without sound; a
        track that went quiet for good counts until ``end``."""
        marks = [start, *(t for t in self.loud_at if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(marks))

    async def sound_after(self, start: float, timeout: float = 15) -> float:
        """Seconds from ``start`` until the first loud frame after it."""
        async with asyncio.timeout(timeout):
            while not self.loud_at or self.loud_at[-1] <= start:
                await asyncio.sleep(0.01)
        return next(t for t in self.loud_at if t > start) - start

    def tone(self) -> float:
        if len(self.recent) < 20:
            return 0.0
        return tone_ratio(np.concatenate(self.recent[-20:]))

    async def wait_tone(self, present: bool, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while (self.tone() > 0.5) != present:
                await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.stream.aclose()


class VideoProbe:
    """Reads a remote video track, counting frames and recording their size."""

    def __init__(self, track: rtc.Track) -> None:
        self.stream = rtc.VideoStream(track)
        self.frames = 0
        self.size: tuple[int, int] = (0, 0)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.stream:
            self.frames += 1
            self.size = (event.frame.width, event.frame.height)

    async def wait_frames(self, count: int, timeout: float = 20) -> None:
        start = self.frames
        async with asyncio.timeout(timeout):
            while self.frames < start + count:
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.stream.aclose()


def newest_track(watcher: Watcher, identity: str) -> rtc.Track | None:
    """The track last subscribed from ``identity``, if any."""
    subscribed = [
        a for n, a in watcher.seen if n == "track_subscribed" and a[2].identity == identity
    ]
    return subscribed[-1][0] if subscribed else None


async def hearing(watcher: Watcher, identity: str) -> AudioProbe:
    """A probe on the newest audio track subscribed from ``identity``, once it plays."""
    await watcher.wait_for("track_subscribed", lambda t, pub, p: p.identity == identity)
    probe = AudioProbe(newest_track(watcher, identity))  # type: ignore[arg-type]
    await probe.wait_tone(present=True)
    return probe
