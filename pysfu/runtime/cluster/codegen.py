"""Regenerate the checked-in Python for ``proto/`` (``python -m
pysfu.runtime.cluster.codegen``), with grpcio-tools' bundled protoc (a test
dependency, pinned so that the output is reproducible); tests/test_cluster_proto.py
checks the checked-in files match."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "proto"
OUT_DIR = pathlib.Path(__file__).resolve().parent
PROTOS = ("cluster.proto",)


def generate(out_dir: pathlib.Path) -> None:
    """Write ``<name>_pb2.py`` and ``<name>_pb2.pyi`` for every proto into ``out_dir``."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    for name in PROTOS:
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                str(PROTO_DIR / name),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {name} ({code})")


if __name__ == "__main__":
    generate(OUT_DIR)
    sys.exit(0)
