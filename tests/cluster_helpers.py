"""Clusters for tests: Debian's ``redis-server`` on a free loopback port, and pysfu
nodes sharing it (in-process, each in its own thread, or as ``pysfu serve``
subprocesses for tests that kill one)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pysfu.config import NodeSelectorConfig, RedisConfig
from pysfu.testing import API_KEY, API_SECRET, RunningServer, make_config, start_server, stop_server

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

needs_redis = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER), reason="redis-server not installed (apt install redis-server)"
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` without persistence, restartable on the same port."""

    def __init__(self, *, password: str = "") -> None:
        self.password = password
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pysfu-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    r = RedisProcess()
    try:
        yield r
    finally:
        r.close()


def node_config(redis: RedisProcess, **overrides: Any) -> Any:
    selector = overrides.pop("node_selector", NodeSelectorConfig())
    return make_config(
        redis=RedisConfig(address=redis.address), node_selector=selector, **overrides
    )


@contextlib.contextmanager
def cluster(redis: RedisProcess, n: int, **overrides: Any) -> Iterator[list[RunningServer]]:
    """``n`` in-process nodes sharing ``redis``, each listed in the registry."""
    nodes: list[RunningServer] = []
    try:
        for _ in range(n):
            nodes.append(start_server(node_config(redis, **overrides)))
        wait_views(nodes)
        yield nodes
    finally:
        for node in nodes:
            stop_server(node)


def node_ids(servers: list[RunningServer]) -> list[str]:
    return [s.server.manager.server.node_id for s in servers]


def wait_registered(redis: RedisProcess, n: int, timeout: float = 15) -> None:
    """Until ``n`` nodes are in the registry, and one more heartbeat (every node has
    then read the others)."""
    import redis as redis_py

    client = redis_py.Redis(host="127.0.0.1", port=redis.port, password=redis.password or None)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis_py.RedisError):
                if len(client.hkeys("pysfu:nodes")) >= n:
                    time.sleep(1.2)
                    return
            time.sleep(0.1)
    finally:
        client.close()
    raise AssertionError(f"fewer than {n} nodes registered")


def wait_views(nodes: list[RunningServer], timeout: float = 15) -> None:
    """Until every node's registry view holds all of ``nodes``."""
    ids = set(node_ids(nodes))

    def sees_all(node: RunningServer) -> bool:
        cluster = node.server.cluster
        assert cluster is not None
        return ids <= {n.id for n in cluster.live_nodes()}

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(node.call(sees_all, node) for node in nodes):
            return
        time.sleep(0.1)
    raise AssertionError("the nodes do not all see each other")


def wait_settled(nodes: list[RunningServer], timeout: float = 15) -> None:
    """Until every node places rooms again (after a registry reset)."""

    def settled(node: RunningServer) -> bool:
        assert node.server.cluster is not None
        return node.server.cluster.settled

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(node.call(settled, node) for node in nodes):
            return
        time.sleep(0.1)
    raise AssertionError("the nodes did not settle")


class NodeProcess:
    """A ``pysfu serve`` node in its own process (so a test can ``kill -9`` it)."""

    def __init__(self, redis: RedisProcess, *, extra_yaml: str = "") -> None:
        self.port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        body = textwrap.dedent(
            f"""
            port: {self.port}
            bind_addresses: ["127.0.0.1"]
            rtc: {{udp_port: {self.udp_port}, tcp_port: 0, node_ip: 127.0.0.1}}
            keys: {{{API_KEY}: {API_SECRET}}}
            redis: {{address: "{redis.address}"}}
            """
        ) + textwrap.dedent(extra_yaml)
        self.config_path = os.path.join(redis.dir, f"node-{self.port}.yaml")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(body)
        self.log_path = self.config_path + ".log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the node)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pysfu.cli", "serve", "--config", self.config_path],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"node did not start: {self.log()}")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
