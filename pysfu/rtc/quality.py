"""Connection quality: how good each participant's links are, scored as the
reference server does (livekit-server ``pkg/sfu/connectionquality``).

The engine reports each peer's link once a second (``pysfu._core.LinkStats``:
fraction lost, jitter, round-trip time). Every ``UPDATE_INTERVAL_S`` a peer's
window of reports becomes a packet score::

    delay  = rtt / 2 + 2 * jitter                       (ms)
    score  = 100 - delay / 40 - loss% * weight          (delay > 160: (delay-120)/10)

with the reference's codec weights (video 10: 2 % loss is GOOD, 6 % POOR; Opus 8,
/1.5 with in-band FEC, which every SDK negotiates). Scores move towards a new one
fast when it drops (0.8) and slowly when it rises (0.4), never below 30; above 80
is EXCELLENT, above 40 GOOD, above 20 POOR. A participant's quality is its worst
peer's (the reference: its worst track, published or subscribed); the info sent
carries the MOS of that score.

A room sends ConnectionQualityUpdate when a participant is new to the scoring or
its quality changed: each participant gets its own quality and that of those it
subscribes to. Pure: time is an input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
from livekit.protocol import models, rtc

UPDATE_INTERVAL_S = 5.0

MAX_SCORE = 100.0
MIN_SCORE = 30.0
INCREASE_FACTOR = 0.4
DECREASE_FACTOR = 0.8

VIDEO_LOSS_WEIGHT = 10.0
AUDIO_LOSS_WEIGHT = 8.0 / 1.5
"""Opus with in-band FEC."""

Quality = models.ConnectionQuality


def score_to_quality(score: float) -> models.ConnectionQuality:
    if score > 80:
        return Quality.EXCELLENT
    if score > 40:
        return Quality.GOOD
    if score > 20:
        return Quality.POOR
    return Quality.LOST


def score_to_mos(score: float) -> float:
    """The reference's mapping of a 0..100 score to a 1..4.5 mean opinion score."""
    if score <= 0:
        return 1.0
    if score >= 100:
        return 4.5
    return 1.0 + 0.035 * score + 0.000007 * score * (score - 60.0) * (100.0 - score)


@attrs.frozen
class LinkSample:
    """One engine report of one peer (a second of its link)."""

    loss: float | None
    jitter_ms: float
    rtt_ms: float | None


def packet_score(samples: Iterable[LinkSample], loss_weight: float) -> float | None:
    """The score of a window of samples (None: no sample carried a loss figure)."""
    samples = list(samples)
    losses = [s.loss for s in samples if s.loss is not None]
    if not losses:
        return None
    loss_pct = 100.0 * sum(losses) / len(losses)
    rtt = max((s.rtt_ms for s in samples if s.rtt_ms is not None), default=0.0)
    jitter = max(s.jitter_ms for s in samples)
    delay = rtt / 2.0 + jitter * 2.0
    delay_effect = (delay - 120.0) / 10.0 if delay > 160.0 else delay / 40.0
    return max(0.0, MAX_SCORE - delay_effect - loss_pct * loss_weight)


@attrs.define
class LinkScorer:
    """The running score of one peer."""

    score: float = MAX_SCORE
    samples: list[LinkSample] = attrs.field(factory=list)

    def add(self, sample: LinkSample) -> None:
        self.samples.append(sample)

    def close_window(self, loss_weight: float) -> None:
        """Fold the window's samples into the score and start a new window."""
        window = packet_score(self.samples, loss_weight)
        self.samples.clear()
        if window is None:
            return
        factor = DECREASE_FACTOR if window < self.score else INCREASE_FACTOR
        self.score = max(MIN_SCORE, factor * window + (1.0 - factor) * self.score)


@attrs.define
class QualityScoring:
    """The scoring of one room: a scorer per peer, the last qualities sent."""

    scorers: dict[tuple[str, bool], LinkScorer] = attrs.field(factory=dict)
    """By (participant sid, is its subscriber peer)."""
    sent: dict[str, models.ConnectionQuality] = attrs.field(factory=dict)
    due: float | None = None
    """When the next window closes (set by the first sample)."""

    def observe(self, participant_sid: str, subscriber: bool, sample: LinkSample) -> None:
        self.scorers.setdefault((participant_sid, subscriber), LinkScorer()).add(sample)

    def forget(self, participant_sid: str) -> None:
        for key in [k for k in self.scorers if k[0] == participant_sid]:
            del self.scorers[key]
        self.sent.pop(participant_sid, None)

    def window_due(self, now: float) -> bool:
        """Whether :meth:`tick` at ``now`` closes a window (or starts the first)."""
        return self.due is None or now >= self.due

    def tick(
        self,
        now: float,
        active: Iterable[str],
        loss_weights: Mapping[str, float],
    ) -> dict[str, rtc.ConnectionQualityInfo] | None:
        """At the end of a window (else None): every active participant's quality
        if any is new or changed, else an empty dict. ``loss_weights``: per
        participant, the loss weight of its media (video or audio)."""
        if self.due is None:
            self.due = now + UPDATE_INTERVAL_S
            return None
        if now < self.due:
            return None
        self.due = now + UPDATE_INTERVAL_S
        for (sid, _), scorer in self.scorers.items():
            scorer.close_window(loss_weights.get(sid, VIDEO_LOSS_WEIGHT))
        infos: dict[str, rtc.ConnectionQualityInfo] = {}
        for sid in active:
            score = min(
                (s.score for (psid, _), s in self.scorers.items() if psid == sid),
                default=MAX_SCORE,
            )
            infos[sid] = rtc.ConnectionQualityInfo(
                participant_sid=sid, quality=score_to_quality(score), score=score_to_mos(score)
            )
        changed = any(self.sent.get(sid) != info.quality for sid, info in infos.items())
        self.sent = {sid: info.quality for sid, info in infos.items()}
        return infos if changed else {}
