"""Fuzz what a cluster node reads from outside: the node-to-node relay grant header
(raw strings, and correctly signed grants whose protobuf bytes come from the
fuzzer), the room a Twirp body names (routing reads it before the service does),
and registry entries and placements read back from Redis, fed to the selector.

Findings: any exception; a grant accepted without a valid signature, for another
node, or expired; a selected node that is not SERVING. Run:
``python fuzz/python/fuzz_cluster.py fuzz/corpus/cluster``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import sys
import time

from _common import Provider, instrumented, run

with instrumented("pysfu", "cluster"):
    from pysfu.api.cluster import ROOM_FIELD, _room_of_request
    from pysfu.config import NODE_SELECTOR_KINDS, NODE_SORT_BY, NodeSelectorConfig
    from pysfu.runtime.cluster import grant
    from pysfu.runtime.cluster.cluster_pb2 import SERVING, NodeInfo, RelayGrant
    from pysfu.runtime.cluster.node import _decode_placement
    from pysfu.runtime.cluster.placement import select_node

KEYS = {"key": "k" * 32, "other": "o" * 32}
NODE = "ND_me"
PATHS = sorted(ROOM_FIELD)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_grant(p: Provider) -> None:
    raw = p.take(p.int_in(0, 300))
    # Arbitrary text as the header value.
    assert grant.verify(KEYS, raw.decode("utf-8", "replace"), NODE) is None or raw.count(b".") == 1
    # Fuzzed grant bytes, correctly signed with a configured secret, or not.
    secret = p.pick([KEYS["key"], KEYS["other"], "wrong" * 8])
    mac = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
    value = f"{_b64(raw)}.{_b64(mac)}"
    accepted = grant.verify(KEYS, value, NODE)
    if accepted is not None:
        parsed = RelayGrant.FromString(raw)
        assert KEYS.get(parsed.api_key) == secret, "grant accepted with the wrong secret"
        assert parsed.to_node == NODE, "grant for another node accepted"
        assert parsed.expires_at_ms >= time.time() * 1000 - 1000, "expired grant accepted"
    # A grant this node signs verifies, for its addressee only.
    good = grant.sign(KEYS, "ND_other", NODE)
    assert grant.verify(KEYS, good, NODE) is not None
    assert grant.verify(KEYS, good, "ND_third") is None


def check_twirp_body(p: Provider) -> None:
    path = p.pick(PATHS)
    content_type = p.pick(["application/json", "application/protobuf", ""])
    room = _room_of_request(path, {"content-type": content_type}, p.take(p.int_in(0, 400)))
    assert room is None or (isinstance(room, str) and room)


def check_registry(p: Provider) -> None:
    nodes = []
    for _ in range(p.int_in(0, 5)):
        info = NodeInfo()
        try:
            info.ParseFromString(p.take(p.int_in(0, 80)))
        except Exception:
            continue  # the node drops unreadable entries (DecodeError)
        nodes.append(info)
    _decode_placement(p.take(p.int_in(0, 40)))
    selector = NodeSelectorConfig(
        kind=p.pick(sorted(NODE_SELECTOR_KINDS)),
        sort_by=p.pick(sorted(NODE_SORT_BY)),
        cpu_load_limit=p.int_in(1, 100) / 50,
        sysload_limit=p.int_in(1, 100) / 50,
    )
    chosen = select_node(nodes, selector, random.Random(p.byte()))
    assert chosen is None or chosen.state == SERVING
    assert chosen is not None or not any(n.state == SERVING for n in nodes)


def test_one_input(data: bytes) -> None:
    p = Provider(data)
    check = p.pick([check_grant, check_twirp_body, check_registry])
    check(p)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
