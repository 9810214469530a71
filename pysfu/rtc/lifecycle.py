"""Participant lifecycle as one transition table (no I/O, no Trio).

JOINING      socket open, JoinResponse sent
JOINED       the client negotiated (sent an offer or an answer)
ACTIVE       its media transport connected (ICE + DTLS)
DISCONNECTED left, removed or timed out; terminal

Events that do not change the state where they are harmless (a second offer while
JOINED) map to the same state, so callers need not know the state to report facts.
"""

import enum

from livekit.protocol import models

from ..errors import LocalProtocolError


class ParticipantState(enum.IntEnum):
    JOINING = models.ParticipantInfo.State.JOINING
    JOINED = models.ParticipantInfo.State.JOINED
    ACTIVE = models.ParticipantInfo.State.ACTIVE
    DISCONNECTED = models.ParticipantInfo.State.DISCONNECTED


class ParticipantEvent(enum.Enum):
    NEGOTIATED = "negotiated"
    TRANSPORT_CONNECTED = "transport_connected"
    LEFT = "left"


_S = ParticipantState
_E = ParticipantEvent

TRANSITIONS: dict[tuple[ParticipantState, ParticipantEvent], ParticipantState] = {
    (_S.JOINING, _E.NEGOTIATED): _S.JOINED,
    (_S.JOINED, _E.NEGOTIATED): _S.JOINED,
    (_S.ACTIVE, _E.NEGOTIATED): _S.ACTIVE,
    # The subscriber transport may connect before the client's first offer/answer is
    # processed by us; connecting implies negotiation happened.
    (_S.JOINING, _E.TRANSPORT_CONNECTED): _S.ACTIVE,
    (_S.JOINED, _E.TRANSPORT_CONNECTED): _S.ACTIVE,
    (_S.ACTIVE, _E.TRANSPORT_CONNECTED): _S.ACTIVE,
    (_S.JOINING, _E.LEFT): _S.DISCONNECTED,
    (_S.JOINED, _E.LEFT): _S.DISCONNECTED,
    (_S.ACTIVE, _E.LEFT): _S.DISCONNECTED,
}


_PROTO_STATES: dict[ParticipantState, models.ParticipantInfo.State] = {
    ParticipantState.JOINING: models.ParticipantInfo.JOINING,
    ParticipantState.JOINED: models.ParticipantInfo.JOINED,
    ParticipantState.ACTIVE: models.ParticipantInfo.ACTIVE,
    ParticipantState.DISCONNECTED: models.ParticipantInfo.DISCONNECTED,
}


def to_proto(state: ParticipantState) -> models.ParticipantInfo.State:
    return _PROTO_STATES[state]


def next_state(state: ParticipantState, event: ParticipantEvent) -> ParticipantState:
    """The state after ``event``; raises LocalProtocolError for an illegal event."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"participant cannot handle event {event.value} in state {state.name}"
        ) from None
