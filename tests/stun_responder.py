"""A tiny STUN server on loopback for tests: answers every binding request with the
XOR-MAPPED-ADDRESS it was told to report (standing in for a NAT's public side)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator

MAGIC = 0x2112A442


def answer(request: bytes, ip: str, port: int) -> bytes | None:
    if len(request) < 20 or struct.unpack("!HHI", request[:8])[::2] != (1, MAGIC):
        return None
    txid = request[8:20]
    addr = ipaddress.ip_address(ip)
    key = struct.pack("!I", MAGIC) + txid
    raw = bytes(b ^ key[i] for i, b in enumerate(addr.packed))
    value = struct.pack("!BBH", 0, 1 if addr.version == 4 else 2, port ^ (MAGIC >> 16)) + raw
    attr = struct.pack("!HH", 0x0020, len(value)) + value
    return struct.pack("!HHI", 0x0101, len(attr), MAGIC) + txid + attr


@contextlib.contextmanager
def stun_responder(mapped_ip: str, mapped_port: int = 40000) -> Iterator[tuple[str, int]]:
    """Serve on 127.0.0.1; yields its (host, port). Counts requests in ``.requests``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            reply = answer(data, mapped_ip, mapped_port)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        thread.join(5)
        sock.close()
