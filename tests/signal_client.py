"""A minimal signaling client built on livekit-protocol messages over trio-websocket,
for tests that look at the wire itself (no media)."""

from __future__ import annotations

from urllib.parse import urlencode

import trio
from livekit.protocol import rtc
from trio_websocket import WebSocketConnection, open_websocket_url

DEFAULT_TIMEOUT_S = 5.0


class SignalClient:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.backlog: list[rtc.SignalResponse] = []

    async def send(self, req: rtc.SignalRequest) -> None:
        await self.ws.send_message(req.SerializeToString())

    async def recv(self, timeout: float = DEFAULT_TIMEOUT_S) -> rtc.SignalResponse:
        if self.backlog:
            return self.backlog.pop(0)
        with trio.fail_after(timeout):
            data = await self.ws.get_message()
        assert isinstance(data, bytes), "signal frames must be binary"
        msg = rtc.SignalResponse()
        msg.ParseFromString(data)
        return msg

    async def expect(self, kind: str, timeout: float = DEFAULT_TIMEOUT_S) -> rtc.SignalResponse:
        """The next message of ``kind``, keeping the others in order for later."""
        skipped: list[rtc.SignalResponse] = []
        try:
            with trio.fail_after(timeout):
                while True:
                    msg = await self.recv(timeout)
                    if msg.WhichOneof("message") == kind:
                        return msg
                    skipped.append(msg)
        finally:
            self.backlog[:0] = skipped

    async def expect_update(
        self, identity: str, predicate=lambda p: True, timeout: float = DEFAULT_TIMEOUT_S
    ):
        """The next ParticipantInfo for ``identity`` satisfying ``predicate``."""
        with trio.fail_after(timeout):
            while True:
                msg = await self.expect("update", timeout)
                for p in msg.update.participants:
                    if p.identity == identity and predicate(p):
                        return p

    async def drain(self, quiet_s: float = 0.2) -> list[rtc.SignalResponse]:
        out = list(self.backlog)
        self.backlog.clear()
        while True:
            with trio.move_on_after(quiet_s):
                out.append(await self.recv())
                continue
            return out


def signal_url(base: str, token: str, **query: str) -> str:
    params = {"access_token": token, "protocol": "16", "sdk": "python", **query}
    return f"{base}/rtc?{urlencode(params)}"


def connect(base: str, token: str, **query: str):
    """``async with connect(url, token) as ws: client = SignalClient(ws)``"""
    return open_websocket_url(signal_url(base, token, **query))
