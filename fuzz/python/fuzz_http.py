"""Fuzz the HTTP/WebSocket front door: ASGI requests with fuzzed path, query string,
headers and body through ``pysfu.api.http.App`` (token from the query or the
``Authorization`` header, join flags, ``/rtc/validate``, Twirp routing), and the v1
routes: ``/rtc/v1`` and ``/rtc/v1/validate`` with any ``join_request`` (base64, gzip,
garbage; its decoding has its own target, ``fuzz_join_request``).

The literal ``TOKEN`` in the input is replaced by a valid join token and ``JOINREQ`` by
a valid gzipped ``join_request``, so inputs reach the accepted-WebSocket paths; frames
after the handshake come from the body.
Findings: an exception out of the app, a 5xx, a v1 refusal other than 400/401/403/404
or without ``Access-Control-Allow-Origin: *``, a socket whose first message is not
``join`` (or ``leave`` for a reconnect), an ERROR log, or a session left behind.
Run: ``python fuzz/python/fuzz_http.py fuzz/corpus/http``.
"""

from __future__ import annotations

import sys
from typing import Any

from _common import capture_errors, instrumented, run, run_trio

with instrumented("pysfu"):
    import trio
    import trio.testing
    from livekit.protocol import rtc

    from pysfu.api.http import App
    from pysfu.auth import VideoGrant, mint_token
    from pysfu.runtime.manager import RoomManager
    from pysfu.signal.join_request import encode_join_request

ERRORS = capture_errors()

KEY, SECRET = "key", "k" * 32
TOKEN = mint_token(
    KEY, SECRET, identity="ann", grant=VideoGrant(room_join=True, room="r0"), ttl_s=30 * 86400
).encode()
MAX_FRAMES = 8
JOINREQ = encode_join_request(
    rtc.JoinRequest(connection_settings=rtc.ConnectionSettings(auto_subscribe=True))
).encode()


def _parse(data: bytes) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    kind, rest = (data[0], data[1:]) if data else (0, b"")
    parts = rest.replace(b"TOKEN", TOKEN).replace(b"JOINREQ", JOINREQ).split(b"\x00", 3)
    parts += [b""] * (4 - len(parts))
    path, query, raw_headers, body = parts
    headers = []
    for line in raw_headers.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    return kind, path, query, headers, body


async def _drive(app: App, data: bytes) -> None:
    kind, path, query, headers, body = _parse(data)
    path_text = "/" + path.decode("utf-8", "replace").lstrip("/")
    scope: dict[str, Any] = {
        "path": path_text,
        "query_string": query,
        "headers": headers,
        "extensions": {"websocket.http.response": {}} if not kind & 4 else {},
    }
    sent: list[dict[str, Any]] = []
    if kind & 3 == 0:
        scope["type"] = "websocket"
        frames = [body[i : i + 64] for i in range(0, min(len(body), 64 * MAX_FRAMES), 64)]
        inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]
        inbox += [{"type": "websocket.receive", "bytes": f} for f in frames]
    else:
        scope["type"] = "http"
        scope["method"] = ["GET", "GET", "POST", "OPTIONS"][kind & 3]
        inbox = [{"type": "http.request", "body": body, "more_body": False}]
    to_app, from_client = trio.open_memory_channel[dict[str, Any]](len(inbox) + 1)
    for message in inbox:
        to_app.send_nowait(message)

    async def receive() -> dict[str, Any]:
        return await from_client.receive()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, receive, send)
        await trio.testing.wait_all_tasks_blocked()
        # The client goes away once the server has had its say.
        to_app.send_nowait(
            {"type": "websocket.disconnect", "code": 1000}
            if scope["type"] == "websocket"
            else {"type": "http.disconnect"}
        )
    ERRORS.check()
    assert sent, "no response at all"
    first = sent[0]
    # OPTIONS is a CORS preflight (204 on any path).
    v1 = (
        path_text.rstrip("/") in ("/rtc/v1", "/rtc/v1/validate")
        and scope.get("method") != "OPTIONS"
    )
    if first["type"] in ("http.response.start", "websocket.http.response.start"):
        status = first["status"]
        assert status < 500, f"{status} for {path_text}"
        if v1:
            assert status in (200, 400, 401, 403, 404), f"v1 route answered {status}"
            assert (b"access-control-allow-origin", b"*") in first["headers"]
        if scope["type"] == "websocket":
            assert status in (400, 401, 403, 404), status
    elif first["type"] == "websocket.close":
        assert scope["type"] == "websocket" and not scope["extensions"]
    else:
        assert first["type"] == "websocket.accept", first
        frames_out = [m["bytes"] for m in sent if m["type"] == "websocket.send"]
        assert frames_out, "accepted but said nothing"
        msg = rtc.SignalResponse()
        msg.ParseFromString(frames_out[0])
        assert msg.WhichOneof("message") in ("join", "leave"), msg.WhichOneof("message")


async def _main(data: bytes) -> None:
    manager = RoomManager()
    app = App(manager, {KEY: SECRET})
    async with trio.open_nursery() as nursery:
        await nursery.start(_serve, manager)
        await _drive(app, data)
        await trio.testing.wait_all_tasks_blocked()
        assert not any(room.participants for room in manager.rooms), "participant left behind"
        nursery.cancel_scope.cancel()
    ERRORS.check()


async def _serve(manager: RoomManager, *, task_status: trio.TaskStatus[None]) -> None:
    await manager.run(task_status=task_status)


def test_one_input(data: bytes) -> None:
    run_trio(_main, data)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
