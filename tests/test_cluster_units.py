"""The cluster's pure parts: the node selector and the node-to-node grant."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from pysfu.config import NodeSelectorConfig
from pysfu.runtime.cluster import grant
from pysfu.runtime.cluster.cluster_pb2 import DRAINING, SERVING, NodeInfo, NodeStats, RelayGrant
from pysfu.runtime.cluster.placement import select_node

KEYS = {"b-key": "b" * 32, "a-key": "a" * 32}


def _node(node_id: str, state: int = SERVING, **stats: float) -> NodeInfo:
    return NodeInfo(id=node_id, state=state, stats=NodeStats(**stats))  # type: ignore[arg-type]


def _pick(nodes: list[NodeInfo], seed: int = 0, **selector: object) -> str | None:
    chosen = select_node(nodes, NodeSelectorConfig(**selector), random.Random(seed))  # type: ignore[arg-type]
    return chosen.id if chosen is not None else None


def test_draining_nodes_take_no_rooms() -> None:
    nodes = [_node("a", DRAINING), _node("b")]
    assert {_pick(nodes, seed) for seed in range(20)} == {"b"}
    assert _pick([_node("a", DRAINING)]) is None
    assert _pick([]) is None


@pytest.mark.parametrize(
    ("sort_by", "field"),
    [("rooms", "rooms"), ("clients", "participants"), ("tracks", "tracks_in"),
     ("cpuload", "cpu_load"), ("sysload", "sys_load")],
)  # fmt: skip
def test_sort_by_picks_the_least_loaded(sort_by: str, field: str) -> None:
    nodes = [_node("a", **{field: 5}), _node("b", **{field: 1}), _node("c", **{field: 3})]
    assert {_pick(nodes, seed, sort_by=sort_by) for seed in range(20)} == {"b"}


def test_ties_and_random_spread_over_nodes() -> None:
    nodes = [_node("a", rooms=1), _node("b", rooms=1), _node("c", rooms=4)]
    assert {_pick(nodes, seed, sort_by="rooms") for seed in range(40)} == {"a", "b"}
    spread = Counter(_pick(nodes, seed) for seed in range(300))
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) > 50


def test_load_limits_filter_but_never_empty_the_cluster() -> None:
    nodes = [_node("busy", cpu_load=0.95), _node("idle", cpu_load=0.2)]
    assert {_pick(nodes, s, kind="cpuload", cpu_load_limit=0.9) for s in range(20)} == {"idle"}
    # Every node over the limit: still placed (as the reference), anywhere.
    hot = [_node("x", sys_load=2.0), _node("y", sys_load=3.0)]
    assert _pick(hot, kind="sysload", sysload_limit=0.9, sort_by="sysload") == "x"


def test_grant_verifies_for_its_addressee_only() -> None:
    value = grant.sign(KEYS, "ND_from", "ND_to")
    accepted = grant.verify(KEYS, value, "ND_to")
    assert accepted is not None and accepted.from_node == "ND_from"
    assert accepted.api_key == "a-key"  # the first key in sorted order signs
    assert grant.verify(KEYS, value, "ND_other") is None
    assert grant.verify({"a-key": "c" * 32}, value, "ND_to") is None  # another secret


@pytest.mark.parametrize("value", ["", ".", "a.b", "x" * 5000, "!!!.???", "a.b.c", "\u00e9.\u00e9"])
def test_malformed_grants_are_refused(value: str) -> None:
    assert grant.verify(KEYS, value, "ND_to") is None


def test_tampered_or_expired_grants_are_refused() -> None:
    body, mac = grant.sign(KEYS, "ND_from", "ND_to").split(".")
    raw = grant._unb64(body)
    forged = RelayGrant.FromString(raw)
    forged.to_node = "ND_evil"
    assert grant.verify(KEYS, f"{grant._b64(forged.SerializeToString())}.{mac}", "ND_evil") is None
    expired = RelayGrant(
        from_node="a", to_node="ND_to", api_key="a-key", expires_at_ms=int(time.time() * 1000) - 1
    ).SerializeToString()
    import hashlib
    import hmac

    tag = hmac.new(KEYS["a-key"].encode(), expired, hashlib.sha256).digest()
    assert grant.verify(KEYS, f"{grant._b64(expired)}.{grant._b64(tag)}", "ND_to") is None
