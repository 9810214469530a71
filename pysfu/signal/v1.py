"""``/rtc/v1`` specifics: the publisher offer that rides in the JoinRequest. After
that, a v1 connection speaks the same SignalRequests as v0 (``signal.v0``); what
differs is the one PeerConnection, which ``media.single_pc`` handles."""

from __future__ import annotations

from livekit.protocol import rtc

from ..rtc.lifecycle import ParticipantEvent
from ..runtime.manager import RoomManager
from ..runtime.sessions import ParticipantSession


def join_offer(
    manager: RoomManager, session: ParticipantSession, offer: rtc.SessionDescription
) -> None:
    """Handle the join's publisher offer as a v0 offer request: the participant has
    negotiated (others see it JOINED at once, as after a v0 offer), and the answer
    follows the JoinResponse (or ReconnectResponse) already queued."""
    room = manager.room(session.room_name)
    if room is None:
        return
    manager.apply(room, room.transition(session.sid, ParticipantEvent.NEGOTIATED))
    manager.media.publisher_offer(session.sid, offer)
