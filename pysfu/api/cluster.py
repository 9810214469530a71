"""The HTTP port in a cluster: requests for a room hosted on another node go there.

- ``/rtc`` (join or resume): the room's node is found (or chosen, for a room not yet
  anywhere) and, when it is another node, the WebSocket is relayed to it
  (pysfu.runtime.cluster.relay);
- ``/rtc/validate``: forwarded to the room's node, so it answers what the WebSocket
  would;
- Twirp RoomService: calls naming a room go to its node; ``ListRooms`` asks every live
  node and merges; ``CreateRoom`` places the room first.

A request carrying a valid relay grant addressed to this node came from another node
that already routed it: it is served here. Webhooks need nothing: every room event
happens on the room's node alone, which sends it once.

Any Twirp request whose path is in :data:`ROOM_FIELD` is forwarded to the node of the
room it names, AgentDispatchService's included (the ``agents`` branch serves it
through the same ``TwirpService.handle`` this wraps). Agent workers connect to one
node; a dispatch for a room elsewhere reaches workers only if some connect to that
node too (run workers against every node, or behind the same balancer as clients).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs

import httpx
import trio
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch
from livekit.protocol import room as room_api

from ..auth import AuthError, verify_token
from ..runtime.cluster import grant, relay
from ..runtime.cluster.cluster_pb2 import NodeInfo
from ..runtime.cluster.node import ClusterNode, NoNodeAvailable
from ..signal.connection import MAX_FRAME_BYTES
from .asgi import AsgiWebSocket, Receive, Scope, Send

log = logging.getLogger(__name__)

Deny = Callable[[Scope, Send, int, str], Awaitable[None]]
TwirpHandler = Callable[[str, Mapping[str, str], bytes], Awaitable[tuple[int, str, bytes]]]

ROOMSERVICE = "/twirp/livekit.RoomService/"
AGENT_DISPATCH = "/twirp/livekit.AgentDispatchService/"

ROOM_FIELD: dict[str, tuple[type[Message], str]] = {
    ROOMSERVICE + "CreateRoom": (room_api.CreateRoomRequest, "name"),
    ROOMSERVICE + "DeleteRoom": (room_api.DeleteRoomRequest, "room"),
    ROOMSERVICE + "ListParticipants": (room_api.ListParticipantsRequest, "room"),
    ROOMSERVICE + "GetParticipant": (room_api.RoomParticipantIdentity, "room"),
    ROOMSERVICE + "RemoveParticipant": (room_api.RoomParticipantIdentity, "room"),
    ROOMSERVICE + "MutePublishedTrack": (room_api.MuteRoomTrackRequest, "room"),
    ROOMSERVICE + "UpdateParticipant": (room_api.UpdateParticipantRequest, "room"),
    ROOMSERVICE + "UpdateSubscriptions": (room_api.UpdateSubscriptionsRequest, "room"),
    ROOMSERVICE + "SendData": (room_api.SendDataRequest, "room"),
    ROOMSERVICE + "UpdateRoomMetadata": (room_api.UpdateRoomMetadataRequest, "room"),
    # Served by the agents branch's AgentDispatchService through the same Twirp entry:
    # a dispatch belongs to its room's node (whose agent workers it is offered to).
    AGENT_DISPATCH + "CreateDispatch": (agent_dispatch.CreateAgentDispatchRequest, "room"),
    AGENT_DISPATCH + "DeleteDispatch": (agent_dispatch.DeleteAgentDispatchRequest, "room"),
    AGENT_DISPATCH + "ListDispatch": (agent_dispatch.ListAgentDispatchRequest, "room"),
}
"""Twirp paths whose request names a room, and the field that names it."""

_FORWARDED_HEADERS = ("authorization", "content-type")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _unavailable(msg: str) -> tuple[int, str, bytes]:
    body = json.dumps({"code": "unavailable", "msg": msg}).encode()
    return 503, "application/json", body


class ClusterRoutes:
    """Routing of one node's HTTP requests to the rooms' nodes."""

    def __init__(self, node: ClusterNode, keys: Mapping[str, str]) -> None:
        self.node = node
        self.keys = keys
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # Made on first use, inside the server's Trio loop (httpx binds to it).
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    def relayed(self, headers: Mapping[str, str]) -> bool:
        """Whether another node of the cluster already routed this request here."""
        value = headers.get(grant.HEADER)
        return value is not None and grant.verify(self.keys, value, self.node.id) is not None

    def _grant_for(self, owner: NodeInfo) -> str:
        return grant.sign(self.keys, self.node.id, owner.id)

    def _room_of_token(self, scope: Scope) -> str | None:
        """The room a join's token names, when the token verifies (else None: the
        local path answers with the precise error)."""
        raw = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        token = query.get("access_token")
        if not token:
            auth = _headers(scope).get("authorization", "")
            token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token:
            return None
        try:
            claims = verify_token(token, self.keys)
        except AuthError:
            return None
        return claims.video.room or None

    # ---- /rtc ------------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send, deny: Deny) -> bool:
        """Relay the (not yet accepted) signal WebSocket when its room is elsewhere;
        False when it is to be served here."""
        if self.relayed(_headers(scope)):
            return False
        room = self._room_of_token(scope)
        if room is None:
            return False
        try:
            owner = await self.node.owner(room, create=True)
        except NoNodeAvailable as exc:
            await deny(scope, send, 503, str(exc))
            return True
        if owner is None:
            return False
        query = scope.get("query_string", b"").decode("latin-1")
        # /rtc or /rtc/v1: the owner speaks the version the client chose.
        path = scope["path"].rstrip("/") or "/rtc"
        url = relay.ws_url(owner.http_url, path + (f"?{query}" if query else ""))
        headers = [(grant.HEADER.encode(), self._grant_for(owner).encode())]
        auth = _headers(scope).get("authorization")
        if auth:
            headers.append((b"authorization", auth.encode("latin-1")))
        try:
            async with relay.connect_owner(
                url, headers, max_message_size=MAX_FRAME_BYTES
            ) as upstream:
                await send({"type": "websocket.accept"})
                log.info("relaying a signal connection for room %s to %s", room, owner.id)
                await relay.pipe(upstream, AsgiWebSocket(receive, send))
        except relay.RelayRejected as exc:
            await deny(scope, send, exc.status, exc.body.decode("utf-8", "replace"))
        except relay.RelayUnavailable as exc:
            log.warning("room %s: %s", room, exc)
            await deny(scope, send, 503, "the room's node cannot be reached; retry")
        return True

    # ---- /rtc/validate -----------------------------------------------------------------------

    async def validate(self, scope: Scope) -> tuple[int, bytes] | None:
        """The owner's answer to a validate request, or None to answer here."""
        if self.relayed(_headers(scope)):
            return None
        room = self._room_of_token(scope)
        if room is None:
            return None
        try:
            owner = await self.node.owner(room, create=False)
        except NoNodeAvailable as exc:
            return 503, str(exc).encode()
        if owner is None:
            return None
        query = scope.get("query_string", b"").decode("latin-1")
        headers = [(grant.HEADER, self._grant_for(owner))]
        auth = _headers(scope).get("authorization")
        if auth:
            headers.append(("authorization", auth))
        try:
            status, _, body = await relay.forward(
                self.http, "GET", f"{owner.http_url}{scope['path']}?{query}", headers
            )
        except relay.RelayUnavailable:
            return 503, b"the room's node cannot be reached; retry"
        return status, body

    # ---- Twirp -------------------------------------------------------------------------------

    async def twirp(
        self, path: str, headers: Mapping[str, str], body: bytes, local: TwirpHandler
    ) -> tuple[int, str, bytes]:
        if self.relayed(headers):
            return await local(path, headers, body)
        if path == ROOMSERVICE + "ListRooms":
            return await self._list_rooms(path, headers, body, local)
        room = _room_of_request(path, headers, body)
        if room is None:
            return await local(path, headers, body)
        try:
            owner = await self.node.owner(room, create=path.endswith("/CreateRoom"))
        except NoNodeAvailable as exc:
            return _unavailable(str(exc))
        if owner is None:
            return await local(path, headers, body)
        try:
            return await self._forward(owner, path, headers, body)
        except relay.RelayUnavailable as exc:
            log.warning("%s: %s", path, exc)
            return _unavailable("the room's node cannot be reached; retry")

    async def _forward(
        self, owner: NodeInfo, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        sent = [(k, headers[k]) for k in _FORWARDED_HEADERS if k in headers]
        sent.append((grant.HEADER, self._grant_for(owner)))
        return await relay.forward(self.http, "POST", owner.http_url + path, sent, body)

    async def _list_rooms(
        self, path: str, headers: Mapping[str, str], body: bytes, local: TwirpHandler
    ) -> tuple[int, str, bytes]:
        """Every live node's rooms: this node answers for itself (and for a bad
        token or request, its error is the answer); the others' answers are merged."""
        status, content_type, payload = await local(path, headers, body)
        if status != 200:
            return status, content_type, payload
        as_json = content_type.startswith("application/json")
        merged = _decode_list(payload, as_json)
        others = [n for n in self.node.live_nodes() if n.id != self.node.id]
        replies: dict[str, tuple[int, str, bytes]] = {}

        async def ask(node: NodeInfo) -> None:
            try:
                replies[node.id] = await self._forward(node, path, headers, body)
            except relay.RelayUnavailable as exc:
                log.warning("ListRooms: node %s did not answer: %s", node.id, exc)

        async with trio.open_nursery() as nursery:
            for node in others:
                nursery.start_soon(ask, node)
        seen = {r.name for r in merged.rooms}
        for node_id, (st, _, data) in sorted(replies.items()):
            if st != 200:
                log.warning("ListRooms: node %s answered %d", node_id, st)
                continue
            for room in _decode_list(data, as_json).rooms:
                if room.name not in seen:
                    seen.add(room.name)
                    merged.rooms.append(room)
        if as_json:
            text = json_format.MessageToJson(
                merged,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                indent=None,
            )
            return 200, content_type, text.encode()
        return 200, content_type, merged.SerializeToString()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _decode_list(payload: bytes, as_json: bool) -> room_api.ListRoomsResponse:
    reply = room_api.ListRoomsResponse()
    try:
        if as_json:
            json_format.Parse(payload, reply, ignore_unknown_fields=True)
        else:
            reply.ParseFromString(payload)
    except (DecodeError, json_format.ParseError, ValueError):
        log.warning("unreadable ListRooms answer ignored")
    return reply


def _room_of_request(path: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The room a Twirp request names, when its type is known and it decodes (else
    None: the local service answers, with the precise error if any)."""
    known = ROOM_FIELD.get(path)
    if known is None:
        return None
    request_type, field = known
    request = request_type()
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/json":
            json_format.Parse(body or b"{}", request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError):
        return None
    room = getattr(request, field, "")
    return room if isinstance(room, str) and room else None
