"""Carrying a client's requests to the node that hosts its room.

A WebSocket cannot be redirected, so a signal connection accepted on a node that
does not host the room is *relayed*: this node opens its own WebSocket to the
owner's ``/rtc`` (same path and query, the client's token included, plus a signed
:mod:`~pysfu.runtime.cluster.grant` header), and only once the owner accepts does it
accept the client; then frames are piped both ways unchanged. The owner does all
the signaling (JoinResponse, offers, ICE candidates naming its own media address),
so the client cannot tell. If the owner refuses, the client gets the owner's status
and body; if the owner is unreachable, 503 (the SDKs retry). When either side closes,
the other is closed with the same code, so a client sees the owner's going away
as a dropped signal connection and resumes or rejoins.

Server-API calls and ``/rtc/validate`` are forwarded as HTTP requests, the same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ...errors import PysfuError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"""How long opening the WebSocket to the owner may take."""

FORWARD_TIMEOUT_S = 10.0
"""How long a forwarded HTTP request may take."""


class RelayRejected(PysfuError):
    """The owner refused the request: pass its answer on."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"owner answered {status}")
        self.status = status
        self.body = body


class RelayUnavailable(PysfuError):
    """The owner could not be reached."""


class ClientEnd(Protocol):
    """The client's WebSocket, on the accepting node."""

    async def receive(self) -> bytes | str | None:
        """The next frame; None once the client closed."""
        ...

    async def send(self, data: bytes | str) -> None: ...

    async def close(self, code: int) -> None: ...


def ws_url(http_url: str, path_and_query: str) -> str:
    return "ws" + http_url.removeprefix("http") + path_and_query


@asynccontextmanager
async def connect_owner(
    url: str, headers: Sequence[tuple[bytes, bytes]], *, max_message_size: int
) -> AsyncIterator[WebSocketConnection]:
    """The WebSocket to the owner; raises RelayRejected or RelayUnavailable when it
    cannot be opened (errors of the body pass through unchanged)."""
    opened = False
    try:
        async with open_websocket_url(
            url,
            extra_headers=list(headers),
            max_message_size=max_message_size,
            connect_timeout=CONNECT_TIMEOUT_S,
            disconnect_timeout=1,
        ) as ws:
            opened = True
            yield ws
    except ConnectionRejected as exc:
        if opened:
            raise
        raise RelayRejected(exc.status_code, exc.body or b"") from None
    except (HandshakeError, OSError) as exc:
        if opened:
            raise
        raise RelayUnavailable(f"cannot reach {_no_query(url)}: {exc!r}") from None


def _no_query(url: str) -> str:
    """``url`` without its query: a browser's query carries its access token."""
    return url.split("?", 1)[0]


async def pipe(owner: WebSocketConnection, client: ClientEnd) -> None:
    """Copy frames both ways until one side closes; close the other with its code."""
    async with trio.open_nursery() as nursery:

        async def upstream() -> None:
            while True:
                frame = await client.receive()
                if frame is None:
                    break
                try:
                    await owner.send_message(frame)
                except ConnectionClosed:
                    break
            nursery.cancel_scope.cancel()

        async def downstream() -> None:
            code = 1000
            while True:
                try:
                    frame = await owner.get_message()
                except ConnectionClosed as exc:
                    # 1006 (no close frame: the owner died) is not sendable; 1001
                    # tells the client the server went away, and it reconnects.
                    reason = exc.reason.code if exc.reason is not None else 1006
                    code = reason if reason not in (1005, 1006) else 1001
                    break
                try:
                    await client.send(frame)
                except trio.ClosedResourceError:
                    break
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await client.close(code)
            nursery.cancel_scope.cancel()

        nursery.start_soon(upstream)
        nursery.start_soon(downstream)


async def forward(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
) -> tuple[int, str, bytes]:
    """Forward one HTTP request; returns (status, content type, body)."""
    try:
        reply = await client.request(
            method, url, headers=list(headers), content=body, timeout=FORWARD_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise RelayUnavailable(f"cannot reach {_no_query(url)}: {exc!r}") from None
    return reply.status_code, reply.headers.get("content-type", "text/plain"), reply.content
