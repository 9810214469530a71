"""Hostile clients against the real server on loopback: oversized and junk frames,
request floods from clients that never read, slow readers, and many half-open
connections. Each test checks that a well-behaved participant stays served (pings
answered, newcomers seen, the server API answering), that the hostile connections are
cleaned up (no participant or session left behind) and that memory stays bounded.

Counts are modest for a 2-core CI box. Deadlines below only keep a broken server from
hanging the run; nothing asserts on how long anything took.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import trio
from livekit.protocol import models, rtc
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

import pysfu.server
from pysfu.config import Config
from pysfu.runtime.sessions import ParticipantSession
from pysfu.signal.connection import MAX_BAD_FRAMES, MAX_FRAME_BYTES

from .conftest import RunningServer, start_server, stop_server
from .signal_client import SignalClient, connect

pytestmark = [
    pytest.mark.trio,
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS from /proc"),
]

DEADLINE_S = 60.0
"""Upper bound for anything to settle; a hang guard, not a performance target."""
RSS_GROWTH_LIMIT_MB = 256
"""Memory the whole process (server and clients) may gain during one hostile phase."""
SMALL_RCVBUF = 4096
"""Receive buffer of the clients that never read, so the server's writes block soon."""
STALLED_PEER_ABORT_S = 2.0
"""The server's stalled-peer abort, shortened so a test sees it happen."""


@pytest.fixture
def server(server_config: Config, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    monkeypatch.setattr(pysfu.server, "STALLED_PEER_ABORT_S", STALLED_PEER_ABORT_S)
    running = start_server(server_config)
    try:
        yield running
    finally:
        stop_server(running)
        # A connection the server could not end would keep its thread running.
        assert not running.thread.is_alive(), "server did not shut down"


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RawClient:
    """A WebSocket client on a bare socket: it can stop reading, send what it likes,
    or stop half-way through the handshake."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open_tcp(cls, server: RunningServer, *, rcvbuf: int | None = None) -> RawClient:
        host, port = urlsplit(server.http_url).hostname, urlsplit(server.http_url).port
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
        return cls(trio.SocketStream(sock))

    @classmethod
    async def join(
        cls, server: RunningServer, token: str, *, rcvbuf: int | None = None
    ) -> RawClient:
        """Complete the upgrade; the JoinResponse is left unread."""
        client = await cls.open_tcp(server, rcvbuf=rcvbuf)
        target = "/rtc?" + urlencode({"access_token": token, "protocol": "16"})
        await client.stream.send_all(client.ws.send(Request(host="localhost", target=target)))
        with trio.fail_after(DEADLINE_S):
            while True:
                data = await client.stream.receive_some(65536)
                assert data, "server closed during the handshake"
                client.ws.receive_data(data)
                for event in client.ws.events():
                    if isinstance(event, AcceptConnection):
                        return client
                    raise AssertionError(f"upgrade refused: {event!r}")

    async def send(self, payload: bytes | str) -> None:
        event = TextMessage(payload) if isinstance(payload, str) else BytesMessage(payload)
        await self.stream.send_all(self.ws.send(event))

    async def closed_by_server(self) -> bool:
        """Read until the server closes; True once it did."""
        with trio.move_on_after(DEADLINE_S):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return True
                if not data:
                    return True
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, CloseConnection):
                        return True
        return False

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()


# ---- what a well-behaved participant must keep getting ---------------------------------------


async def assert_served(server: RunningServer, alice: SignalClient, probe: str) -> None:
    """Alice's pings are answered, a newcomer joins and Alice sees it, the API answers."""
    await alice.send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=42)))
    pong = await alice.expect("pong_resp", timeout=DEADLINE_S)
    assert pong.pong_resp.last_ping_timestamp == 42
    async with connect(server.url, server.token_for(probe)) as ws:
        newcomer = SignalClient(ws)
        join = await newcomer.expect("join", timeout=DEADLINE_S)
        assert "alice" in [p.identity for p in join.join.other_participants]
        await alice.expect_update(probe, timeout=DEADLINE_S)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=DEADLINE_S) as http:
        reply = await http.post(
            "/twirp/livekit.RoomService/ListRooms",
            json={},
            headers={"Authorization": f"Bearer {server.admin_token()}"},
        )
    assert reply.status_code == 200 and "room1" in reply.text


async def identities(server: RunningServer, room: str) -> set[str]:
    def read() -> set[str]:
        r = server.server.room(room)
        return set() if r is None else {p.identity for p in r.participants.values()}

    return await server.acall(read)


async def wait_for_identities(server: RunningServer, room: str, expected: set[str]) -> None:
    with trio.fail_after(DEADLINE_S):
        while await identities(server, room) != expected:
            await trio.sleep(0.05)


async def live_sessions(server: RunningServer) -> int:
    def count() -> int:
        gc.collect()
        return sum(isinstance(o, ParticipantSession) for o in gc.get_objects())

    return await server.acall(count)


async def wait_for_sessions(server: RunningServer, expected: int) -> None:
    """Sessions are collected once their connection ended (no leak of session objects)."""
    with trio.fail_after(DEADLINE_S):
        while await live_sessions(server) > expected:
            await trio.sleep(0.1)


# ---- tests ------------------------------------------------------------------------------------


