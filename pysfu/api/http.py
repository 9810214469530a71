"""The one HTTP port: an ASGI app routing signaling, validation, Twirp and health.

Routes (as the reference server; clients depend on exact paths):

- ``GET /``                       health, 200 "OK"
- ``WS  /rtc``                    signaling v0 (two PeerConnections)
- ``WS  /rtc/v1``                 single-PC signaling: 404 until implemented, so
                                  clients fall back to ``/rtc``
- ``GET /rtc/validate``           why a failed WebSocket failed (browsers cannot see
                                  the upgrade's status)
- ``GET /rtc/v1/validate``        404 while v1 is not implemented
- ``POST /twirp/livekit.RoomService/<Method>``   server API
- ``WS  /agent``                  agent workers (livekit-agents), see api/agent_ws.py
- ``POST /twirp/livekit.AgentDispatchService/<Method>``   agent dispatch API
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from livekit.protocol import models, rtc

from ..auth import AuthError, Claims, bearer_from_header, verify_token
from ..runtime.agents import AgentRuntime
from ..runtime.manager import JoinParams, JoinRefused, ResumeRefused, RoomManager
from ..signal import connection, v1
from ..signal.connection import MAX_FRAME_BYTES
from ..signal.join_request import JoinRequestError, decode_join_request
from .agent_dispatch import SERVICE as AGENT_DISPATCH_SERVICE
from .agent_dispatch import AgentDispatchService
from .agent_ws import PATH as AGENT_PATH
from .agent_ws import WorkerSocketRejected, authorize_worker
from .asgi import AsgiWebSocket, Receive, Scope, Send
from .twirp import TwirpService

if TYPE_CHECKING:
    from .cluster import ClusterRoutes

log = logging.getLogger(__name__)


MAX_HTTP_BODY_BYTES = 4 << 20
"""Largest Twirp request body read; SendData payloads are far smaller."""

_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-headers", b"authorization, content-type"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
]


class SignalRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _v1_params(query: Mapping[str, str]) -> tuple[JoinParams, rtc.JoinRequest]:
    """/rtc/v1: everything comes in the ``join_request`` parameter."""
    try:
        request = decode_join_request(query.get("join_request", ""))
    except JoinRequestError as exc:
        raise SignalRejected(400, str(exc)) from None
    params = JoinParams(
        # As the reference: the v1 request says what it wants; absent means false.
        auto_subscribe=request.connection_settings.auto_subscribe,
        protocol=request.client_info.protocol,
        reconnect=request.reconnect,
        sid=request.participant_sid,
        reconnect_reason=int(request.reconnect_reason),
        single_pc=True,
    )
    return params, request


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.lower() not in ("0", "false", "no")


def _protocol(value: str | None) -> int:
    """The client's protocol version; anything but a short ASCII number counts as 0
    ("²".isdigit() is true but int() refuses it; 5000 digits exceed int()'s limit)."""
    if not value or not (value.isascii() and value.isdigit()) or len(value) > 9:
        return 0
    return int(value)


class App:
    """ASGI application serving every HTTP and WebSocket route of pysfu."""

    def __init__(
        self,
        manager: RoomManager,
        keys: Mapping[str, str],
        *,
        extra_routes: Mapping[str, Callable[[Scope, Receive, Send], Awaitable[None]]] | None = None,
        agents: AgentRuntime | None = None,
        cluster: ClusterRoutes | None = None,
    ) -> None:
        self.manager = manager
        self.keys = keys
        self.twirp = TwirpService(manager, keys)
        self.extra_routes = dict(extra_routes or {})
        self.agents = agents
        self.media_loopback_only = False
        """The media engine advertises only loopback addresses (set by the server)."""
        self._warned_loopback = False
        if agents is not None:
            service = AgentDispatchService(agents)
            self.twirp.add_service(AGENT_DISPATCH_SERVICE, service.methods())
        self.cluster = cluster
        """With Redis: requests for rooms on other nodes go there (pysfu.api.cluster)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- authentication shared by /rtc and /rtc/validate ------------------------------------

    def _authorize_join(self, scope: Scope) -> tuple[Claims, dict[str, str]]:
        query = _query(scope)
        token = query.get("access_token") or bearer_from_header(
            _headers(scope).get("authorization")
        )
        if not token:
            raise SignalRejected(401, "no access token: pass access_token or Authorization")
        try:
            claims = verify_token(token, self.keys)
        except AuthError as exc:
            raise SignalRejected(401, str(exc)) from None
        if not claims.video.room_join:
            raise SignalRejected(401, "token has no roomJoin grant")
        if not claims.video.room:
            raise SignalRejected(401, "token names no room")
        if not claims.identity:
            raise SignalRejected(401, "token has no identity (sub)")
        try:
            self.manager.check_join(claims)
        except JoinRefused as exc:
            raise SignalRejected(exc.status, exc.message) from None
        return claims, query

    # ---- WebSocket ------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        path = scope["path"].rstrip("/") or "/"
        if path == AGENT_PATH and self.agents is not None:
            await self._agent_socket(scope, receive, send)
            return
        if path not in ("/rtc", "/rtc/v1"):
            await self._deny(scope, send, 404, "not found")
            return
        if self.cluster is not None and await self.cluster.websocket(
            scope, receive, send, self._deny
        ):
            return  # relayed to the room's node
        try:
            claims, query = self._authorize_join(scope)
            join_request = None
            if path == "/rtc/v1":
                params, join_request = _v1_params(query)
            else:
                params = JoinParams(
                    auto_subscribe=_flag(query.get("auto_subscribe"), True),
                    protocol=_protocol(query.get("protocol")),
                    reconnect=_flag(query.get("reconnect"), False),
                    sid=query.get("sid", ""),
                    reconnect_reason=_protocol(query.get("reconnect_reason")),
                )
        except SignalRejected as exc:
            await self._deny(scope, send, exc.status, exc.message)
            return
        self._check_reachable(scope)
        if params.reconnect:
            await self._resume(scope, receive, send, claims, params, join_request)
            return
        try:
            session = self.manager.join(claims, params)
        except JoinRefused as exc:
            await self._deny(scope, send, exc.status, exc.message)
            return
        if join_request is not None:
            v1.join_extras(self.manager, session, join_request)
        await send({"type": "websocket.accept"})
        await connection.serve(self.manager, session, AsgiWebSocket(receive, send))

    def _check_reachable(self, scope: Scope) -> None:
        """A client from another machine while media is advertised on loopback only
        will never connect its PeerConnection: say why, once, where operators look."""
        client = scope.get("client")
        if not self.media_loopback_only or self._warned_loopback or not client:
            return
        try:
            remote = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return
        if not remote.is_loopback:
            self._warned_loopback = True
            log.error(
                "client %s joined from another machine, but media is advertised only on "
                "loopback: its media cannot connect; set rtc.node_ip (or bind to an "
                "address clients can reach)",
                remote,
            )

    async def _resume(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        claims: Claims,
        params: JoinParams,
        join_request: rtc.JoinRequest | None = None,
    ) -> None:
        """A client's signal came back (``reconnect=1&sid=...``): continue its session
        if the token's holder owns it, else make it rejoin in full."""
        await send({"type": "websocket.accept"})
        transport = AsgiWebSocket(receive, send)
        try:
            session, first = self.manager.resume(
                claims, params.sid, ice_restart=_ice_restart_asked(params)
            )
        except ResumeRefused as exc:
            log.info("resume refused: %s", exc)
            leave = rtc.SignalResponse(
                leave=rtc.LeaveRequest(
                    can_reconnect=True,
                    reason=models.DisconnectReason.STATE_MISMATCH,
                    action=rtc.LeaveRequest.Action.RECONNECT,
                )
            )
            await transport.send(leave.SerializeToString())
            await transport.close()
            return
        if join_request is not None:
            v1.join_extras(self.manager, session, join_request)
        await connection.serve(self.manager, session, transport, first=first)

    async def _agent_socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An agent worker (livekit-agents) connecting; see pysfu/api/agent_ws.py."""
        assert self.agents is not None
        try:
            claims = authorize_worker(_headers(scope), _query(scope), self.keys)
        except WorkerSocketRejected as exc:
            await self._deny(scope, send, exc.status, exc.message)
            return
        await send({"type": "websocket.accept"})
        await self.agents.serve_worker(AsgiWebSocket(receive, send), claims)

    async def _deny(self, scope: Scope, send: Send, status: int, message: str) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_CORS],
                }
            )
            await send({"type": "websocket.http.response.body", "body": message.encode()})
        else:
            await send({"type": "websocket.close", "code": 1008})

    # ---- plain HTTP -------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        method = scope["method"]
        if method == "OPTIONS":
            await respond(send, 204, b"")
            return
        if path in self.extra_routes:
            await self.extra_routes[path](scope, receive, send)
            return
        if path == "/" and method in ("GET", "HEAD"):
            await respond(send, 200, b"OK")
        elif path.rstrip("/") == "/rtc/validate" and method == "GET":
            owner_answer = await self.cluster.validate(scope) if self.cluster else None
            if owner_answer is not None:
                await respond(send, *owner_answer)
                return
            try:
                self._authorize_join(scope)
            except SignalRejected as exc:
                await respond(send, exc.status, exc.message.encode())
                return
            await respond(send, 200, b"success")
        elif path.rstrip("/") == "/rtc/v1/validate" and method == "GET":
            try:
                self._authorize_join(scope)
                _v1_params(_query(scope))
            except SignalRejected as exc:
                await respond(send, exc.status, exc.message.encode())
                return
            await respond(send, 200, b"success")
        elif path.startswith("/twirp/") and method == "POST":
            body = await read_body(receive, MAX_HTTP_BODY_BYTES)
            if body is None:
                await respond(
                    send,
                    413,
                    b'{"code":"invalid_argument","msg":"body too large"}',
                    content_type=b"application/json",
                )
                return
            if self.cluster is not None:
                status, content_type, payload = await self.cluster.twirp(
                    path, _headers(scope), body, self.twirp.handle
                )
            else:
                status, content_type, payload = await self.twirp.handle(path, _headers(scope), body)
            await respond(send, status, payload, content_type=content_type.encode())
        else:
            await respond(send, 404, b"not found")


def _ice_restart_asked(params: JoinParams) -> bool:
    """Whether the client resumes because its media failed (then the subscriber side
    needs new ICE credentials too), rather than only its signal."""
    reasons = models.ReconnectReason
    return params.reconnect_reason in (
        reasons.RR_PUBLISHER_FAILED,
        reasons.RR_SUBSCRIBER_FAILED,
        reasons.RR_SWITCH_CANDIDATE,
    )


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *_CORS],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["MAX_FRAME_BYTES", "App"]
