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

    def limit(self, rate: str) -> None:
        """Limit what reaches the namespace to ``rate`` (``400kbit``) with a short
        queue, as a constrained downlink; an empty rate lifts the limit."""
        dev = self.host_dev
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
        if not rate:
            return
        _run("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10")
        _run(
            "tc",
            "class",
            "add",
            "dev",
            dev,
            "parent",
            "1:",
            "classid",
            "1:10",
            "htb",
            "rate",
            rate,
            "ceil",
            rate,
        )
        _run(
            "tc",
            "qdisc",
            "add",
            "dev",
            dev,
            "parent",
            "1:10",
            "handle",
            "10:",
            "pfifo",
            "limit",
            "30",
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
