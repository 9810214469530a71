"""Issue 13: clients on other networks reach the server. Each test puts an official
Python SDK client in a network namespace of its own (``tests/netns.py``): it reaches
the server only over a veth pair, as another machine on a LAN would, and a subscriber
on the server's side checks that the client's 440 Hz tone arrives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import rtc

from pysfu.config import Config

from . import netns
from .client_process import ClientProcess, python_client
from .conftest import RunningServer, make_config, start_server, stop_server
from .sdk_helpers import AudioProbe, ToneSource, Watcher, connected

pytestmark = pytest.mark.asyncio


@contextlib.contextmanager
def serving(config: Config) -> Iterator[RunningServer]:
    running = start_server(config)
    try:
        yield running
    finally:
        stop_server(running)


def _url(ip: str, port: int) -> str:
    return f"ws://[{ip}]:{port}" if ":" in ip else f"ws://{ip}:{port}"


@contextlib.asynccontextmanager
async def remote_tone(
    server: RunningServer, ns: netns.Namespace, ip: str
) -> AsyncIterator[ClientProcess]:
    """A publisher of a tone inside ``ns``, connected to the server at ``ip``."""
    url = _url(ip, server.server.port)
    async with python_client(
        url, server.token_for("remote"), "remote", tone=True, wrap=lambda a: ns.argv(*a)
    ) as client:
        await client.wait_event("connected", timeout=30)
        yield client


async def hears_remote(watcher: Watcher) -> None:
    await watcher.wait_for("track_subscribed", lambda t, pub, p: p.identity == "remote", timeout=30)
    track = next(
        pub.track
        for p in [watcher.room.remote_participants["remote"]]
        for pub in p.track_publications.values()
        if pub.track is not None
    )
    probe = AudioProbe(track)  # type: ignore[arg-type]
    try:
        await probe.wait_tone(present=True)
    finally:
        await probe.aclose()


async def test_wildcard_bind_advertises_the_namespace_facing_address() -> None:
    """Bound to 0.0.0.0 without rtc.node_ip, the server advertises its interface
    addresses (the veth's among them) and never 127.0.0.1, and a client on the other
    side of the veth publishes audio a local subscriber hears."""
    with netns.namespace() as ns, serving(make_config(bind_addresses=("0.0.0.0",))) as server:
        advertised = server.server.advertised
        udp = [ip for proto, ip, _ in advertised if proto == "udp"]
        assert ns.host_ip4 in udp, advertised
        assert not any(ip.startswith("127.") for ip in udp), advertised
        async with (
            connected(server, "local") as (_, watcher),
            remote_tone(server, ns, ns.host_ip),
        ):
            await hears_remote(watcher)


async def test_client_with_udp_blocked_connects_over_ice_tcp() -> None:
    """All UDP from the client's namespace to the server is dropped (a firewall that
    passes only TCP): the client connects over ICE/TCP on rtc.tcp_port and its audio
    reaches a subscriber."""
    with netns.namespace() as ns, serving(make_config(bind_addresses=("0.0.0.0",))) as server:
        assert server.server.tcp_port, "ICE/TCP is on by default"
        assert ("tcp", ns.host_ip4, server.server.tcp_port) in server.server.advertised
        ns.drop_udp_to_host()
        async with (
            connected(server, "local") as (_, watcher),
            remote_tone(server, ns, ns.host_ip),
        ):
            await hears_remote(watcher)
        assert ns.udp_dropped() > 0, "the client tried UDP first and was blocked"
        stats = server.engine_stats()
        assert stats["tcp_frames_in"] > 0 and stats["tcp_frames_out"] > 0, stats


async def test_ipv6_only_client_connects() -> None:
    """A client whose network has only IPv6 connects to a server bound to ``::``,
    which advertises its IPv6 addresses beside the IPv4 ones."""
    with (
        netns.namespace(ipv4=False, ipv6=True) as ns,
        serving(make_config(bind_addresses=("::",))) as server,
    ):
        udp = [ip for proto, ip, _ in server.server.advertised if proto == "udp"]
        assert ns.host_ip6 in udp, server.server.advertised
        assert any("." in ip for ip in udp), "IPv4 beside IPv6"
        async with (
            connected(server, "local") as (_, watcher),
            remote_tone(server, ns, ns.host_ip),
        ):
            await hears_remote(watcher)


async def test_relay_only_client_connects_through_the_embedded_turn_server() -> None:
    """turn.enabled: the JoinResponse carries a TURN server with credentials, and a
    Python SDK client restricted to relay candidates (ice_transport_type relay)
    connects through it; its audio reaches a subscriber."""
    config = make_config(turn_enabled=True, turn_udp_port=0)
    with serving(config) as server:
        async with connected(server, "local") as (_, watcher):
            relayed = rtc.Room()
            options = rtc.RoomOptions(
                connect_timeout=15,
                rtc_config=rtc.RtcConfiguration(
                    ice_transport_type=rtc.IceTransportType.TRANSPORT_RELAY
                ),
            )
            await relayed.connect(server.url, server.token_for("remote"), options)
            tone = ToneSource()
            try:
                await tone.publish(relayed)
                await hears_remote(watcher)
            finally:
                await tone.aclose()
                await relayed.disconnect()
        assert server.server.turn is not None
        assert server.server.turn.relayed > 0, "media went through the relay"


async def test_loopback_only_media_is_said_when_a_remote_client_joins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wildcard bind whose filters leave only loopback advertises 127.0.0.1 with a
    warning at start-up, and says so as an error when a client from another machine
    (a namespace) joins: its media cannot connect, and the operator learns why."""
    caplog.set_level(logging.INFO, logger="pysfu")
    config = make_config(bind_addresses=("0.0.0.0",), interfaces_include=("lo",))
    with netns.namespace() as ns, serving(config) as server:
        assert [ip for _, ip, _ in server.server.advertised] == ["127.0.0.1", "127.0.0.1"]
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("reachable only from this machine" in r.getMessage() for r in warned)
        url = _url(ns.host_ip, server.server.port)
        async with python_client(
            url, server.token_for("remote"), "remote", wrap=lambda a: ns.argv(*a)
        ) as client:
            async with asyncio.timeout(20):
                while not any(
                    r.levelno == logging.ERROR and "another machine" in r.getMessage()
                    for r in caplog.records
                ):
                    await asyncio.sleep(0.1)
            assert not client.saw("connected"), "its media cannot have connected"
