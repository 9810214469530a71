"""The participant lifecycle table, event by event (as h11's test_state)."""

import pytest

from pysfu.errors import LocalProtocolError
from pysfu.rtc.lifecycle import TRANSITIONS, ParticipantEvent, ParticipantState, next_state
from pysfu.rtc.subscription import Subscription, SubscriptionAction

S, E = ParticipantState, ParticipantEvent


def test_happy_path() -> None:
    state = S.JOINING
    state = next_state(state, E.NEGOTIATED)
    assert state is S.JOINED
    state = next_state(state, E.TRANSPORT_CONNECTED)
    assert state is S.ACTIVE
    assert next_state(state, E.LEFT) is S.DISCONNECTED


def test_disconnected_is_terminal() -> None:
    for event in E:
        with pytest.raises(LocalProtocolError, match="DISCONNECTED"):
            next_state(S.DISCONNECTED, event)


def test_every_live_state_can_leave() -> None:
    for state in (S.JOINING, S.JOINED, S.ACTIVE):
        assert TRANSITIONS[(state, E.LEFT)] is S.DISCONNECTED


def test_subscription_reconciles_once() -> None:
    sub = Subscription(subscriber_sid="PA_a", track_sid="TR_t", desired=True)
    assert sub.reconcile() is None  # not available yet
    sub.available = True
    assert sub.reconcile() is SubscriptionAction.BIND
    assert sub.reconcile() is None
    sub.allowed = False
    assert sub.reconcile() is SubscriptionAction.UNBIND
    assert sub.reconcile() is None
