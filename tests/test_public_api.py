"""The curated public surface, and the embedding example from the README working."""

import pytest
import trio
from livekit.protocol import models

import pysfu

from .signal_client import SignalClient, connect


def test_exports_resolve() -> None:
    for name in pysfu.__all__:
        assert getattr(pysfu, name) is not None


@pytest.mark.trio
async def test_embedded_server_reports_room_events() -> None:
    config, _ = pysfu.load_config(dev=True, port=0, udp_port=0, tcp_port=0, env={})
    server = pysfu.Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        token = pysfu.mint_token("devkey", "secret", identity="alice", room="embedded")
        with server.events() as events:
            async with connect(server.url, token) as ws:
                client = SignalClient(ws)
                await client.expect("join")
                assert [r.name for r in server.rooms] == ["embedded"]
                room = server.room("embedded")
                assert room is not None
                assert [p.identity for p in room.participants.values()] == ["alice"]
                with trio.fail_after(5):
                    started = await events.receive()
                assert started.event == "room_started" and started.room.name == "embedded"
                await server.aclose()
                leave = (await client.expect("leave")).leave
                assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
