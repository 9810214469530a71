"""Negotiation of the server-offered subscriber PeerConnection, as a pure state machine.

Only one offer may be outstanding: changes that arrive while the client is answering
are folded into one follow-up offer once the answer comes. (Two overlapping offers
would put the client's PeerConnection in have-remote-offer twice, which it rejects.)

STABLE    --changed-->  OFFERING  (make an offer now)
OFFERING  --changed-->  OFFERING  (remember: offer again after the answer)
OFFERING  --answered--> STABLE, or OFFERING again if changes were remembered
any       --restart-->  OFFERING  (a resume: a new offer with new ICE credentials)
"""

import enum

import attrs

from ..errors import RemoteProtocolError


class NegotiationState(enum.Enum):
    STABLE = "stable"
    OFFERING = "offering"


@attrs.define
class Negotiator:
    state: NegotiationState = NegotiationState.STABLE
    pending: bool = False
    """A change arrived while OFFERING; invariant: only true while OFFERING."""
    offer_id: int = 0
    """Id of the latest offer; the client echoes it in its answer."""

    def changed(self) -> int | None:
        """Subscriptions changed. Returns the id of an offer to send now, if any."""
        if self.state is NegotiationState.OFFERING:
            self.pending = True
            return None
        self.state = NegotiationState.OFFERING
        self.offer_id += 1
        return self.offer_id

    def restart(self) -> int:
        """The client's signal came back (a resume): whatever offer was outstanding is
        void (it may never have arrived, or its answer was lost), so a new offer, with
        new ICE credentials, goes out now. Returns its id."""
        self.state = NegotiationState.OFFERING
        self.pending = False
        self.offer_id += 1
        return self.offer_id

    def answered(self, answer_id: int = 0) -> int | None:
        """The client answered. Returns the id of a follow-up offer to send now, if any.
        An answer with no offer outstanding is the client's error."""
        if self.state is not NegotiationState.OFFERING:
            raise RemoteProtocolError("answer received with no offer outstanding")
        if answer_id and answer_id != self.offer_id:
            # An answer to an older offer; the newest is still outstanding.
            return None
        if self.pending:
            self.pending = False
            self.offer_id += 1
            return self.offer_id
        self.state = NegotiationState.STABLE
        return None
