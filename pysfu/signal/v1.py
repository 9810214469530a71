"""``/rtc/v1`` specifics: what rides in the JoinRequest besides the join itself. After
the join a v1 connection speaks the same SignalRequests as v0 (``signal.v0``); what
differs is the one PeerConnection, which ``media.single_pc`` handles."""

from __future__ import annotations

from livekit.protocol import rtc

from ..runtime.manager import RoomManager
from ..runtime.sessions import ParticipantSession
from . import v0


def join_extras(
    manager: RoomManager, session: ParticipantSession, request: rtc.JoinRequest
) -> None:
    """Handle the JoinRequest's tracks to publish, publisher offer and (on a resume)
    subscription state as the v0 requests they stand for, in that order: the track
    announcements before the offer that carries them, as a v0 client sends them. The
    answer follows the JoinResponse (or ReconnectResponse) already queued, and the
    offer marks the participant negotiated (others see it JOINED at once)."""
    room = manager.room(session.room_name)
    if room is None:
        return
    requests = [rtc.SignalRequest(add_track=t) for t in request.add_track_requests]
    offer = request.publisher_offer
    if request.HasField("publisher_offer") and offer.type == "offer" and offer.sdp:
        requests.append(rtc.SignalRequest(offer=offer))
    if request.reconnect and request.HasField("sync_state"):
        requests.append(rtc.SignalRequest(sync_state=request.sync_state))
    for req in requests:
        v0.handle(manager, room, session, req)
