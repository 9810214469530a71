"""A guard around hypercorn 0.18's Trio TCP server.

hypercorn sends the close's EOF (``TCPServer._close``) outside the lock that guards
other sends, so a client closing its WebSocket while we send can make ``send_all``
raise ``trio.BusyResourceError``. hypercorn does not catch it, and it escapes to the
listener's nursery: one client's close timing would stop the whole server. The
connection is closing anyway, so the guard treats the error as the close it is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger(__name__)

_Send = Callable[[Any, Any], Awaitable[None]]


def install() -> None:
    """Wrap ``TCPServer.protocol_send`` once (idempotent)."""
    original: _Send = TCPServer.protocol_send
    if getattr(original, "_pysfu_guarded", False):
        return

    @functools.wraps(original)
    async def protocol_send(self: Any, event: Any) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            log.debug("send raced with the connection's close; dropped")

    protocol_send._pysfu_guarded = True  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
