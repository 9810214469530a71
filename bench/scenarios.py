"""Load-test scenarios, run against any LiveKit-compatible server binary.

    python bench/scenarios.py --server pysfu                      # all scenarios
    python bench/scenarios.py --server ref --scenario audio       # the Go reference server
    python bench/scenarios.py --server pysfu --scenario livestream --steps 50,100

Each step starts a fresh server process pinned to one core (``--server-cpu``),
runs ``pysfu loadtest``'s engine (``run_loadtest``) pinned to the other core, stops
the server and records the figures. A scenario stops climbing at the first step
that loses 1% or more of its packets or fails to join everyone. Results go to
``bench/results/<server>-<scenario>.json`` and a Markdown table on stdout.

The reference server is built outside the repository (see bench/README.md); point
``--ref-binary``/``--ref-config`` at it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from pysfu.loadtest import LoadPlan, LoadReport, run_loadtest

RESULTS = Path(__file__).parent / "results"
PYSFU_CONFIG = Path(__file__).parent / "pysfu.yaml"
PORTS = {"pysfu": 7880, "ref": 7890}


@attrs.frozen
class Scenario:
    """A room layout; ``steps`` are subscriber counts per room."""

    name: str
    rooms: int
    publishers: int
    audio: bool
    video: bool
    steps: tuple[int, ...]
    audio_kbps: int = 32
    video_kbps: int = 1200


# Shapes of the reference server's published benchmark (audio-only room, large
# video meeting, one-to-many livestream), scaled to a 2-core machine that also
# runs the load generator.
SCENARIOS = {
    "audio": Scenario(
        "audio",
        rooms=1,
        publishers=10,
        audio=True,
        video=False,
        steps=(25, 50, 100, 150, 200, 250, 300, 400),
    ),
    "meeting": Scenario(
        "meeting",
        rooms=1,
        publishers=4,
        audio=True,
        video=True,
        steps=(10, 25, 50, 75, 100, 125, 150, 200, 250),
    ),
    "livestream": Scenario(
        "livestream",
        rooms=1,
        publishers=1,
        audio=True,
        video=True,
        steps=(50, 100, 200, 300, 400, 500, 600, 800),
    ),
    "idle": Scenario("idle", rooms=10, publishers=0, audio=True, video=False, steps=(20,)),
}


def server_command(args: argparse.Namespace) -> list[str]:
    if args.server == "pysfu":
        return [
            sys.executable,
            "-c",
            "from pysfu.cli import main; main()",
            "serve",
            "--config",
            str(PYSFU_CONFIG),
        ]
    return [args.ref_binary, "--config", args.ref_config]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not start listening")


def run_step(args: argparse.Namespace, scenario: Scenario, subscribers: int) -> LoadReport:
    cmd = ["taskset", "-c", str(args.server_cpu), *server_command(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = PORTS[args.server]
        wait_listening(port, proc)
        time.sleep(1.0)  # let start-up allocation settle before the memory baseline
        plan = LoadPlan(
            url=f"ws://127.0.0.1:{port}",
            rooms=scenario.rooms,
            publishers=scenario.publishers,
            subscribers=subscribers,
            audio=scenario.audio,
            video=scenario.video,
            audio_kbps=scenario.audio_kbps,
            video_kbps=scenario.video_kbps,
            duration_s=args.duration,
            ramp_up_s=args.ramp_up,
            server_pid=proc.pid,
        )
        return trio.run(run_loadtest, plan)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def row(server: str, scenario: Scenario, subscribers: int, r: LoadReport) -> dict[str, object]:
    s = r.server
    return {
        "server": server,
        "scenario": scenario.name,
        "rooms": scenario.rooms,
        "publishers": scenario.publishers,
        "subscribers": subscribers,
        "joined": r.joined,
        "participants": r.participants,
        "forwarded_pps": round(r.packets_received_per_s),
        "loss_pct": None if r.loss_pct is None else round(r.loss_pct, 3),
        "latency_p50_ms": r.latency_ms.p50 if r.latency_ms else None,
        "latency_p95_ms": r.latency_ms.p95 if r.latency_ms else None,
        "latency_p99_ms": r.latency_ms.p99 if r.latency_ms else None,
        "join_p50_ms": r.join_ms.p50 if r.join_ms else None,
        "first_media_p50_ms": r.first_media_ms.p50 if r.first_media_ms else None,
        "first_media_p95_ms": r.first_media_ms.p95 if r.first_media_ms else None,
        "server_cpu_pct": s.cpu_pct if s else None,
        "generator_cpu_pct": r.generator_cpu_pct,
        "pkts_per_cpu_s": round(s.packets_per_cpu_s) if s and s.packets_per_cpu_s else None,
        "us_cpu_per_pkt": round(1e6 / s.packets_per_cpu_s, 2)
        if s and s.packets_per_cpu_s
        else None,
        "kb_per_participant": round(s.memory_per_participant_bytes / 1024, 1)
        if s and s.memory_per_participant_bytes is not None
        else None,
    }


COLUMNS = (
    "server",
    "scenario",
    "publishers",
    "subscribers",
    "forwarded_pps",
    "loss_pct",
    "latency_p50_ms",
    "latency_p99_ms",
    "first_media_p95_ms",
    "server_cpu_pct",
    "generator_cpu_pct",
    "us_cpu_per_pkt",
    "kb_per_participant",
)


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "-" if v is None else str(v)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=("pysfu", "ref"), required=True)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--steps", help="comma-separated subscriber counts (override)")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--ramp-up", type=float, default=5.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--loadgen-cpu", type=int, default=1)
    parser.add_argument("--ref-binary", default="/work/ref/livekit-server")
    parser.add_argument("--ref-config", default="/work/ref/livekit.yaml")
    args = parser.parse_args(argv)

    os.sched_setaffinity(0, {args.loadgen_cpu})
    RESULTS.mkdir(exist_ok=True)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for name in args.scenario or ["audio", "meeting", "livestream", "idle"]:
        scenario = SCENARIOS[name]
        steps = tuple(int(s) for s in args.steps.split(",")) if args.steps else scenario.steps
        rows = []
        for subscribers in steps:
            report = run_step(args, scenario, subscribers)
            if scenario.publishers and not report.packets_sent:
                # The publishers never got media going (a failed set-up, not a load
                # figure): run the step once more and keep that.
                print(f"<!-- {name} {subscribers}: nothing was sent; rerun -->", flush=True)
                report = run_step(args, scenario, subscribers)
            r = row(args.server, scenario, subscribers, report)
            rows.append(r)
            print("| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |", flush=True)
            loss = report.loss_pct
            if not report.all_joined or (loss is not None and loss >= 1.0):
                break
        (RESULTS / f"{args.server}-{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
