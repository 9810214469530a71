"""STUN (RFC 5389) binding requests, to learn the address a STUN server sees us at
(``rtc.use_external_ip``). The codec is pure and bounded; :func:`discover` asks the
configured servers in turn over UDP.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import trio

__all__ = ["StunError", "binding_request", "discover", "parse_binding_response"]

MAGIC = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
MAPPED_ADDRESS = 0x0001
MAX_MESSAGE = 1500
"""Longer answers are refused; a binding response is well under 100 bytes."""


class StunError(ValueError):
    """Not a well-formed binding response to our request."""


def binding_request(transaction_id: bytes) -> bytes:
    """A binding request without attributes (RFC 5389 §6)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 12 bytes")
    return struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC) + transaction_id


def _address(value: bytes, xor: bool, transaction_id: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("short address attribute")
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    raw = value[4:]
    if xor:
        port ^= MAGIC >> 16
        key = struct.pack("!I", MAGIC) + transaction_id
        raw = bytes(b ^ key[i] for i, b in enumerate(raw[: len(key)]))
    if family == 1 and len(raw) >= 4:
        return str(ipaddress.IPv4Address(raw[:4])), port
    if family == 2 and len(raw) >= 16:
        return str(ipaddress.IPv6Address(raw[:16])), port
    raise StunError(f"bad address family {family} or length {len(value)}")


def parse_binding_response(data: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The (ip, port) a success response to ``transaction_id`` reports."""
    if len(data) < 20 or len(data) > MAX_MESSAGE:
        raise StunError(f"length {len(data)} is no STUN message")
    kind, length, magic = struct.unpack("!HHI", data[:8])
    if magic != MAGIC or data[8:20] != transaction_id:
        raise StunError("not an answer to our request")
    if kind != BINDING_SUCCESS:
        raise StunError(f"message type {kind:#06x} is no binding success")
    if 20 + length > len(data) or length % 4:
        raise StunError("attribute length beyond the message")
    at, end = 20, 20 + length
    mapped: tuple[str, int] | None = None
    while at + 4 <= end:
        typ, alen = struct.unpack("!HH", data[at : at + 4])
        value = data[at + 4 : at + 4 + alen]
        if len(value) < alen:
            raise StunError("truncated attribute")
        if typ == XOR_MAPPED_ADDRESS:
            return _address(value, True, transaction_id)
        if typ == MAPPED_ADDRESS:
            mapped = _address(value, False, transaction_id)
        at += 4 + (alen + 3) // 4 * 4
    if mapped is None:
        raise StunError("no mapped address in the response")
    return mapped


async def _ask(server: str, timeout_s: float) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    infos = await trio.socket.getaddrinfo(host, int(port), type=trio.socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{server}: no address")
    family, _, _, _, address = infos[0]
    transaction_id = os.urandom(12)
    with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        with trio.fail_after(timeout_s):
            # Retransmit as RFC 5389 §7.2.1 does, in a shorter overall time.
            for attempt in range(4):
                await sock.send(binding_request(transaction_id))
                with trio.move_on_after(0.25 * 2**attempt):
                    while True:
                        data = await sock.recv(MAX_MESSAGE + 1)
                        try:
                            return parse_binding_response(data, transaction_id)
                        except StunError:
                            continue  # someone else's datagram: keep waiting
        raise TimeoutError(server)


async def discover(servers: tuple[str, ...], *, timeout_s: float = 3.0) -> tuple[str, str]:
    """(external ip, server that said so) from the first server that answers.
    Raises OSError naming every server's failure when none does."""
    failures = []
    for server in servers:
        try:
            ip, _ = await _ask(server, timeout_s)
            return ip, server
        except (OSError, TimeoutError, trio.TooSlowError, ValueError) as exc:
            failures.append(f"{server}: {exc!r}")
    raise OSError("no STUN server answered: " + "; ".join(failures))
