"""ASGI plumbing shared by the HTTP surfaces: the callable types, and an accepted
WebSocket as a transport (signaling, agent workers, the cluster relay)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class AsgiWebSocket:
    """An accepted ASGI WebSocket: frames in and out, closed errors as trio's."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self) -> bytes | str | None:
        """The next frame, or None once the peer closed the connection."""
        while not self._closed:
            msg = await self._receive()
            if msg["type"] == "websocket.receive":
                data = msg.get("bytes")
                if data is not None:
                    return bytes(data)
                text: str = msg.get("text") or ""
                return text
            if msg["type"] == "websocket.disconnect":
                self._closed = True
        return None

    async def send(self, data: bytes | str) -> None:
        if self._closed:
            raise trio.ClosedResourceError("websocket closed")
        key = "bytes" if isinstance(data, bytes) else "text"
        try:
            await self._send({"type": "websocket.send", key: data})
        except Exception as exc:  # hypercorn raises its own types on a dead socket
            self._closed = True
            raise trio.ClosedResourceError("websocket closed") from exc

    async def close(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception:
            log.debug("closing an already closed websocket", exc_info=True)
