"""Dynacast and subscriber track settings: which simulcast qualities of a video
track anyone receives, so its publisher encodes only those.

A subscriber's ``UpdateTrackSettings`` chooses a quality (directly, or by the size
it renders the video at) or disables the track (adaptive stream hides it). A video
track's publisher is told (``SubscribedQualityUpdate``) every quality up to the
highest one an enabled subscriber wants; nobody enabled means every quality off,
as the reference (livekit-server's dynacast). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from livekit.protocol import models, rtc

VideoQuality = models.VideoQuality

QUALITIES = (VideoQuality.LOW, VideoQuality.MEDIUM, VideoQuality.HIGH)

LAYER_BY_QUALITY: dict[int, int] = {
    VideoQuality.LOW: 0,
    VideoQuality.MEDIUM: 1,
    VideoQuality.HIGH: 2,
}
"""The engine's layer index (0 q, 1 h, 2 f) of each protocol quality."""


def requested_layer(settings: rtc.UpdateTrackSettings) -> int:
    """The layer a subscriber's settings ask for: by the size it renders at when it
    says one (the reference's rough thresholds), else by the quality named (HIGH
    for OFF or anything unknown)."""
    if settings.width or settings.height:
        pixels = settings.height or settings.width
        if pixels <= 240:
            return 0
        if pixels <= 480:
            return 1
        return 2
    return LAYER_BY_QUALITY.get(settings.quality, 2)


def subscribed_layers(requests: Iterable[tuple[int, bool]]) -> tuple[bool, bool, bool]:
    """Which of the layers LOW, MEDIUM, HIGH are wanted, from each bound
    subscriber's (layer, disabled)."""
    highest = max((layer for layer, disabled in requests if not disabled), default=-1)
    return (highest >= 0, highest >= 1, highest >= 2)


def quality_update(
    track_sid: str, mime_type: str, layers: tuple[bool, bool, bool]
) -> rtc.SubscribedQualityUpdate:
    """The message telling a publisher which qualities of ``track_sid`` to send,
    per quality and for its codec (clients read either)."""
    qualities = [
        rtc.SubscribedQuality(quality=q, enabled=on)
        for q, on in zip(QUALITIES, layers, strict=True)
    ]
    codec = mime_type.rpartition("/")[2].lower()
    codecs = [rtc.SubscribedCodec(codec=codec, qualities=qualities)] if codec else []
    return rtc.SubscribedQualityUpdate(
        track_sid=track_sid, subscribed_qualities=qualities, subscribed_codecs=codecs
    )
