"""What a room transition asks the outside world to do, as plain values.

Pure transitions (:mod:`pysfu.rtc.room`) return an :class:`Effects`; the runtime
(:class:`pysfu.runtime.manager.RoomManager`) carries them out in order. Every media
action is a value here (bindings, mutes, data, unpublished tracks) so that nothing
outside the manager reaches into the media plane on a room's behalf.
"""

from __future__ import annotations

import attrs
from livekit.protocol import models, rtc, webhook

DisconnectReason = models.DisconnectReason


@attrs.frozen
class Mute:
    """A publication's forwarding stops (``muted``) or resumes in the media plane."""

    track_sid: str
    muted: bool


@attrs.frozen
class Binding:
    """A subscription the media plane must start (``bind``) or stop forwarding."""

    subscriber_sid: str
    publisher_sid: str
    track_sid: str
    bind: bool


@attrs.frozen
class LayerChoice:
    """What the media plane forwards of a bound video track to one subscriber: the
    simulcast layer (0 LOW .. 2 HIGH) at up to ``fps`` frames a second (0: all it
    has), or nothing while ``disabled``; ``priority`` (1 the highest, 0 unset) orders
    the subscriber's tracks when its bandwidth does not fit them all."""

    subscriber_sid: str
    track_sid: str
    layer: int
    disabled: bool
    fps: int = 0
    priority: int = 0

    def settings(self) -> tuple[int, bool, int, int]:
        """(layer, disabled, fps, priority), as ``Subscription.settings``."""
        return (self.layer, self.disabled, self.fps, self.priority)


@attrs.frozen
class DataDelivery:
    """A DataPacket (already rewritten for the receiver side) for one participant."""

    participant_sid: str
    packet: models.DataPacket
    reliable: bool


@attrs.define
class Effects:
    """What a transition asks the outside world to do, in order."""

    messages: list[tuple[str, rtc.SignalResponse]] = attrs.field(factory=list)
    """Signal messages per participant sid, in the order they must be sent."""
    closes: list[tuple[str, DisconnectReason]] = attrs.field(factory=list)
    """Sessions to end after their queued messages, with a DisconnectReason."""
    bindings: list[Binding] = attrs.field(factory=list)
    layers: list[LayerChoice] = attrs.field(factory=list)
    """Applied after ``bindings`` (a choice may follow its track's binding)."""
    data: list[DataDelivery] = attrs.field(factory=list)
    unpublished: list[str] = attrs.field(factory=list)
    """Track sids whose media the media plane must stop accepting."""
    mutes: list[Mute] = attrs.field(factory=list)
    """Publications whose forwarding must stop (muted) or start again."""
    events: list[webhook.WebhookEvent] = attrs.field(factory=list)
    room_closed: bool = False

    def send(self, sid: str, msg: rtc.SignalResponse) -> None:
        self.messages.append((sid, msg))

    def extend(self, other: Effects) -> None:
        self.messages.extend(other.messages)
        self.closes.extend(other.closes)
        self.bindings.extend(other.bindings)
        self.layers.extend(other.layers)
        self.data.extend(other.data)
        self.unpublished.extend(other.unpublished)
        self.mutes.extend(other.mutes)
        self.events.extend(other.events)
        self.room_closed = self.room_closed or other.room_closed
