"""The cluster's Redis, used from Trio: redis-py's synchronous client, each call run
in a worker thread (``trio.to_thread``).

Why redis-py: it is Redis' own, well kept, typed, and has Sentinel and Cluster
clients; the Trio-native clients on PyPI (redtrio, redio) have not been released
since 2022, and coredis targets asyncio/anyio. A Redis call here is small and rare
(a heartbeat a second, a lookup per join or API call), so a thread per call costs
nothing that matters, and a Redis that hangs blocks a worker thread, never the event
loop. Every call has a socket timeout; errors surface as :class:`RedisUnavailable`.

Keys (all under ``pysfu:``)::

    pysfu:nodes             hash   node id -> NodeInfo (protobuf)
    pysfu:room:<name>       string RoomPlacement (protobuf): the room's node; expires
                                   unless that node refreshes it
    pysfu:epoch             string changes when Redis lost its data
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.backoff
import redis.cluster
import redis.retry
import redis.sentinel
import trio

from ...config import RedisConfig
from ...errors import PysfuError

log = logging.getLogger(__name__)

T = TypeVar("T")

NODES_KEY = "pysfu:nodes"
EPOCH_KEY = "pysfu:epoch"
ROOM_KEY_PREFIX = "pysfu:room:"

SOCKET_TIMEOUT_S = 2.0
"""Longest a Redis call may take before it counts as failed."""

PLACEMENT_TTL_S = 30.0
"""A placement expires unless its room's node refreshes it (every heartbeat): one
made for a room that never came to be (a refused join) does not linger."""

_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisUnavailable(PysfuError):
    """Redis could not be reached or answered with an error."""


def room_key(room: str) -> str:
    return ROOM_KEY_PREFIX + room


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def make_client(config: RedisConfig) -> Any:
    """A redis-py client for ``config``: plain, Sentinel (master) or Cluster."""
    common: dict[str, Any] = {
        # No retries inside redis-py (its default retries with backoff for seconds):
        # a failed call fails at once and the heartbeat loop tries again, so the
        # order of a heartbeat's writes holds (placements before the node's entry).
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "username": config.username or None,
        "password": config.password or None,
    }
    if config.cluster_addresses:
        nodes = [
            redis.cluster.ClusterNode(*_split(a))  # type: ignore[no-untyped-call]
            for a in config.cluster_addresses
        ]
        return redis.cluster.RedisCluster(startup_nodes=nodes, ssl=config.use_tls, **common)
    if config.sentinel_addresses:
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [_split(a) for a in config.sentinel_addresses],
            sentinel_kwargs={
                "username": config.sentinel_username or None,
                "password": config.sentinel_password or None,
                "socket_timeout": SOCKET_TIMEOUT_S,
            },
            ssl=config.use_tls,
            **common,
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            config.sentinel_master_name, db=config.db
        )
    host, port = _split(config.address)
    return redis.Redis(
        host=host, port=port, db=config.db, ssl=config.use_tls, health_check_interval=5, **common
    )


class RedisBridge:
    """The few Redis operations the cluster needs, each awaited from Trio."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._client = make_client(config)
        self._cas = self._client.register_script(_COMPARE_AND_SET)
        self._cad = self._client.register_script(_COMPARE_AND_DELETE)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        call = functools.partial(self._guarded, fn, *args)
        # abandon_on_cancel: a cancelled caller must not wait out a hung Redis.
        return await trio.to_thread.run_sync(call, abandon_on_cancel=True)

    @staticmethod
    def _guarded(fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise RedisUnavailable(f"redis: {exc}") from exc

    # ---- nodes ------------------------------------------------------------------------

    async def put_node(self, node_id: str, info: bytes) -> None:
        await self._run(self._client.hset, NODES_KEY, node_id, info)

    async def nodes(self) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await self._run(self._client.hgetall, NODES_KEY)
        return {k.decode(): v for k, v in raw.items()}

    async def remove_node(self, node_id: str) -> None:
        await self._run(self._client.hdel, NODES_KEY, node_id)

    async def epoch(self, candidate: str) -> str:
        """The registry's epoch, set to ``candidate`` if it has none: a Redis that
        restarted empty has a new one."""

        def run() -> bytes:
            self._client.set(EPOCH_KEY, candidate, nx=True)
            value: bytes = self._client.get(EPOCH_KEY)
            return value

        return (await self._run(run)).decode()

    # ---- room placements ------------------------------------------------------------------

    async def placement(self, room: str) -> bytes | None:
        value: bytes | None = await self._run(self._client.get, room_key(room))
        return value

    async def claim(self, room: str, value: bytes) -> bool:
        """Set the room's placement if it has none; True if this call set it."""
        ttl_ms = int(PLACEMENT_TTL_S * 1000)
        claim = functools.partial(self._client.set, nx=True, px=ttl_ms)
        done = await self._run(claim, room_key(room), value)
        return bool(done)

    async def assert_rooms(
        self, values: dict[str, bytes], mine: Callable[[bytes], bool], *, claim: bool = True
    ) -> None:
        """For the rooms a node hosts: claim those without a placement (Redis lost
        them; unless not ``claim``), and refresh the expiry of those whose placement
        ``mine`` accepts; a few pipelined round trips in all."""
        ttl_ms = int(PLACEMENT_TTL_S * 1000)

        def run() -> None:
            rooms = list(values)
            pipe = self._client.pipeline(transaction=False)
            if claim:
                for room in rooms:
                    pipe.set(room_key(room), values[room], nx=True, px=ttl_ms)
                pipe.execute()
            for room in rooms:
                pipe.get(room_key(room))
            current: list[bytes | None] = pipe.execute()
            for room, value in zip(rooms, current, strict=True):
                if value is not None and mine(value):
                    pipe.pexpire(room_key(room), ttl_ms)
            pipe.execute()

        if values:
            await self._run(run)

    async def replace(self, room: str, old: bytes, new: bytes) -> bool:
        """Set the placement to ``new`` only if it still is ``old``."""
        args = [old, new, int(PLACEMENT_TTL_S * 1000)]
        done = await self._run(functools.partial(self._cas, keys=[room_key(room)], args=args))
        return bool(done)

    async def release(self, room: str, old: bytes) -> None:
        """Delete the placement only if it still is ``old``."""
        await self._run(functools.partial(self._cad, keys=[room_key(room)], args=[old]))

    async def aclose(self) -> None:
        await self._run(self._client.close)
