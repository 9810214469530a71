"""A network namespace a test makes for itself, joined to the host by a veth pair:
clients run inside it (``ip netns exec``) and reach the server at the host end's
address, and the test impairs the link (random loss, rate limits). Needs root,
iproute2 and nftables; tests skip otherwise. Only addresses inside the namespace
this makes are ever used.

Loss is made with nftables (``numgen random``) inside the namespace rather than
``tc netem``: kernels without the sch_netem module (containers) refuse netem, and
a random drop in the namespace's input and output hooks is the same impairment."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import attrs
import pytest

_counter = itertools.count()


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@attrs.frozen
class Netns:
    name: str
    host_ip: str
    """The host end of the veth (the server binds here)."""
    ns_ip: str
    host_dev: str
    ns_dev: str

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of UDP datagrams (media) each way, at random; 0 stops."""
        nft = [*self.exec_argv([]), "nft"]
        subprocess.run([*nft, "delete", "table", "inet", "loss"], capture_output=True, timeout=10)
        if not percent:
            return
        _run(*nft, "add", "table", "inet", "loss")
        for hook in ("input", "output"):
            chain = f"{{ type filter hook {hook} priority 0; }}"
            _run(*nft, "add", "chain", "inet", "loss", hook, chain)
            _run(
                *nft,
                "add",
                "rule",
                "inet",
                "loss",
                hook,
                "meta",
                "l4proto",
                "udp",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                str(percent),
                "drop",
            )

    def limit(self, rate: str, *, media_only: bool = False) -> None:
        """Limit what reaches the namespace to ``rate`` (``400kbit``) with a short
        queue, as a constrained downlink; an empty rate lifts the limit.

        ``media_only`` limits UDP (media) alone and lets TCP (signaling) through
        unlimited: on a link far below the lowest layer, the media flood that
        precedes the server's reaction drives the signal connection into TCP's
        exponential retransmission backoff, and a test about that reaction would
        then measure TCP's backoff instead."""
        dev = self.host_dev
        tc = ("tc", "-batch", "-")
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
        if not rate:
            return
        lines = [
            f"qdisc add dev {dev} root handle 1: htb default {20 if media_only else 10}",
            f"class add dev {dev} parent 1: classid 1:10 htb rate {rate} ceil {rate}",
            f"qdisc add dev {dev} parent 1:10 handle 10: pfifo limit 30",
        ]
        if media_only:
            lines += [
                f"class add dev {dev} parent 1: classid 1:20 htb rate 1gbit",
                f"filter add dev {dev} parent 1: protocol ip prio 1 u32"
                " match ip protocol 17 0xff flowid 1:10",
            ]
        subprocess.run(
            tc,
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=10,
        )

    def shape(self, spec: str) -> None:
        """Apply a ``tc`` root qdisc (``htb ...``) to both directions of the link; an
        empty spec removes shaping."""
        for prefix, dev in ((self.exec_argv([]), self.ns_dev), ([], self.host_dev)):
            subprocess.run(
                [*prefix, "tc", "qdisc", "del", "dev", dev, "root"],
                capture_output=True,
                timeout=10,
            )
            if spec:
                _run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", *spec.split())


def require_netns() -> None:
    tools = ("ip", "tc", "nft")
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in tools):
        pytest.skip("network namespaces need root, iproute2, tc and nftables")


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A fresh namespace with a /30 on a veth pair to the host; removed afterwards."""
    require_netns()
    n = next(_counter)
    tag = f"{os.getpid() % 10000}{n}"
    subnet = f"10.{200 + (os.getpid() % 50)}.{n % 250}"
    ns = Netns(
        name=f"pysfu-q{tag}",
        host_ip=f"{subnet}.1",
        ns_ip=f"{subnet}.2",
        host_dev=f"vq{tag}h",
        ns_dev=f"vq{tag}n",
    )
    _run("ip", "netns", "add", ns.name)
    try:
        _run("ip", "link", "add", ns.host_dev, "type", "veth", "peer", "name", ns.ns_dev)
        _run("ip", "link", "set", ns.ns_dev, "netns", ns.name)
        _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_dev)
        _run("ip", "link", "set", ns.host_dev, "up")
        inside = ns.exec_argv([])
        _run(*inside, "ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_dev)
        _run(*inside, "ip", "link", "set", ns.ns_dev, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_dev], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=10)


# ---- connectivity (issue 13): IPv4 and/or IPv6, UDP to the server dropped ------------------
#
# ``namespace()`` makes a /24 (10.254.x) and/or a /64 (fd13:x::) on a veth pair; the
# server binds a wildcard or the host end; ``drop_udp_to_host`` is a firewall that
# passes only TCP (iptables/ip6tables). Deleting the namespace deletes the pair.


def _out(*argv: str) -> str:
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
        return _out(*self.argv(*argv))

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
    used = _out("ip", "-o", "addr")
    for _ in range(50):
        n = secrets.randbelow(250) + 2
        if f"10.254.{n}." not in used and f"fd13:{n:x}::" not in used:
            return n
    raise RuntimeError("no free 10.254.x.0/24 test subnet")


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
        f"10.254.{n}.1" if ipv4 else None,
        f"10.254.{n}.2" if ipv4 else None,
        f"fd13:{n:x}::1" if ipv6 else None,
        f"fd13:{n:x}::2" if ipv6 else None,
    )
    _out("ip", "netns", "add", name)
    try:
        _out("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _out("ip", "link", "set", ns_if, "netns", name)
        if ipv4:
            _out("ip", "addr", "add", f"{ns.host_ip4}/24", "dev", host_if)
            ns.run("ip", "addr", "add", f"{ns.client_ip4}/24", "dev", ns_if)
        if ipv6:
            # nodad: usable at once instead of after duplicate address detection.
            _out("ip", "addr", "add", f"{ns.host_ip6}/64", "dev", host_if, "nodad")
            ns.run("ip", "addr", "add", f"{ns.client_ip6}/64", "dev", ns_if, "nodad")
        if not ipv4:
            ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0")
        _out("ip", "link", "set", host_if, "up")
        ns.run("ip", "link", "set", "lo", "up")
        ns.run("ip", "link", "set", ns_if, "up")
        yield ns
    finally:
        with contextlib.suppress(RuntimeError):
            _out("ip", "link", "del", host_if)
        _out("ip", "netns", "del", name)
