"""The server API: LiveKit's Twirp RoomService over HTTP POST.

Bodies are protobuf (``application/protobuf``, what livekit-api sends) or JSON
(``application/json``, proto field names as Twirp emits them); the response uses the
request's encoding. Errors are Twirp JSON ``{"code", "msg"}`` with the matching status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models
from livekit.protocol import room as room_api

from ..auth import AuthError, Claims, bearer_from_header, verify_token
from ..errors import PysfuError
from ..rtc.room import METADATA_TOO_LARGE, Room
from ..runtime.manager import ParticipantNotFound, RoomManager, RoomNotFound

log = logging.getLogger(__name__)

PREFIX = "/twirp/livekit.RoomService/"

_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "failed_precondition": 412,
    "internal": 500,
    "unimplemented": 501,
}


class TwirpError(PysfuError):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def response(self) -> tuple[int, str, bytes]:
        body = json.dumps({"code": self.code, "msg": self.msg}).encode()
        return _STATUS.get(self.code, 500), "application/json", body


@attrs.frozen
class _Method:
    request: type[Message]
    handler: Callable[[Any, Claims], Message]


class TwirpService:
    """RoomService methods, each checking its grant before touching any room."""

    def __init__(self, manager: RoomManager, keys: Mapping[str, str]) -> None:
        self.manager = manager
        self.keys = keys
        self.methods: dict[str, _Method] = {
            "CreateRoom": _Method(room_api.CreateRoomRequest, self.create_room),
            "ListRooms": _Method(room_api.ListRoomsRequest, self.list_rooms),
            "DeleteRoom": _Method(room_api.DeleteRoomRequest, self.delete_room),
            "ListParticipants": _Method(room_api.ListParticipantsRequest, self.list_participants),
            "GetParticipant": _Method(room_api.RoomParticipantIdentity, self.get_participant),
            "RemoveParticipant": _Method(room_api.RoomParticipantIdentity, self.remove_participant),
            "MutePublishedTrack": _Method(room_api.MuteRoomTrackRequest, self.mute_track),
            "UpdateParticipant": _Method(
                room_api.UpdateParticipantRequest, self.update_participant
            ),
            "UpdateSubscriptions": _Method(
                room_api.UpdateSubscriptionsRequest, self.update_subscriptions
            ),
            "SendData": _Method(room_api.SendDataRequest, self.send_data),
            "UpdateRoomMetadata": _Method(
                room_api.UpdateRoomMetadataRequest, self.update_room_metadata
            ),
        }
        self.routes: dict[str, _Method] = {PREFIX + n: m for n, m in self.methods.items()}

    def add_service(
        self,
        service: str,
        methods: Mapping[str, tuple[type[Message], Callable[[Any, Claims], Message]]],
    ) -> None:
        """Serve another Twirp service (``livekit.AgentDispatchService``) with the same
        decoding, authentication and errors; handlers raise :class:`TwirpError`."""
        for name, (request, handler) in methods.items():
            self.routes[f"/twirp/{service}/{name}"] = _Method(request, handler)

    async def handle(
        self, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """Serve one Twirp request; returns (status, content type, body)."""
        try:
            return self._handle(path, headers, body)
        except TwirpError as exc:
            return exc.response()
        except Exception:
            log.exception("internal error in %s", path)
            return TwirpError("internal", "internal server error").response()

    def _handle(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        method = self.routes.get(path)
        if method is None:
            raise TwirpError("bad_route", f"no such method: {path}")
        token = bearer_from_header(headers.get("authorization"))
        if not token:
            raise TwirpError("unauthenticated", "missing Authorization: Bearer token")
        try:
            claims = verify_token(token, self.keys)
        except AuthError as exc:
            raise TwirpError("unauthenticated", str(exc)) from None
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = content_type == "application/json"
        if not as_json and content_type not in ("application/protobuf", "application/x-protobuf"):
            raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")
        request = method.request()
        try:
            if as_json:
                json_format.Parse(body or b"{}", request, ignore_unknown_fields=True)
            else:
                request.ParseFromString(body)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            raise TwirpError("malformed", f"cannot decode request: {exc}") from None
        try:
            reply = method.handler(request, claims)
        except (RoomNotFound, ParticipantNotFound) as exc:
            raise TwirpError("not_found", str(exc)) from None
        if as_json:
            # As Twirp's default marshaler: proto field names, unset fields included.
            payload = json_format.MessageToJson(
                reply,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                indent=None,
            )
            return 200, "application/json", payload.encode()
        return 200, "application/protobuf", reply.SerializeToString()

    # ---- grants -----------------------------------------------------------------------------

    @staticmethod
    def _require(ok: bool, what: str) -> None:
        if not ok:
            # The reference server answers a missing grant with `unauthenticated` (401),
            # not `permission_denied`; SDK users see that code, so we match it.
            raise TwirpError("unauthenticated", f"permissions denied: requires {what}")

    def _admin(self, claims: Claims, room: str) -> None:
        if not room:
            raise TwirpError("invalid_argument", "room is required")
        self._require(claims.video.room_admin and claims.video.room == room, "roomAdmin")

    # ---- methods ----------------------------------------------------------------------------

    def create_room(self, req: room_api.CreateRoomRequest, claims: Claims) -> Message:
        self._require(claims.video.room_create, "roomCreate")
        if not req.name:
            raise TwirpError("invalid_argument", "room name is required")
        room = self.manager.create_room(
            req.name,
            empty_timeout_s=req.empty_timeout or None,
            departure_timeout_s=req.departure_timeout or None,
            max_participants=req.max_participants,
            metadata=req.metadata,
            agents=list(req.agents) or None,
        )
        return room.info()

    def list_rooms(self, req: room_api.ListRoomsRequest, claims: Claims) -> Message:
        self._require(claims.video.room_list, "roomList")
        names = set(req.names)
        rooms = [r.info() for r in self.manager.rooms if not names or r.name in names]
        return room_api.ListRoomsResponse(rooms=rooms)

    def delete_room(self, req: room_api.DeleteRoomRequest, claims: Claims) -> Message:
        self._require(claims.video.room_create, "roomCreate")
        self.manager.delete_room(req.room)
        return room_api.DeleteRoomResponse()

    def list_participants(self, req: room_api.ListParticipantsRequest, claims: Claims) -> Message:
        self._admin(claims, req.room)
        room = self.manager.require_room(req.room)
        return room_api.ListParticipantsResponse(
            participants=[p.info() for p in room.participants.values()]
        )

    def _target(self, room_name: str, identity: str, claims: Claims) -> tuple[Room, str]:
        self._admin(claims, room_name)
        if not identity:
            raise TwirpError("invalid_argument", "identity is required")
        return self.manager.participant(room_name, identity)

    def get_participant(self, req: room_api.RoomParticipantIdentity, claims: Claims) -> Message:
        room, sid = self._target(req.room, req.identity, claims)
        return room.participants[sid].info()

    def remove_participant(self, req: room_api.RoomParticipantIdentity, claims: Claims) -> Message:
        room, sid = self._target(req.room, req.identity, claims)
        self.manager.remove(room, sid, models.DisconnectReason.PARTICIPANT_REMOVED)
        return room_api.RemoveParticipantResponse()

    def mute_track(self, req: room_api.MuteRoomTrackRequest, claims: Claims) -> Message:
        room, sid = self._target(req.room, req.identity, claims)
        pub = room.participants[sid].publications.get(req.track_sid)
        if pub is None:
            raise TwirpError("not_found", f"track {req.track_sid!r} not found")
        if not req.muted and pub.info.muted and not self.manager.policy.enable_remote_unmute:
            # As the reference: an admin token must not re-open someone's microphone.
            raise TwirpError(
                "failed_precondition", "remote unmute not enabled (room.enable_remote_unmute)"
            )
        self.manager.apply(room, room.set_muted(sid, req.track_sid, req.muted, by_server=True))
        return room_api.MuteRoomTrackResponse(track=pub.info)

    def update_participant(self, req: room_api.UpdateParticipantRequest, claims: Claims) -> Message:
        room, sid = self._target(req.room, req.identity, claims)
        if not room.metadata_fits(sid, req.name, req.metadata, req.attributes):
            raise TwirpError("invalid_argument", METADATA_TOO_LARGE)
        self.manager.apply(
            room,
            room.update_participant(
                sid,
                name=req.name or None,
                metadata=req.metadata or None,
                attributes=dict(req.attributes) or None,
                permission=req.permission if req.HasField("permission") else None,
            ),
        )
        # Its next reconnect must present what the API set, not what its token said.
        self.manager.refresh_token(room, sid)
        return room.participants[sid].info()

    def update_subscriptions(
        self, req: room_api.UpdateSubscriptionsRequest, claims: Claims
    ) -> Message:
        room, sid = self._target(req.room, req.identity, claims)
        self.manager.apply(
            room,
            room.update_subscription(
                sid,
                track_sids=req.track_sids,
                subscribe=req.subscribe,
                participant_tracks=req.participant_tracks,
            ),
        )
        return room_api.UpdateSubscriptionsResponse()

    def send_data(self, req: room_api.SendDataRequest, claims: Claims) -> Message:
        self._admin(claims, req.room)
        room = self.manager.require_room(req.room)
        destinations = list(req.destination_identities)
        for sid in req.destination_sids:
            p = room.participants.get(sid)
            if p is not None:
                destinations.append(p.identity)
        if (req.destination_sids or req.destination_identities) and not destinations:
            return room_api.SendDataResponse()
        packet = models.DataPacket(
            kind=req.kind,
            destination_identities=destinations,
            user=models.UserPacket(
                payload=req.data,
                topic=req.topic if req.HasField("topic") else None,
                destination_identities=destinations,
                nonce=req.nonce,
            ),
        )
        reliable = req.kind == models.DataPacket.Kind.RELIABLE
        self.manager.apply(room, room.route_data(None, packet, reliable=reliable))
        return room_api.SendDataResponse()

    def update_room_metadata(
        self, req: room_api.UpdateRoomMetadataRequest, claims: Claims
    ) -> Message:
        self._admin(claims, req.room)
        room = self.manager.require_room(req.room)
        self.manager.apply(room, room.set_metadata(req.metadata))
        return room.info()
