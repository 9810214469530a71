"""Which node a new room goes to: livekit-server's node selector, as a pure function.

``kind`` filters the live nodes that take new rooms (state SERVING): ``any`` keeps all,
``cpuload`` / ``sysload`` keep those under the limit (all of them when none is, as
the reference, so that a loaded cluster still places rooms). ``sort_by`` then picks:
``random``, or the node with the least ``cpuload``, ``sysload``, ``rooms``,
``clients`` (participants) or ``tracks``; ties are broken at random, so that nodes
with equal load share new rooms.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ...config import NodeSelectorConfig
from .cluster_pb2 import SERVING, NodeInfo

_LOAD: dict[str, Callable[[NodeInfo], float]] = {
    "cpuload": lambda n: n.stats.cpu_load,
    "sysload": lambda n: n.stats.sys_load,
    "rooms": lambda n: n.stats.rooms,
    "clients": lambda n: n.stats.participants,
    "tracks": lambda n: n.stats.tracks_in,
}


def select_node(
    nodes: Sequence[NodeInfo], selector: NodeSelectorConfig, rng: random.Random
) -> NodeInfo | None:
    """The node a new room should go to, or None when no node takes new rooms."""
    serving = [n for n in nodes if n.state == SERVING]
    if selector.kind == "cpuload":
        under = [n for n in serving if n.stats.cpu_load < selector.cpu_load_limit]
        serving = under or serving
    elif selector.kind == "sysload":
        under = [n for n in serving if n.stats.sys_load < selector.sysload_limit]
        serving = under or serving
    if not serving:
        return None
    load = _LOAD.get(selector.sort_by)
    if load is None:
        return rng.choice(serving)
    least = min(load(n) for n in serving)
    return rng.choice([n for n in serving if load(n) == least])
