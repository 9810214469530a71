"""The pure connection-quality scoring (pysfu.rtc.quality) against the reference's
numbers."""

from __future__ import annotations

from livekit.protocol import models

from pysfu.rtc.quality import (
    AUDIO_LOSS_WEIGHT,
    VIDEO_LOSS_WEIGHT,
    LinkSample,
    LinkScorer,
    QualityScoring,
    packet_score,
    score_to_mos,
    score_to_quality,
)

Q = models.ConnectionQuality


def _window(loss: float, rtt: float = 1.0, jitter: float = 1.0) -> list[LinkSample]:
    return [LinkSample(loss=loss, jitter_ms=jitter, rtt_ms=rtt)] * 5


def test_video_loss_thresholds_as_the_reference() -> None:
    # 2 % loss: GOOD (score 80); 6 %: POOR (40); delays on loopback cost nothing.
    assert score_to_quality(packet_score(_window(0.0), VIDEO_LOSS_WEIGHT) or 0) == Q.EXCELLENT
    assert packet_score(_window(0.021, 0, 0), VIDEO_LOSS_WEIGHT) == 100 - 21
    assert score_to_quality(100 - 21) == Q.GOOD
    assert score_to_quality(packet_score(_window(0.061, 0, 0), VIDEO_LOSS_WEIGHT) or 0) == Q.POOR
    # Opus with FEC absorbs more: 10 % is 53 points.
    assert abs((packet_score(_window(0.1, 0, 0), AUDIO_LOSS_WEIGHT) or 0) - (100 - 80 / 1.5)) < 1e-9
    # Large delays cost more than linearly.
    assert packet_score(_window(0.0, rtt=400, jitter=0), VIDEO_LOSS_WEIGHT) == 100 - 8


def test_scores_drop_fast_rise_slowly_and_windows_without_reports_keep_them() -> None:
    s = LinkScorer()
    for sample in _window(0.1):
        s.add(sample)
    s.close_window(VIDEO_LOSS_WEIGHT)
    assert s.score == 30  # 0.8 * 0 + 0.2 * 100 = 20, floored at 30: POOR at once
    s.close_window(VIDEO_LOSS_WEIGHT)
    assert s.score == 30
    for sample in _window(0.0, 0, 0):
        s.add(sample)
    s.close_window(VIDEO_LOSS_WEIGHT)
    assert s.score == 0.4 * 100 + 0.6 * 30
    s.add(LinkSample(loss=None, jitter_ms=0, rtt_ms=None))
    s.close_window(VIDEO_LOSS_WEIGHT)
    assert s.score == 58


def test_room_scoring_reports_new_and_changed_participants_only() -> None:
    q = QualityScoring()
    assert q.tick(0.0, ["PA_a"], {}) is None  # the first window starts
    assert q.tick(4.0, ["PA_a"], {}) is None
    first = q.tick(5.0, ["PA_a"], {})
    assert first is not None and first["PA_a"].quality == Q.EXCELLENT
    assert first["PA_a"].score == score_to_mos(100) == 4.5
    assert q.tick(10.0, ["PA_a"], {}) == {}
    for sample in _window(0.1):
        q.observe("PA_a", False, sample)
    changed = q.tick(15.0, ["PA_a", "PA_b"], {})
    assert changed is not None
    assert (changed["PA_a"].quality, changed["PA_b"].quality) == (Q.POOR, Q.EXCELLENT)
    q.forget("PA_a")
    assert q.scorers == {}
