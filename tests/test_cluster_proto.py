"""The Python generated from proto/ is checked in; regenerating it must give the same
files (else someone changed a .proto without regenerating, or the reverse)."""

from __future__ import annotations

import pathlib

from pysfu.runtime.cluster import codegen
from pysfu.runtime.cluster.cluster_pb2 import NodeInfo, NodeStats, RoomPlacement


def test_generated_code_matches_proto(tmp_path: pathlib.Path) -> None:
    codegen.generate(tmp_path)
    for name in codegen.PROTOS:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            fresh = (tmp_path / f"{stem}{suffix}").read_text()
            checked_in = (codegen.OUT_DIR / f"{stem}{suffix}").read_text()
            assert fresh == checked_in, f"{stem}{suffix} is stale: python -m {codegen.__name__}"


def test_messages_round_trip() -> None:
    info = NodeInfo(id="ND_x", http_url="http://10.0.0.1:7880", stats=NodeStats(rooms=3))
    assert NodeInfo.FromString(info.SerializeToString()) == info
    assert (
        RoomPlacement.FromString(RoomPlacement(room="r", node_id="n").SerializeToString()).room
        == "r"
    )
