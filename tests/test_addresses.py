"""Issue 13: which addresses the server advertises (pysfu.media.addresses), STUN
discovery of the external address (pysfu.media.stun) against a STUN responder on
loopback, and what the server says at start-up."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from pysfu.media import addresses, stun
from pysfu.media.addresses import InterfaceAddress as If

from .conftest import make_config, start_server, stop_server
from .stun_responder import answer, stun_responder

HOST = [
    If("lo", "127.0.0.1", loopback=True),
    If("eth0", "192.0.2.10"),
    If("eth1", "10.1.2.3"),
    If("docker0", "172.17.0.1"),
    If("down0", "198.51.100.1", up=False),
    If("lo", "::1", loopback=True),
    If("eth0", "2001:db8::10"),
    If("eth0", "fe80::1"),
    If("eth0", "169.254.1.1"),
]


def test_wildcard_ipv4_bind_advertises_usable_ipv4_interface_addresses() -> None:
    choice = addresses.choose(bind_ip="0.0.0.0", node_ip=None, interfaces=HOST)
    assert choice.ips == ("192.0.2.10", "10.1.2.3", "172.17.0.1")
    assert not choice.loopback_only


def test_wildcard_ipv6_bind_adds_ipv6_after_ipv4() -> None:
    choice = addresses.choose(bind_ip="::", node_ip=None, interfaces=HOST)
    assert choice.ips == ("192.0.2.10", "10.1.2.3", "172.17.0.1", "2001:db8::10")


def test_filters_as_livekit_server() -> None:
    kw = {"bind_ip": "::", "node_ip": None, "interfaces": HOST}
    assert addresses.choose(**kw, interfaces_include=["eth0"]).ips == (  # type: ignore[arg-type]
        "192.0.2.10",
        "2001:db8::10",
    )
    assert addresses.choose(**kw, interfaces_exclude=["docker0", "eth0"]).ips == (  # type: ignore[arg-type]
        "10.1.2.3",
    )
    assert addresses.choose(**kw, ips_include=["10.0.0.0/8", "2001:db8::/32"]).ips == (  # type: ignore[arg-type]
        "10.1.2.3",
        "2001:db8::10",
    )
    assert addresses.choose(**kw, ips_exclude=["172.16.0.0/12", "::/0"]).ips == (  # type: ignore[arg-type]
        "192.0.2.10",
        "10.1.2.3",
    )


def test_node_ip_and_specific_binds_win() -> None:
    assert addresses.choose(bind_ip="0.0.0.0", node_ip="203.0.113.7", interfaces=HOST).ips == (
        "203.0.113.7",
    )
    assert addresses.choose(bind_ip="10.1.2.3", node_ip=None, interfaces=HOST).ips == ("10.1.2.3",)


def test_loopback_only_is_said_loudly() -> None:
    choice = addresses.choose(
        bind_ip="0.0.0.0", node_ip=None, interfaces=HOST, interfaces_include=["lo"]
    )
    assert choice.ips == ("127.0.0.1",)
    assert choice.loopback_only
    assert any(n.startswith("warning: ") and "only from this machine" in n for n in choice.notes)


def test_external_ip_comes_first() -> None:
    choice = addresses.choose(
        bind_ip="0.0.0.0", node_ip=None, interfaces=HOST, external_ip="203.0.113.50"
    )
    assert choice.ips[0] == "203.0.113.50" and "192.0.2.10" in choice.ips


def test_stun_codec_round_trip_and_rejects() -> None:
    txid = os.urandom(12)
    request = stun.binding_request(txid)
    for ip in ("203.0.113.9", "2001:db8::9"):
        reply = answer(request, ip, 4242)
        assert reply is not None
        assert stun.parse_binding_response(reply, txid) == (ip, 4242)
    reply = answer(request, "203.0.113.9", 1)
    assert reply is not None
    for bad in (b"", reply[:19], reply[:-2], reply[:8] + os.urandom(12) + reply[20:]):
        with pytest.raises(stun.StunError):
            stun.parse_binding_response(bad, txid)


@pytest.mark.trio
async def test_discover_asks_the_configured_servers_in_turn() -> None:
    with stun_responder("203.0.113.9") as (host, port):
        dead = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await dead.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{dead.getsockname()[1]}"
        ip, asked = await stun.discover((silent, f"{host}:{port}"), timeout_s=0.5)
        dead.close()
    assert (ip, asked) == ("203.0.113.9", f"{host}:{port}")


def test_server_with_use_external_ip_advertises_what_stun_says(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pysfu")
    with stun_responder("203.0.113.9") as (host, port):
        config = make_config(
            bind_addresses=("0.0.0.0",), use_external_ip=True, stun_servers=(f"{host}:{port}",)
        )
        running = start_server(config)
        try:
            advertised = running.server.advertised
        finally:
            stop_server(running)
    assert advertised[0] == ("udp", "203.0.113.9", running.server.udp_port)
    assert ("tcp", "203.0.113.9", running.server.tcp_port) in advertised
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("media: ")]
    assert any("203.0.113.9" in m and "STUN" in m for m in said), said


def test_server_says_what_it_advertises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pysfu")
    running = start_server(make_config())
    stop_server(running)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("media: advert")]
    udp, tcp = running.server.udp_port, running.server.tcp_port
    assert said == [
        f"media: advertising udp 127.0.0.1:{udp}, tcp 127.0.0.1:{tcp} (bound to 127.0.0.1)"
    ]
