"""Signal protocol v0: what each SignalRequest from a participant does.

One function per request kind, looked up in :data:`HANDLERS`; room changes are pure
transitions applied by the manager, media requests go to the manager's media plane.
Kinds without a handler (simulate, ...) are accepted and ignored, as clients treat
them as best-effort.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from livekit.protocol import models, rtc

from ..rtc.lifecycle import ParticipantEvent
from ..rtc.room import Room
from ..runtime.manager import RoomManager
from ..runtime.sessions import ParticipantSession

log = logging.getLogger(__name__)

DisconnectReason = models.DisconnectReason

Handler = Callable[[RoomManager, Room, ParticipantSession, rtc.SignalRequest], None]


def handle(
    manager: RoomManager, room: Room, session: ParticipantSession, req: rtc.SignalRequest
) -> None:
    """Apply one SignalRequest from ``session``'s participant in ``room``."""
    kind = req.WhichOneof("message")
    if kind not in ("ping", "ping_req", "trickle"):
        log.debug("%s -> %s", session.sid, kind)
    handler = HANDLERS.get(kind or "")
    if handler is None:
        log.debug("%s: %s not handled", session.sid, kind)
        return
    handler(manager, room, session, req)


def _offer(manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest) -> None:
    manager.apply(room, room.transition(s.sid, ParticipantEvent.NEGOTIATED))
    manager.media.publisher_offer(s.sid, req.offer)


def _answer(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.transition(s.sid, ParticipantEvent.NEGOTIATED))
    manager.media.subscriber_answer(s.sid, req.answer)


def _trickle(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.media.trickle(s.sid, req.trickle)


def _add_track(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.add_track(s.sid, req.add_track))


def _mute(manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest) -> None:
    manager.apply(room, room.set_muted(s.sid, req.mute.sid, req.mute.muted, by_server=False))


def _subscribe(
    manager: RoomManager, room: Room, sid: str, sub: rtc.UpdateSubscription, *, quiet: bool
) -> None:
    fx = room.update_subscription(
        sid,
        track_sids=sub.track_sids,
        subscribe=sub.subscribe,
        participant_tracks=sub.participant_tracks,
        quiet=quiet,
    )
    manager.apply(room, fx)


def _subscription(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    _subscribe(manager, room, s.sid, req.subscription, quiet=False)


def _track_setting(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.track_settings(s.sid, req.track_setting))


def _update_audio_track(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.update_audio_track(s.sid, req.update_audio_track))


def _leave(manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest) -> None:
    s.leaving = True
    manager.remove(room, s.sid, DisconnectReason.CLIENT_INITIATED)


def _update_metadata(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.update_own_metadata(s.sid, req.update_metadata))
    manager.refresh_token(room, s.sid)


def _subscription_permission(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.apply(room, room.set_subscription_permission(s.sid, req.subscription_permission))


def _sync_state(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    """After a resume the client states what it believes: its subscriptions are
    applied again (anything it changed while away), the rest the server still has."""
    sync = req.sync_state
    if sync.HasField("subscription") and sync.subscription.track_sids:
        _subscribe(manager, room, s.sid, sync.subscription, quiet=True)


def _ping(manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest) -> None:
    manager.send(s.sid, rtc.SignalResponse(pong=int(time.time() * 1000)))


def _ping_req(
    manager: RoomManager, room: Room, s: ParticipantSession, req: rtc.SignalRequest
) -> None:
    manager.send(
        s.sid,
        rtc.SignalResponse(
            pong_resp=rtc.Pong(
                last_ping_timestamp=req.ping_req.timestamp, timestamp=int(time.time() * 1000)
            )
        ),
    )


HANDLERS: dict[str, Handler] = {
    "offer": _offer,
    "answer": _answer,
    "trickle": _trickle,
    "add_track": _add_track,
    "mute": _mute,
    "subscription": _subscription,
    "track_setting": _track_setting,
    "update_audio_track": _update_audio_track,
    "leave": _leave,
    "update_metadata": _update_metadata,
    "subscription_permission": _subscription_permission,
    "sync_state": _sync_state,
    "ping": _ping,
    "ping_req": _ping_req,
}
