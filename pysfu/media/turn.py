"""An embedded TURN server (RFC 5766, UDP relay over UDP) for clients that may only
use relay candidates, with livekit-style credentials: ``ice_servers`` in the
JoinResponse carry a time-limited username (``<expiry>:<participant sid>``) and the
base64 HMAC-SHA1 of it under the server's first API secret (the TURN REST API
convention coturn's ``use-auth-secret`` also checks), so no per-user state is kept.

Scope: Allocate (UDP), Refresh, CreatePermission, ChannelBind, Send/Data indications
and ChannelData, with long-term-credential MESSAGE-INTEGRITY and FINGERPRINT. Bounds:
at most ``MAX_ALLOCATIONS`` allocations, each relaying only to peers it has
permissions for and only while its lifetime (≤ 1 h) lasts; permissions are granted
only for the SFU's own media addresses (403 otherwise), so a participant's credentials
do not make the server an open relay to anywhere else. Relayed bytes pass through
Python: this is for the few clients that cannot do better (ICE over TCP comes first).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator

import attrs
import trio
import trio.lowlevel

log = logging.getLogger(__name__)

MAGIC = 0x2112A442
REALM = b"pysfu"
MAX_ALLOCATIONS = 256
DEFAULT_LIFETIME_S = 600
MAX_LIFETIME_S = 3600
PERMISSION_S = 300
CREDENTIAL_TTL_S = 24 * 3600

BINDING, ALLOCATE, REFRESH, SEND, DATA, CREATE_PERMISSION, CHANNEL_BIND = 1, 3, 4, 6, 7, 8, 9
REQUEST, INDICATION, SUCCESS, ERROR = 0x0000, 0x0010, 0x0100, 0x0110

A_USERNAME, A_INTEGRITY, A_ERROR, A_LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
A_CHANNEL, A_PEER, A_DATA, A_REALM, A_NONCE = 0x000C, 0x0012, 0x0013, 0x0014, 0x0015
A_RELAYED, A_TRANSPORT, A_MAPPED, A_FINGERPRINT = 0x0016, 0x0019, 0x0020, 0x8028


def credentials(secret: str, sid: str, *, now: float | None = None) -> tuple[str, str]:
    """(username, password) for one participant, valid for a day."""
    username = f"{int((now or time.time()) + CREDENTIAL_TTL_S)}:{sid}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


class TurnError(ValueError):
    pass


@attrs.define
class Message:
    method: int
    cls: int
    txid: bytes
    attrs: list[tuple[int, bytes]] = attrs.field(factory=list)
    raw: bytes = b""

    def get(self, typ: int) -> bytes | None:
        return next((v for t, v in self.attrs if t == typ), None)


def parse(data: bytes) -> Message:
    if len(data) < 20:
        raise TurnError("short")
    typ, length, magic = struct.unpack("!HHI", data[:8])
    if typ & 0xC000 or magic != MAGIC or 20 + length != len(data) or length % 4:
        raise TurnError("not STUN")
    method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2)
    cls = typ & 0x0110
    out, at = [], 20
    while at + 4 <= len(data):
        t, n = struct.unpack("!HH", data[at : at + 4])
        value = data[at + 4 : at + 4 + n]
        if len(value) != n:
            raise TurnError("truncated attribute")
        out.append((t, value))
        at += 4 + (n + 3) // 4 * 4
        if len(out) > 64:
            raise TurnError("too many attributes")
    return Message(method, cls, data[8:20], out, data)


def _type(method: int, cls: int) -> int:
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def _attr(t: int, v: bytes) -> bytes:
    return struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)


def encode(msg: Message, key: bytes | None) -> bytes:
    body = b"".join(_attr(t, v) for t, v in msg.attrs)
    head = struct.pack("!HHI", _type(msg.method, msg.cls), 0, MAGIC) + msg.txid
    if key is not None:
        length = len(body) + 24
        mac = hmac.new(key, head[:2] + struct.pack("!H", length) + head[4:] + body, hashlib.sha1)
        body += _attr(A_INTEGRITY, mac.digest())
    length = len(body) + 8
    crc = zlib.crc32(head[:2] + struct.pack("!H", length) + head[4:] + body) ^ 0x5354554E
    body += _attr(A_FINGERPRINT, struct.pack("!I", crc))
    return head[:2] + struct.pack("!H", len(body)) + head[4:] + body


def check_integrity(msg: Message, key: bytes) -> bool:
    """MESSAGE-INTEGRITY over the message up to it, with the length it implies."""
    at = 20
    data = msg.raw
    while at + 4 <= len(data):
        t, n = struct.unpack("!HH", data[at : at + 4])
        if t == A_INTEGRITY:
            given = data[at + 4 : at + 4 + n]
            length = at - 20 + 24
            covered = data[:2] + struct.pack("!H", length) + data[4:at]
            return hmac.compare_digest(hmac.new(key, covered, hashlib.sha1).digest(), given)
        at += 4 + (n + 3) // 4 * 4
    return False


def xor_addr(addr: tuple[str, int], txid: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    key = struct.pack("!I", MAGIC) + txid
    raw = bytes(b ^ key[i] for i, b in enumerate(ip.packed))
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, addr[1] ^ (MAGIC >> 16)) + raw


def unxor_addr(value: bytes, txid: bytes) -> tuple[str, int]:
    if len(value) not in (8, 20):
        raise TurnError("bad address")
    key = struct.pack("!I", MAGIC) + txid
    raw = bytes(b ^ key[i] for i, b in enumerate(value[4:]))
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    return str(ipaddress.ip_address(raw)), port


@attrs.define(eq=False)
class _Allocation:
    client: tuple[str, int]
    relay: socket.socket
    key: bytes
    expires: float
    permissions: dict[str, float] = attrs.field(factory=dict)
    channels: dict[int, tuple[str, int]] = attrs.field(factory=dict)
    by_peer: dict[tuple[str, int], int] = attrs.field(factory=dict)
    cancel: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class TurnServer:
    """Serve TURN on ``bind_ip:port`` (UDP); relays bind on ``relay_ip``."""

    def __init__(
        self,
        secrets: list[str],
        bind_ip: str,
        port: int,
        relay_ip: str,
        allowed_peers: frozenset[str] | None = None,
    ) -> None:
        self.secrets = secrets
        self.allowed_peers = allowed_peers
        """Peer IPs permissions may be created for (None: any; the server passes its
        media addresses)."""
        self.bind_ip, self.port, self.relay_ip = bind_ip, port, relay_ip
        self.allocations: dict[tuple[str, int], _Allocation] = {}
        self._sock: socket.socket | None = None
        self.relayed = 0
        """Datagrams relayed either way (tests, stats)."""

    def _password(self, username: str) -> str | None:
        expiry, _, _ = username.partition(":")
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        mac = hmac.new(self.secrets[0].encode(), username.encode(), hashlib.sha1).digest()
        return base64.b64encode(mac).decode()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        sock = _udp(self.bind_ip)
        sock.bind((self.bind_ip, self.port))
        self._sock = sock
        self.port = sock.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                async for data, source in _datagrams(sock):
                    try:
                        self._handle(data, (source[0], source[1]), nursery)
                    except TurnError:
                        continue
                    except Exception:
                        log.exception("TURN: error handling a datagram from %s", source)
        finally:
            for client in list(self.allocations):
                self._free(client)
            sock.close()

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self._sock is not None
        # A full send buffer drops, as UDP does.
        with contextlib.suppress(OSError):
            self._sock.sendto(data, to)

    def _reply(
        self,
        req: Message,
        to: tuple[str, int],
        attrs_: list[tuple[int, bytes]],
        key: bytes | None,
        error: int = 0,
    ) -> None:
        if error:
            reason = {
                400: b"Bad Request",
                403: b"Forbidden",
                401: b"Unauthorized",
                437: b"Allocation Mismatch",
                486: b"Allocation Quota Reached",
            }.get(error, b"Error")
            attrs_ = [
                (A_ERROR, struct.pack("!HBB", 0, error // 100, error % 100) + reason),
                *attrs_,
            ]
        cls = ERROR if error else SUCCESS
        self._send(encode(Message(req.method, cls, req.txid, attrs_), key), to)

    def _handle(self, data: bytes, client: tuple[str, int], nursery: trio.Nursery) -> None:
        if data and 0x40 <= data[0] <= 0x7F:
            self._channel_data(data, client)
            return
        msg = parse(data)
        if msg.method == BINDING and msg.cls == REQUEST:
            self._reply(msg, client, [(A_MAPPED, xor_addr(client, msg.txid))], None)
            return
        alloc = self.allocations.get(client)
        if msg.method == SEND and msg.cls == INDICATION:
            if alloc is not None:
                peer, payload = msg.get(A_PEER), msg.get(A_DATA)
                if peer is not None and payload is not None:
                    addr = unxor_addr(peer, msg.txid)
                    if alloc.permissions.get(addr[0], 0) > time.monotonic():
                        self._relay_out(alloc, payload, addr)
            return
        if msg.cls != REQUEST:
            return
        key = self._authenticate(msg, client)
        if key is None:
            return
        if msg.method == ALLOCATE:
            self._allocate(msg, client, key, nursery)
        elif alloc is None or alloc.key != key:
            self._reply(msg, client, [], key, 437)
        elif msg.method == REFRESH:
            lifetime = self._lifetime(msg)
            if lifetime == 0:
                self._free(client)
            else:
                alloc.expires = time.monotonic() + lifetime
            self._reply(msg, client, [(A_LIFETIME, struct.pack("!I", lifetime))], key)
        elif msg.method == CREATE_PERMISSION:
            peers = [unxor_addr(v, msg.txid) for t, v in msg.attrs if t == A_PEER]
            if not peers:
                self._reply(msg, client, [], key, 400)
                return
            if not all(self._allowed(ip) for ip, _ in peers):
                self._reply(msg, client, [], key, 403)
                return
            for ip, _ in peers:
                alloc.permissions[ip] = time.monotonic() + PERMISSION_S
            self._reply(msg, client, [], key)
        elif msg.method == CHANNEL_BIND:
            number, peer = msg.get(A_CHANNEL), msg.get(A_PEER)
            if number is None or peer is None or len(number) < 2:
                self._reply(msg, client, [], key, 400)
                return
            channel = struct.unpack("!H", number[:2])[0]
            addr = unxor_addr(peer, msg.txid)
            if not 0x4000 <= channel <= 0x7FFE or not self._allowed(addr[0]):
                self._reply(msg, client, [], key, 400)
                return
            alloc.channels[channel] = addr
            alloc.by_peer[addr] = channel
            alloc.permissions[addr[0]] = time.monotonic() + PERMISSION_S
            self._reply(msg, client, [], key)

    def _allowed(self, ip: str) -> bool:
        return self.allowed_peers is None or ip in self.allowed_peers

    def _authenticate(self, msg: Message, client: tuple[str, int]) -> bytes | None:
        """The long-term key, or None after answering 401 with realm and nonce."""
        username = msg.get(A_USERNAME)
        password = self._password(username.decode(errors="replace")) if username else None
        if username is not None and password is not None:
            key = hashlib.md5(username + b":" + REALM + b":" + password.encode()).digest()
            if check_integrity(msg, key):
                return key
        nonce = os.urandom(8).hex().encode()
        self._reply(msg, client, [(A_REALM, REALM), (A_NONCE, nonce)], None, 401)
        return None

    @staticmethod
    def _lifetime(msg: Message) -> int:
        value = msg.get(A_LIFETIME)
        if value is None or len(value) < 4:
            return DEFAULT_LIFETIME_S
        requested: int = struct.unpack("!I", value[:4])[0]
        return min(requested, MAX_LIFETIME_S)

    def _allocate(
        self, msg: Message, client: tuple[str, int], key: bytes, nursery: trio.Nursery
    ) -> None:
        existing = self.allocations.get(client)
        if existing is not None:
            # A retransmission: the same answer again.
            addr = existing.relay.getsockname()
            self._reply(msg, client, self._allocated(msg, client, (addr[0], addr[1])), key)
            return
        transport = msg.get(A_TRANSPORT)
        if transport is None or transport[:1] != b"\x11":
            self._reply(msg, client, [], key, 400)
            return
        if len(self.allocations) >= MAX_ALLOCATIONS:
            self._reply(msg, client, [], key, 486)
            return
        relay = _udp(self.relay_ip)
        relay.bind((self.relay_ip, 0))
        alloc = _Allocation(client, relay, key, time.monotonic() + self._lifetime(msg))
        self.allocations[client] = alloc
        nursery.start_soon(self._relay_in, alloc)
        addr = relay.getsockname()
        log.info("TURN: allocation for %s relays on %s:%s", client[0], addr[0], addr[1])
        self._reply(msg, client, self._allocated(msg, client, (addr[0], addr[1])), key)

    def _allocated(
        self, msg: Message, client: tuple[str, int], relay: tuple[str, int]
    ) -> list[tuple[int, bytes]]:
        alloc = self.allocations[client]
        lifetime = max(0, int(alloc.expires - time.monotonic()))
        return [
            (A_RELAYED, xor_addr(relay, msg.txid)),
            (A_LIFETIME, struct.pack("!I", lifetime)),
            (A_MAPPED, xor_addr(client, msg.txid)),
        ]

    def _free(self, client: tuple[str, int]) -> None:
        alloc = self.allocations.pop(client, None)
        if alloc is not None:
            alloc.cancel.cancel()
            alloc.relay.close()

    def _channel_data(self, data: bytes, client: tuple[str, int]) -> None:
        alloc = self.allocations.get(client)
        if alloc is None or len(data) < 4:
            return
        channel, length = struct.unpack("!HH", data[:4])
        peer = alloc.channels.get(channel)
        if peer is not None and len(data) >= 4 + length:
            self._relay_out(alloc, data[4 : 4 + length], peer)

    def _relay_out(self, alloc: _Allocation, payload: bytes, peer: tuple[str, int]) -> None:
        try:
            alloc.relay.sendto(payload, peer)
            self.relayed += 1
        except OSError:
            pass

    async def _relay_in(self, alloc: _Allocation) -> None:
        with alloc.cancel:
            while True:
                left = max(0.0, alloc.expires - time.monotonic())
                got = None
                with trio.move_on_after(left):
                    got = await _one_datagram(alloc.relay)
                if got is None:
                    log.info("TURN: allocation for %s expired", alloc.client[0])
                    self._free(alloc.client)
                    return
                data, source = got
                peer = (source[0], source[1])
                if alloc.permissions.get(peer[0], 0) < time.monotonic():
                    continue
                channel = alloc.by_peer.get(peer)
                if channel is not None:
                    frame = struct.pack("!HH", channel, len(data)) + data
                    self._send(frame + b"\0" * (-len(frame) % 4), alloc.client)
                else:
                    txid = os.urandom(12)
                    ind = Message(DATA, INDICATION, txid, [(A_PEER, xor_addr(peer, txid))])
                    ind.attrs.append((A_DATA, data))
                    self._send(encode(ind, None), alloc.client)
                self.relayed += 1


def _udp(ip: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


async def _one_datagram(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    while True:
        try:
            data, source = sock.recvfrom(65536)
            return data, (source[0], source[1])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
        except OSError:
            # ICMP errors surface on recv: skip them.
            await trio.lowlevel.checkpoint()


async def _datagrams(sock: socket.socket) -> AsyncIterator[tuple[bytes, tuple[str, int]]]:
    while True:
        yield await _one_datagram(sock)