async def test_oversized_and_junk_frames_end_only_that_connection(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        before = rss_mb()

        big = await RawClient.join(server, server.token_for("big"))
        await wait_for_identities(server, "room1", {"alice", "big"})
        with pytest.raises(trio.BrokenResourceError):  # the server may close mid-send
            await big.send(b"\x00" * (MAX_FRAME_BYTES + 1))
            assert await big.closed_by_server()
            raise trio.BrokenResourceError
        await big.aclose()

        junk = await RawClient.join(server, server.token_for("junk"))
        for i in range(MAX_BAD_FRAMES + 5):
            await junk.send(b"\xff\xff\xff\xff\x0f" if i % 2 else "text is not signaling")
        assert await junk.closed_by_server(), "a client sending only junk was kept"
        await junk.aclose()

        await wait_for_identities(server, "room1", {"alice"})
        await assert_served(server, alice, "probe")
        await wait_for_identities(server, "room1", {"alice"})
        await wait_for_sessions(server, 1)
        assert rss_mb() - before < RSS_GROWTH_LIMIT_MB


async def test_request_flood_from_a_client_that_never_reads(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        before = rss_mb()
        flooder = await RawClient.join(server, server.token_for("flooder"), rcvbuf=SMALL_RCVBUF)
        # Each request makes the server answer 64 times (SubscriptionResponse per unknown
        # track), and the flooder reads none of it.
        unknown = [f"TR_unknown{i:054d}" for i in range(64)]
        request = rtc.SignalRequest(
            subscription=rtc.UpdateSubscription(track_sids=unknown, subscribe=True)
        ).SerializeToString()
        ping = rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1)).SerializeToString()
        sent = 0
        with trio.move_on_after(DEADLINE_S):
            try:
                for sent in range(1, 2001):
                    await flooder.send(request if sent % 4 else ping)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server hung up on the flooder: what should happen
        await wait_for_identities(server, "room1", {"alice"})
        await assert_served(server, alice, "probe")
        growth = rss_mb() - before
        assert growth < RSS_GROWTH_LIMIT_MB, f"grew {growth:.0f} MB after {sent} requests"
        await flooder.aclose()
        await wait_for_sessions(server, 1)


async def test_slow_reader_is_dropped_not_buffered(server: RunningServer) -> None:
    token = server.token_for("alice", can_update_own_metadata=True)
    async with connect(server.url, token) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        before = rss_mb()
        slow = await RawClient.join(server, server.token_for("slow"), rcvbuf=SMALL_RCVBUF)
        await alice.expect_update("slow", timeout=DEADLINE_S)
        # Every change of Alice's is broadcast to the slow reader, which reads nothing.
        metadata = "m" * 2048
        slow_left: models.ParticipantInfo | None = None
        for i in range(3000):
            await alice.send(
                rtc.SignalRequest(
                    update_metadata=rtc.UpdateParticipantMetadata(
                        metadata=f"{i}{metadata}", request_id=i + 1
                    )
                )
            )
            # Alice reads everything: her own update confirms the change.
            own = False
            while not own:
                msg = await alice.expect("update", timeout=DEADLINE_S)
                for p in msg.update.participants:
                    own = own or p.identity == "alice"
                    if p.identity == "slow" and p.state == models.ParticipantInfo.DISCONNECTED:
                        slow_left = p
            if slow_left is not None:
                break
        assert slow_left is not None, "a participant that never reads was kept (buffered)"
        assert slow_left.disconnect_reason == models.DisconnectReason.SIGNAL_CLOSE
        assert "slow" not in await identities(server, "room1")
        assert rss_mb() - before < RSS_GROWTH_LIMIT_MB
        await assert_served(server, alice, "probe")
        # Still connected and still not reading: its connection and session must end
        # anyway (the server's write to it is aborted), not stay pinned forever.
        await wait_for_sessions(server, 1)
        await slow.aclose()


HALF_OPEN = 200
"""Connections held open at once: idle TCP, unfinished HTTP requests, silent WebSockets."""


async def test_many_half_open_connections(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        before = rss_mb()
        clients: list[RawClient] = []
        try:
            for i in range(HALF_OPEN):
                kind = i % 4
                if kind == 3:  # joined, then silent: never reads, never pings
                    token = server.token_for(f"idle{i}", room="idle")
                    clients.append(await RawClient.join(server, token, rcvbuf=SMALL_RCVBUF))
                    continue
                client = await RawClient.open_tcp(server, rcvbuf=SMALL_RCVBUF)
                clients.append(client)
                if kind == 1:  # an HTTP request that never ends
                    await client.stream.send_all(b"GET /rtc?access_token=x HTTP/1.1\r\nHost: a")
                elif kind == 2:  # an upgrade request missing its last CRLF
                    await client.stream.send_all(
                        b"GET /rtc HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    )
            idle = {f"idle{i}" for i in range(HALF_OPEN) if i % 4 == 3}
            await wait_for_identities(server, "idle", idle)
            await assert_served(server, alice, "probe")
            assert rss_mb() - before < RSS_GROWTH_LIMIT_MB
        finally:
            for client in clients:
                await client.aclose()
        # Their sockets are gone: so must be their participants and sessions.
        await wait_for_identities(server, "idle", set())
        await wait_for_sessions(server, 1)
        await assert_served(server, alice, "probe2")
