from hypothesis import given
from hypothesis import strategies as st

from pysfu.errors import RemoteProtocolError
from pysfu.media.negotiation import NegotiationState, Negotiator


def test_changes_while_offering_fold_into_one_follow_up() -> None:
    n = Negotiator()
    first = n.changed()
    assert first == 1
    assert n.changed() is None and n.changed() is None
    assert n.answered(first) == 2
    assert n.answered(2) is None
    assert n.state is NegotiationState.STABLE


def test_stray_answer_is_the_clients_error() -> None:
    try:
        Negotiator().answered()
    except RemoteProtocolError:
        return
    raise AssertionError("expected RemoteProtocolError")


@given(st.lists(st.sampled_from(["change", "answer"]), max_size=60))
def test_at_most_one_offer_outstanding(steps: list[str]) -> None:
    n = Negotiator()
    outstanding: int | None = None
    changed_since_offer = False
    for step in steps:
        if step == "change":
            offer = n.changed()
            if offer is not None:
                assert outstanding is None
                outstanding, changed_since_offer = offer, False
            else:
                changed_since_offer = True
        elif outstanding is not None:
            offer = n.answered(outstanding)
            # A follow-up offer comes exactly when something changed meanwhile.
            assert (offer is not None) == changed_since_offer
            outstanding, changed_since_offer = offer, False
    assert (outstanding is None) == (n.state is NegotiationState.STABLE)
