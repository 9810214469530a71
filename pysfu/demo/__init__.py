"""The demo page ``pysfu serve --dev`` serves at ``/demo/``.

``index.html`` and ``demo.js`` (``livekit-client`` and the page's code, bundled by
esbuild from the repository's ``demo/`` folder and committed) ship as package data, so
serving the page needs no npm. ``GET /demo/token?room=&identity=`` mints a join token
signed with the server's first API key; it exists only in dev mode, since anyone who can
reach it can join any room.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..auth import VideoGrant, mint_token

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

DEMO_PATH = "/demo/"
"""Where the page lives (``/`` stays the health check)."""

TOKEN_TTL_S = 6 * 3600.0
MAX_NAME_LEN = 128

_HERE = Path(__file__).parent
_FILES = {
    "index.html": b"text/html; charset=utf-8",
    "demo.js": b"text/javascript; charset=utf-8",
}


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"cache-control", b"no-cache"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _static(name: str) -> Handler:
    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed")
            return
        try:
            body = (_HERE / name).read_bytes()
        except OSError:
            await _respond(send, 404, f"{name} is missing: build it in demo/".encode())
            return
        await _respond(send, 200, body if scope["method"] == "GET" else b"", _FILES[name])

    return handler


async def _redirect(scope: Scope, receive: Receive, send: Send) -> None:
    await _respond(send, 308, b"", extra=[(b"location", DEMO_PATH.encode())])


def _token(api_key: str, secret: str) -> Handler:
    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await _respond(send, 405, b"method not allowed")
            return
        raw = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[-1] for k, v in parse_qs(raw).items()}
        room = query.get("room", "").strip()
        identity = query.get("identity", "").strip()
        if not room or not identity:
            await _respond(send, 400, b"room and identity are required")
            return
        if len(room) > MAX_NAME_LEN or len(identity) > MAX_NAME_LEN:
            await _respond(send, 400, b"room and identity are limited to 128 characters")
            return
        token = mint_token(
            api_key,
            secret,
            identity=identity,
            name=query.get("name", "")[:MAX_NAME_LEN],
            ttl_s=TOKEN_TTL_S,
            grant=VideoGrant(room_join=True, room=room),
        )
        body = json.dumps({"token": token, "room": room, "identity": identity}).encode()
        await _respond(send, 200, body, b"application/json")

    return handler


def demo_routes(keys: Mapping[str, str]) -> dict[str, Handler]:
    """Routes for ``App(extra_routes=...)``: the page, its script and the dev-token
    endpoint signing with the first of ``keys``. Mount them in dev mode only."""
    api_key = next(iter(keys))
    return {
        "/demo": _redirect,
        DEMO_PATH: _static("index.html"),
        DEMO_PATH + "index.html": _static("index.html"),
        DEMO_PATH + "demo.js": _static("demo.js"),
        DEMO_PATH + "token": _token(api_key, keys[api_key]),
    }


__all__ = ["DEMO_PATH", "demo_routes"]
