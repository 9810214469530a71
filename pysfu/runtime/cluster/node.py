"""This node's membership of a cluster of pysfu nodes sharing one Redis (livekit's
``pkg/routing``): registry, heartbeats with load, and room placement.

- Every :data:`HEARTBEAT_INTERVAL_S` the node writes its :class:`NodeInfo` (address,
  state, load) into ``pysfu:nodes`` and reads everyone else's. A node whose last
  heartbeat is older than :data:`NODE_TIMEOUT_S` is dead: it is dropped from the
  registry and its rooms may be placed elsewhere.
- A room lives on one node, named by its placement record ``pysfu:room:<name>``. The
  first join (or CreateRoom) of a room picks a node with the selector
  (pysfu.runtime.cluster.placement) and sets the record only if absent, so
  concurrent first joins on different nodes agree. A record naming a dead node is
  replaced by compare-and-set: clients that reconnect re-create the room there.
- The node re-asserts the records of its own rooms on every heartbeat (set if
  absent, so a Redis that restarted empty learns them again; expiry refreshed), and
  deletes a record when its room closes. A record nobody refreshes (its room never
  came to be) expires after 30 s.

Media of a room stays on its node: signaling accepted elsewhere is relayed there
(pysfu.runtime.cluster.relay), so the client's ICE candidates are the owner's.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import time
from collections.abc import Callable

import psutil  # type: ignore[import-untyped, unused-ignore]
import trio
from livekit.protocol import webhook

from ...config import NodeSelectorConfig, RedisConfig
from ...errors import PysfuError
from ..manager import RoomManager
from .cluster_pb2 import DRAINING, SERVING, NodeInfo, NodeState, NodeStats, RoomPlacement
from .placement import select_node
from .redis_bridge import RedisBridge, RedisUnavailable

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
NODE_TIMEOUT_S = 4.0
"""A node silent this long is dead (four missed heartbeats)."""

SETTLE_S = 2.5 * HEARTBEAT_INTERVAL_S
"""After Redis lost its data (restart) or this node lost Redis, new rooms wait this
long: every node re-asserts its rooms' placements first, so that a join elsewhere
does not place an existing room a second time."""

PLACEMENT_RETRIES = 5
"""Attempts at placing a room while other nodes race to place it too."""


class NoNodeAvailable(PysfuError):
    """No live node takes new rooms (all draining), or Redis cannot be reached."""


def new_node_id() -> str:
    return "ND_" + secrets.token_hex(6)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ClusterNode:
    """One node's view of the cluster; all methods run in the server's Trio thread."""

    def __init__(
        self,
        redis: RedisConfig,
        manager: RoomManager,
        *,
        node_id: str,
        version: str,
        selector: NodeSelectorConfig,
        engine_stats: Callable[[], dict[str, int]] = dict,
        rng: random.Random | None = None,
    ) -> None:
        self.id = node_id
        self.manager = manager
        self.bridge = RedisBridge(redis)
        self.selector = selector
        self.version = version
        self.http_url = ""
        """Where other nodes reach this one (set when the server listens)."""
        self.state: NodeState = SERVING
        self._engine_stats = engine_stats
        self._rng = rng or random.Random()
        self._started_at_ms = _now_ms()
        self._nodes: dict[str, NodeInfo] = {}
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # primes the interval measurement
        self._hosted: set[str] = set()
        """Rooms this node has hosted whose placement it has not released yet."""
        self._registered = trio.Event()
        self._wake = trio.Event()
        self._failing = False
        self._epoch: str | None = None
        self._settle_until = 0.0
        """Trio time before which no room is placed anew (see SETTLE_S)."""

    # ---- lifetime -------------------------------------------------------------------------

    async def run(
        self, http_url: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.http_url = http_url
        with self.manager.events() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeats)
                nursery.start_soon(self._watch_rooms, events)
                # Listed before the first request is routed (or after a bounded wait
                # when Redis is down: routing then answers 503 until it is back).
                with trio.move_on_after(5):
                    await self._registered.wait()
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await self._leave()

    async def _leave(self) -> None:
        try:
            await self.bridge.remove_node(self.id)
            for room in list(self._hosted):
                await self._release(room)
            await self.bridge.aclose()
        except RedisUnavailable as exc:
            log.warning("could not leave the cluster registry: %s", exc)

    def drain(self) -> None:
        """Take no new rooms (others see DRAINING at once); existing ones stay."""
        self.state = DRAINING
        self._wake.set()

    async def _heartbeats(self) -> None:
        while True:
            try:
                if self._failing:
                    self._settle_until = trio.current_time() + SETTLE_S
                await self.heartbeat()
                if self._failing:
                    log.info("cluster registry reachable again")
                self._failing = False
                self._registered.set()
            except RedisUnavailable as exc:
                if not self._failing:
                    log.warning("cluster registry unreachable: %s", exc)
                self._failing = True
            with trio.move_on_after(HEARTBEAT_INTERVAL_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def heartbeat(self) -> None:
        """Re-assert the placements of the rooms here, publish this node's info,
        refresh the view of the others."""
        epoch = await self.bridge.epoch(secrets.token_hex(8))
        if self._epoch is not None and epoch != self._epoch:
            log.warning("the cluster registry was reset; re-asserting this node's rooms")
            self._settle_until = trio.current_time() + SETTLE_S
        self._epoch = epoch
        # Placements first: once others see this node listed, its rooms are placed
        # (after a Redis restart, a join elsewhere must not re-place them first).
        await self.bridge.assert_rooms(
            {room.name: self._placement(room.name) for room in self.manager.rooms},
            lambda raw: _decode_placement(raw).node_id == self.id,
            # A draining node only keeps what it has: a room it is moving away must
            # not be claimed back by a heartbeat that read the rooms before the move.
            claim=self.state != DRAINING,
        )
        info = self.info()
        await self.bridge.put_node(self.id, info.SerializeToString())
        now = _now_ms()
        live: dict[str, NodeInfo] = {}
        for node_id, raw in (await self.bridge.nodes()).items():
            other = NodeInfo()
            try:
                other.ParseFromString(raw)
            except Exception:
                log.warning("unreadable registry entry for %s dropped", node_id)
                await self.bridge.remove_node(node_id)
                continue
            if now - other.updated_at_ms > NODE_TIMEOUT_S * 1000:
                log.info("node %s stopped heartbeating; dropping it", node_id)
                await self.bridge.remove_node(node_id)
                continue
            live[node_id] = other
        live[self.id] = info
        self._nodes = live

    def info(self) -> NodeInfo:
        rooms = self.manager.rooms
        engine = self._engine_stats()
        cpus = os.cpu_count() or 1
        return NodeInfo(
            id=self.id,
            http_url=self.http_url,
            version=self.version,
            state=self.state,
            started_at_ms=self._started_at_ms,
            updated_at_ms=_now_ms(),
            stats=NodeStats(
                rooms=len(rooms),
                participants=sum(len(r.participants) for r in rooms),
                tracks_in=sum(len(p.publications) for r in rooms for p in r.participants.values()),
                packets_in=engine.get("packets_in", 0),
                packets_out=engine.get("packets_out", 0),
                bytes_in=engine.get("bytes_in", 0),
                bytes_out=engine.get("bytes_out", 0),
                cpu_load=self._process.cpu_percent(None) / 100 / cpus,
                num_cpus=cpus,
                sys_load=os.getloadavg()[0] / cpus,
            ),
        )

    async def _watch_rooms(self, events: trio.MemoryReceiveChannel[webhook.WebhookEvent]) -> None:
        async for event in events:
            if event.event == "room_started":
                self._hosted.add(event.room.name)
            elif event.event == "room_finished":
                try:
                    await self._release(event.room.name)
                except RedisUnavailable as exc:
                    log.warning("could not release room %s: %s", event.room.name, exc)

    async def release_all(self) -> None:
        """Delete the placements of every room here (they are about to move)."""
        self._hosted.update(r.name for r in self.manager.rooms)
        for name in list(self._hosted):
            raw = await self.bridge.placement(name)
            if raw is not None and _decode_placement(raw).node_id == self.id:
                await self.bridge.release(name, raw)
        self._hosted.clear()

    async def _release(self, room: str) -> None:
        if self.manager.room(room) is not None:
            return  # re-created since
        self._hosted.discard(room)
        raw = await self.bridge.placement(room)
        if raw is not None and _decode_placement(raw).node_id == self.id:
            await self.bridge.release(room, raw)

    # ---- the registry ---------------------------------------------------------------------

    def live_nodes(self) -> list[NodeInfo]:
        """Nodes heard from within the timeout (this one included), as of the last
        heartbeat."""
        now = _now_ms()
        nodes = [
            n
            for n in self._nodes.values()
            if n.id == self.id or now - n.updated_at_ms <= NODE_TIMEOUT_S * 1000
        ]
        if not any(n.id == self.id for n in nodes):
            nodes.append(self.info())
        return nodes

    @property
    def settled(self) -> bool:
        """Whether new rooms may be placed (not just after a registry reset)."""
        return (
            self._registered.is_set()
            and not self._failing
            and trio.current_time() >= self._settle_until
        )

    def node(self, node_id: str) -> NodeInfo | None:
        return next((n for n in self.live_nodes() if n.id == node_id), None)

    # ---- placement ------------------------------------------------------------------------

    def _placement(self, room: str, node_id: str | None = None) -> bytes:
        return RoomPlacement(
            room=room, node_id=node_id or self.id, placed_at_ms=_now_ms()
        ).SerializeToString()

    async def owner(self, room: str, *, create: bool) -> NodeInfo | None:
        """The node hosting ``room``, or None when that is this node (or, without
        ``create``, when no live node hosts it: the caller answers as for a room
        that does not exist). With ``create`` a room without a live node is placed
        by the selector. Raises NoNodeAvailable."""
        try:
            return await self._owner(room, create=create)
        except RedisUnavailable as exc:
            raise NoNodeAvailable(f"cluster registry unavailable: {exc}") from None

    async def _owner(self, room: str, *, create: bool) -> NodeInfo | None:
        for _ in range(PLACEMENT_RETRIES):
            raw = await self.bridge.placement(room)
            if raw is not None:
                placed = _decode_placement(raw)
                moving = (
                    placed.node_id == self.id
                    and self.state == DRAINING
                    and self.manager.room(room) is None
                )
                if placed.node_id == self.id and not (moving and create):
                    return None
                node = None if moving else self.node(placed.node_id)
                if node is not None:
                    return node
                if not create:
                    return None
                log.info("room %s was on %s, which is gone; placing it anew", room, placed.node_id)
            elif not create:
                return None
            if not self.settled and self.manager.room(room) is None:
                raise NoNodeAvailable("the cluster registry is recovering; retry")
            if self.manager.room(room) is not None:
                chosen: NodeInfo | None = self.info()  # already here: keep it here
            else:
                chosen = select_node(self.live_nodes(), self.selector, self._rng)
            if chosen is None:
                raise NoNodeAvailable("no node takes new rooms")
            value = self._placement(room, chosen.id)
            won = (
                await self.bridge.claim(room, value)
                if raw is None
                else await self.bridge.replace(room, raw, value)
            )
            if won:
                log.info("room %s placed on %s", room, chosen.id)
                if chosen.id in self._nodes:
                    # Until its next heartbeat says so, count the room there: rooms
                    # placed in a burst spread by the selector rather than pile up.
                    self._nodes[chosen.id].stats.rooms += 1
                return None if chosen.id == self.id else chosen
            # Another node placed it meanwhile: read its choice.
        raise NoNodeAvailable(f"could not place room {room!r}")


def _decode_placement(raw: bytes) -> RoomPlacement:
    placed = RoomPlacement()
    try:
        placed.ParseFromString(raw)
    except Exception:
        log.warning("unreadable placement record ignored")
        return RoomPlacement()
    return placed
