"""Active speakers: who is speaking in a room, from the engine's audio levels.

The engine summarises each audio track's RFC 6464 levels every 400 ms
(``pysfu._core.AudioLevels``: observed and active milliseconds, loudest level);
this module turns those into smoothed per-track levels and the room's list of
speakers, as the reference server (livekit-server ``pkg/sfu/audio`` and
``Room.audioUpdateWorker``):

- a window of at least ``UPDATE_INTERVAL_MS`` of media is *active* when at least
  ``MIN_PERCENTILE`` % of it was at ``ACTIVE_LEVEL`` (-35 dBov) or louder; its level
  is the loudest active level, adjusted by how much of the window was active, in
  linear scale; levels are smoothed by an exponential moving average over
  ``SMOOTH_INTERVALS`` windows; an inactive window drops the level to 0;
- a track with no media for two intervals reads 0;
- a participant's level is its loudest speaking microphone track; speakers are
  sorted loudest first, levels quantised to 1/8 so small changes are not news;
- a change lists the speakers that are new or whose level changed, and those that
  stopped (``active=False``, level 0).

Pure: time is an input, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs
from livekit.protocol import models

ACTIVE_LEVEL = 35
"""Levels at or below this (-dBov, 0 loudest) are speech (the engine counts them)."""

MIN_PERCENTILE = 40
UPDATE_INTERVAL_MS = 400
SMOOTH_INTERVALS = 2
QUANTIZATION = 8

_SMOOTH_FACTOR = 2.0 / (SMOOTH_INTERVALS + 1)
_MIN_ACTIVE_MS = MIN_PERCENTILE * UPDATE_INTERVAL_MS / 100
_STALE_AFTER_S = 2 * UPDATE_INTERVAL_MS / 1000


def linear_level(level: float) -> float:
    """-dBov back to linear scale (0 dBov = 1.0)."""
    return float(10 ** (-level / 20))


ACTIVE_THRESHOLD = linear_level(ACTIVE_LEVEL)
"""Smoothed levels at or above this mean the track is speaking."""


@attrs.frozen
class LevelSummary:
    """One engine summary of a track: media time covered, of which at speech level,
    and the loudest speech level (127 if none)."""

    observed_ms: int
    active_ms: int
    loudest: int


@attrs.define
class LevelMeter:
    """The smoothed level of one audio track (the reference's ``AudioLevel``)."""

    smoothed: float = 0.0
    last_observed: float | None = None
    _observed_ms: int = 0
    _active_ms: int = 0
    _loudest: int = 127

    def observe(self, summary: LevelSummary, now: float) -> None:
        self.last_observed = now
        self._observed_ms += max(0, summary.observed_ms)
        if summary.active_ms > 0:
            self._active_ms += summary.active_ms
            self._loudest = min(self._loudest, max(0, summary.loudest))
        if self._observed_ms < UPDATE_INTERVAL_MS:
            return
        level = 0.0
        if self._active_ms >= _MIN_ACTIVE_MS:
            # A window active only part of the time reads quieter than its peak.
            weight = 20 * math.log10(self._active_ms / UPDATE_INTERVAL_MS)
            target = linear_level(self._loudest - weight)
            level = self.smoothed + (target - self.smoothed) * _SMOOTH_FACTOR
        self.smoothed = level
        self._observed_ms = self._active_ms = 0
        self._loudest = 127

    def level(self, now: float) -> tuple[float, bool]:
        """(smoothed level, speaking)."""
        if self.last_observed is None or now - self.last_observed >= _STALE_AFTER_S:
            self.smoothed = 0.0
        return self.smoothed, self.smoothed >= ACTIVE_THRESHOLD


@attrs.define
class Speakers:
    """The speakers of one room: a meter per audio track, the last announced set."""

    meters: dict[str, LevelMeter] = attrs.field(factory=dict)
    """By track sid."""
    announced: dict[str, float] = attrs.field(factory=dict)
    """Participant sid -> quantised level last announced as speaking."""

    def observe(self, track_sid: str, summary: LevelSummary, now: float) -> None:
        self.meters.setdefault(track_sid, LevelMeter()).observe(summary, now)

    def forget(self, track_sids: Iterable[str]) -> None:
        for sid in track_sids:
            self.meters.pop(sid, None)

    def current(
        self, microphones: Mapping[str, Iterable[str]], now: float
    ) -> list[models.SpeakerInfo]:
        """Who speaks now, loudest first. ``microphones``: participant sid -> its
        unmuted microphone track sids."""
        speakers: list[models.SpeakerInfo] = []
        for participant_sid, tracks in microphones.items():
            best: float | None = None
            for track_sid in tracks:
                meter = self.meters.get(track_sid)
                if meter is None:
                    continue
                level, active = meter.level(now)
                if active and (best is None or level > best):
                    best = level
            if best is not None:
                speakers.append(models.SpeakerInfo(sid=participant_sid, level=best, active=True))
        speakers.sort(key=lambda s: -s.level)
        for s in speakers:
            s.level = math.ceil(s.level * QUANTIZATION) / QUANTIZATION
        return speakers

    def changes(
        self, microphones: Mapping[str, Iterable[str]], now: float
    ) -> list[models.SpeakerInfo]:
        """The speakers that started or changed level since the last call, then
        those that stopped (inactive, level 0); empty when nothing changed."""
        current = self.current(microphones, now)
        changed = [s for s in current if self.announced.get(s.sid) != s.level]
        now_active = {s.sid: s.level for s in current}
        changed += [
            models.SpeakerInfo(sid=sid, level=0.0, active=False)
            for sid in self.announced
            if sid not in now_active
        ]
        self.announced = now_active
        return changed
