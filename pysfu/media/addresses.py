"""Which addresses the media engine advertises in its host candidates.

livekit-server's rules, as its YAML spells them: ``rtc.node_ip`` names the one address
to advertise; otherwise a specific bind address is advertised, and a wildcard bind
(``0.0.0.0``: IPv4, ``::``: IPv4 and IPv6) advertises every usable interface address
that passes ``rtc.interfaces`` (names) and ``rtc.ips`` (CIDR prefixes) include/exclude
filters. ``rtc.use_external_ip`` puts the address a STUN server reports first.

Usable: up, not link-local (fe80::/10 needs a scope id clients cannot use; 169.254/16
is not routed), not multicast. Loopback addresses are advertised only when nothing else
is left, and then :func:`choose` says so in its notes: a server reachable only from its
own machine must not look healthy.

:func:`choose` is pure (interfaces are an input) so the policy is tested without
touching the host's network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["Choice", "InterfaceAddress", "choose"]


@attrs.frozen
class InterfaceAddress:
    interface: str
    ip: str
    up: bool = True
    loopback: bool = False


@attrs.frozen
class Choice:
    ips: tuple[str, ...]
    """Advertised, in order (the first is the primary)."""
    notes: tuple[str, ...] = ()
    """Why, for the start-up log; warnings start with ``"warning: "``."""

    @property
    def loopback_only(self) -> bool:
        return all(ipaddress.ip_address(ip).is_loopback for ip in self.ips)


def _in_any(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, prefixes: Sequence[str]) -> bool:
    return any(ip in ipaddress.ip_network(p, strict=False) for p in prefixes)


def choose(
    *,
    bind_ip: str,
    node_ip: str | None,
    interfaces: Iterable[InterfaceAddress],
    interfaces_include: Sequence[str] = (),
    interfaces_exclude: Sequence[str] = (),
    ips_include: Sequence[str] = (),
    ips_exclude: Sequence[str] = (),
    external_ip: str | None = None,
) -> Choice:
    """The advertised addresses for an engine bound to ``bind_ip``."""
    notes: list[str] = []
    if node_ip is not None:
        return Choice((node_ip,), ("rtc.node_ip",))
    bind = ipaddress.ip_address(bind_ip)
    if not bind.is_unspecified:
        chosen: list[str] = [str(bind)]
        notes.append(f"bound to {bind}")
    else:
        want_v6 = bind.version == 6
        chosen = []
        loopbacks: list[str] = []
        for entry in interfaces:
            ip = ipaddress.ip_address(entry.ip)
            if ip.version == 6 and not want_v6:
                continue
            if not entry.up or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                continue
            if interfaces_include and entry.interface not in interfaces_include:
                continue
            if entry.interface in interfaces_exclude:
                continue
            if ips_include and not _in_any(ip, ips_include):
                continue
            if _in_any(ip, ips_exclude):
                continue
            text = str(ip)
            if text in chosen or text in loopbacks:
                continue
            (loopbacks if ip.is_loopback or entry.loopback else chosen).append(text)
        # IPv4 first: most clients have it, and the first is the primary.
        chosen.sort(key=lambda t: ipaddress.ip_address(t).version)
        if chosen:
            notes.append(f"interface addresses of a {bind} bind")
        elif loopbacks:
            chosen = loopbacks
            notes.append(
                "warning: no usable non-loopback interface address (after rtc.interfaces/"
                "rtc.ips filters): media is reachable only from this machine; set "
                "rtc.node_ip to the address clients can reach"
            )
        else:
            chosen = ["::1" if want_v6 else "127.0.0.1"]
            notes.append(
                "warning: no interface address passed the rtc.interfaces/rtc.ips filters: "
                f"advertising {chosen[0]}, reachable only from this machine"
            )
    if external_ip is not None:
        chosen = [external_ip, *(ip for ip in chosen if ip != external_ip)]
        notes.append(f"external address {external_ip} from STUN")
    return Choice(tuple(chosen), tuple(notes))
