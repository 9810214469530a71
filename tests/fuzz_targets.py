"""The Python fuzz targets (``fuzz/python/fuzz_<name>.py``), listed once for the smoke
runs and the corpus replays."""

from __future__ import annotations

import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = [
    "signal",
    "jwt",
    "twirp",
    "config",
    "http",
    "agent",
    "cluster",
    "stun",
    "join_request",
    "turn",
]
