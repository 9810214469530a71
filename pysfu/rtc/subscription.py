"""Subscription of one participant to one track, as a small reconciling state machine.

Three inputs decide whether media should flow, each owned by someone else:

- ``desired``: the subscriber wants it (auto-subscribe, UpdateSubscription, server API);
- ``allowed``: the subscriber's own grant allows it (canSubscribe);
- ``permitted``: the publisher's subscription permissions allow this subscriber;
- ``available``: the publication is live (media arrived) and not being torn down.

``bound`` is what the media plane was last told. ``reconcile`` compares wanted with
bound and returns the one action that brings them together, so the caller performs
exactly the side effects needed and nothing twice.
"""

import enum

import attrs

from .effects import LayerChoice


class SubscriptionAction(enum.Enum):
    BIND = "bind"
    """Start forwarding the track to the subscriber (and tell the client)."""
    UNBIND = "unbind"
    """Stop forwarding the track to the subscriber (and tell the client)."""


@attrs.define
class Subscription:
    subscriber_sid: str
    track_sid: str
    desired: bool = False
    allowed: bool = True
    permitted: bool = True
    available: bool = False
    bound: bool = False
    """Invariant: bound implies the last reconcile saw desired, allowed and available."""
    layer: int = 2
    """Simulcast layer the subscriber asked for (0 LOW .. 2 HIGH, UpdateTrackSettings)."""
    disabled: bool = False
    """The subscriber disabled the track (UpdateTrackSettings): nothing is forwarded."""
    fps: int = 0
    """Frame rate the subscriber asked for (UpdateTrackSettings.fps); 0: any."""
    priority: int = 0
    """The subscriber's priority for the track (UpdateTrackSettings.priority): 1 the
    highest, 0 unset; bandwidth goes to higher ones first."""

    def settings(self) -> tuple[int, bool, int, int]:
        """What UpdateTrackSettings set: (layer, disabled, fps, priority)."""
        return (self.layer, self.disabled, self.fps, self.priority)

    def layer_choice(self) -> LayerChoice:
        """These settings, for the media plane."""
        return LayerChoice(
            self.subscriber_sid, self.track_sid, self.layer, self.disabled, self.fps, self.priority
        )

    @property
    def wanted(self) -> bool:
        return self.desired and self.allowed and self.permitted and self.available

    def reconcile(self) -> SubscriptionAction | None:
        if self.wanted and not self.bound:
            self.bound = True
            return SubscriptionAction.BIND
        if self.bound and not self.wanted:
            self.bound = False
            return SubscriptionAction.UNBIND
        return None


DEFAULT_SETTINGS = Subscription("", "").settings()
"""A fresh down track's settings (see ``Subscription.settings``): HIGH, enabled, any
frame rate, no priority."""
