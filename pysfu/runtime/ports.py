"""The runtime's ports: what rooms and sessions need from the media plane and from
webhook delivery, as Protocols, each with a null implementation.

The manager always holds a real object (never ``None``): a server without an engine
(tests of the control plane, fuzzers) uses :class:`NullMediaPlane`, and one without
webhook URLs uses :class:`NullWebhookSink`.
"""

from __future__ import annotations

from typing import Protocol

from livekit.protocol import rtc
from livekit.protocol.webhook import WebhookEvent

from ..rtc.effects import Binding, DataDelivery, LayerChoice, Mute
from ..rtc.room import Room


class MediaPlane(Protocol):
    """What signaling and rooms need from the media side (:mod:`pysfu.media`).
    Calls never block; replies (answers, offers, candidates) go out through the
    manager's ``send``."""

    @property
    def connected(self) -> bool:
        """Whether a real media engine backs this plane (join failure is only
        checked when one does)."""
        ...

    def participant_joined(self, room: Room, sid: str, *, single_pc: bool = False) -> None: ...

    def offer_initial(self, sid: str) -> None: ...

    def resumed(self, sid: str, *, ice_restart: bool) -> None:
        """The participant's signal came back: renegotiate what changed while it was
        away (and restart ICE on the subscriber side when asked)."""
        ...

    def publisher_offer(self, sid: str, offer: rtc.SessionDescription) -> None: ...

    def subscriber_answer(self, sid: str, answer: rtc.SessionDescription) -> None: ...

    def trickle(self, sid: str, trickle: rtc.TrickleRequest) -> None: ...

    def apply_layers(self, layers: list[LayerChoice]) -> None:
        """What each subscriber receives of bound tracks: layer, or nothing."""
        ...

    def apply_bindings(self, bindings: list[Binding]) -> None: ...

    def apply_mutes(self, mutes: list[Mute]) -> None: ...

    def deliver_data(self, deliveries: list[DataDelivery]) -> None: ...

    def tracks_unpublished(self, track_sids: list[str]) -> None: ...

    def participant_removed(self, sid: str) -> None: ...


class NullMediaPlane:
    """A media plane that carries no media: rooms and signaling work, nothing flows."""

    connected = False

    def participant_joined(self, room: Room, sid: str, *, single_pc: bool = False) -> None:
        pass

    def offer_initial(self, sid: str) -> None:
        pass

    def resumed(self, sid: str, *, ice_restart: bool) -> None:
        pass

    def publisher_offer(self, sid: str, offer: rtc.SessionDescription) -> None:
        pass

    def subscriber_answer(self, sid: str, answer: rtc.SessionDescription) -> None:
        pass

    def trickle(self, sid: str, trickle: rtc.TrickleRequest) -> None:
        pass

    def apply_layers(self, layers: list[LayerChoice]) -> None:
        pass

    def apply_bindings(self, bindings: list[Binding]) -> None:
        pass

    def apply_mutes(self, mutes: list[Mute]) -> None:
        pass

    def deliver_data(self, deliveries: list[DataDelivery]) -> None:
        pass

    def tracks_unpublished(self, track_sids: list[str]) -> None:
        pass

    def participant_removed(self, sid: str) -> None:
        pass


class WebhookSink(Protocol):
    """Where room code hands webhook events."""

    def send_nowait(self, event: WebhookEvent) -> None:
        """Queue ``event`` for delivery; must neither block nor raise."""


class NullWebhookSink:
    """The sink used when no webhook URL is configured: events are discarded."""

    def send_nowait(self, event: WebhookEvent) -> None:
        """Discard ``event``."""
