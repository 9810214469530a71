"""Network namespaces for connectivity tests: a client on "another machine" that reaches
the server only over a veth pair, optionally IPv6-only or with UDP to the server dropped.

Needs root, iproute2 and iptables (``.ci/run`` installs them); tests skip otherwise.
Every namespace and rule is created by the test and removed afterwards (deleting the
namespace deletes its veth end, which deletes the pair and the host-side address).
Traffic only ever goes to addresses inside these namespaces and loopback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import attrs
import pytest


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def available() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 iptables)"
    return None


def require() -> None:
    why = available()
    if why:
        pytest.skip(why)


@attrs.define
class Namespace:
    name: str
    host_if: str
    """The host side of the veth pair (in the test's own namespace)."""
    host_ip4: str | None
    client_ip4: str | None
    host_ip6: str | None
    client_ip6: str | None

    @property
    def host_ip(self) -> str:
        """The server's address as the namespace sees it (IPv4 unless IPv6-only)."""
        ip = self.host_ip4 or self.host_ip6
        assert ip is not None
        return ip

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> str:
        return _run(*self.argv(*argv))

    def drop_udp_to_host(self) -> None:
        """Drop every UDP packet from the namespace to the server's addresses (a
        firewall that allows only TCP)."""
        if self.host_ip4:
            self.run("iptables", "-A", "OUTPUT", "-p", "udp", "-d", self.host_ip4, "-j", "DROP")
        if self.host_ip6:
            self.run("ip6tables", "-A", "OUTPUT", "-p", "udp", "-d", self.host_ip6, "-j", "DROP")

    def udp_dropped(self) -> int:
        """Packets the UDP drop rules have dropped so far (IPv4 and IPv6)."""
        total = 0
        for tool, ip in (("iptables", self.host_ip4), ("ip6tables", self.host_ip6)):
            if ip is None:
                continue
            for line in self.run(tool, "-L", "OUTPUT", "-v", "-n", "-x").splitlines():
                fields = line.split()
                # The protocol column reads "udp" or "17" depending on the version.
                if "DROP" in fields and ("udp" in fields or "17" in fields):
                    total += int(fields[0])
        return total


def _free_subnet() -> int:
    used = _run("ip", "-o", "addr")
    for _ in range(50):
        n = secrets.randbelow(250) + 2
        if f"10.213.{n}." not in used and f"fd13:{n:x}::" not in used:
            return n
    raise RuntimeError("no free 10.213.x.0/24 test subnet")


@contextlib.contextmanager
def namespace(*, ipv4: bool = True, ipv6: bool = False) -> Iterator[Namespace]:
    """A namespace joined to this one by a veth pair; yields its addresses."""
    require()
    tag = secrets.token_hex(3)
    name, host_if, ns_if = f"pysfu-{tag}", f"vh{tag}", f"vn{tag}"
    n = _free_subnet()
    ns = Namespace(
        name,
        host_if,
        f"10.213.{n}.1" if ipv4 else None,
        f"10.213.{n}.2" if ipv4 else None,
        f"fd13:{n:x}::1" if ipv6 else None,
        f"fd13:{n:x}::2" if ipv6 else None,
    )
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        if ipv4:
            _run("ip", "addr", "add", f"{ns.host_ip4}/24", "dev", host_if)
            ns.run("ip", "addr", "add", f"{ns.client_ip4}/24", "dev", ns_if)
        if ipv6:
            # nodad: usable at once instead of after duplicate address detection.
            _run("ip", "addr", "add", f"{ns.host_ip6}/64", "dev", host_if, "nodad")
            ns.run("ip", "addr", "add", f"{ns.client_ip6}/64", "dev", ns_if, "nodad")
        if not ipv4:
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0")
        _run("ip", "link", "set", host_if, "up")
        ns.run("ip", "link", "set", "lo", "up")
        ns.run("ip", "link", "set", ns_if, "up")
        yield ns
    finally:
        with contextlib.suppress(RuntimeError):
            _run("ip", "link", "del", host_if)
        _run("ip", "netns", "del", name)
