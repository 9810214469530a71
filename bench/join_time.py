"""Join time of the official Python SDK against pysfu and (optionally) livekit-server
in the same run: the median of ``Room.connect()`` (signal, JoinResponse, PeerConnection
connected) over N joins, each a fresh participant in the same room.

    python bench/join_time.py --joins 20 [--reference /path/to/livekit-server]

The reference runs with a generated config on loopback (free ports, the test key pair).
Numbers are loopback-only and machine-dependent: compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import yaml
from livekit import rtc

from pysfu.auth import VideoGrant, mint_token
from pysfu.testing import API_KEY, API_SECRET, make_config, start_server, stop_server


def _free(kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _token(identity: str) -> str:
    return mint_token(
        API_KEY, API_SECRET, identity=identity, grant=VideoGrant(room_join=True, room="bench")
    )


async def _measure(url: str, joins: int) -> list[float]:
    times = []
    for i in range(joins):
        room = rtc.Room()
        start = time.perf_counter()
        await room.connect(url, _token(f"p{i}"), rtc.RoomOptions(connect_timeout=15))
        times.append(time.perf_counter() - start)
        await room.disconnect()
    return times


def _reference(binary: str) -> tuple[str, Callable[[], None]]:
    port = _free()
    doc = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {"udp_port": _free(socket.SOCK_DGRAM), "tcp_port": _free(), "node_ip": "127.0.0.1"},
        "keys": {API_KEY: API_SECRET},
        "logging": {"level": "warn"},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f)
    proc = subprocess.Popen(
        [binary, "--config", f.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return f"ws://127.0.0.1:{port}", stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--reference", help="path to a livekit-server binary")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    running = start_server(make_config())
    try:
        results["pysfu"] = asyncio.run(_measure(running.url, args.joins))
    finally:
        stop_server(running)
    if args.reference:
        url, stop = _reference(args.reference)
        try:
            results["livekit-server"] = asyncio.run(_measure(url, args.joins))
        finally:
            stop()
    for name, times in results.items():
        ms = sorted(t * 1000 for t in times)
        median = statistics.median(ms)
        print(
            f"{name:15s} median {median:6.1f} ms  min {ms[0]:6.1f}  max {ms[-1]:6.1f}  n={len(ms)}"
        )


if __name__ == "__main__":
    main()
