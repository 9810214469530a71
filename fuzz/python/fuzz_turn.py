"""Fuzz the embedded TURN server (pysfu.media.turn): its STUN/TURN parser, address
and integrity checks, and the request handling of a live server with a valid
allocation, fed datagrams from the fuzzer (half of them re-signed with the right key
so that they reach the authenticated methods).

Findings: any exception but ``TurnError``; a permission or channel for an address
the server does not allow; more allocations than the bound. Run:
``python fuzz/python/fuzz_turn.py fuzz/corpus/turn``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys

from _common import instrumented, run

with instrumented("pysfu"):
    from pysfu.media import turn

SECRET = "s" * 32
USERNAME, PASSWORD = turn.credentials(SECRET, "fuzzer", now=4_000_000_000)
KEY = hashlib.md5(f"{USERNAME}:pysfu:{PASSWORD}".encode()).digest()
CLIENT = ("127.0.0.1", 40000)
ALLOWED = frozenset({"127.0.0.1"})


class _Nursery:
    """Allocations start a relay task; the harness does not run it."""

    def start_soon(self, *args: object) -> None:
        pass


def _server() -> turn.TurnServer:
    server = turn.TurnServer([SECRET], "127.0.0.1", 0, "127.0.0.1", allowed_peers=ALLOWED)
    server._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server._sock.setblocking(False)
    return server


SERVER = _server()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 1:
        # Re-sign the fuzzer's message so that it passes authentication.
        try:
            msg = turn.parse(rest)
        except turn.TurnError:
            return
        attrs = [(t, v) for t, v in msg.attrs if t not in (turn.A_INTEGRITY, turn.A_FINGERPRINT)]
        attrs.insert(0, (turn.A_USERNAME, USERNAME.encode()))
        rest = turn.encode(turn.Message(msg.method, msg.cls, msg.txid, attrs), KEY)
    try:
        if mode == 2:
            msg = turn.parse(rest)
            turn.check_integrity(msg, KEY)
            for _, value in msg.attrs:
                with contextlib.suppress(turn.TurnError, ValueError):
                    turn.unxor_addr(value, msg.txid)
        else:
            SERVER._handle(rest, CLIENT, _Nursery())  # type: ignore[arg-type]
    except turn.TurnError:
        pass
    assert len(SERVER.allocations) <= turn.MAX_ALLOCATIONS
    for alloc in SERVER.allocations.values():
        assert set(alloc.permissions) <= ALLOWED, "permission for a forbidden peer"
        assert {ip for ip, _ in alloc.channels.values()} <= ALLOWED
    if len(SERVER.allocations) > 8:
        for client in list(SERVER.allocations):
            SERVER._free(client)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
