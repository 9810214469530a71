"""Side-by-side reading of ``bench/results``: pysfu against the reference server.

    python bench/compare.py                                # per core, pysfu's generator
    python bench/compare.py --framing machine              # bench/results/machine-pysfu
    python bench/compare.py --framing core --generator lk  # bench/results/core-lk

Reads the rows ``scenarios.py`` wrote for both servers and prints, per scenario, the
largest load each held, the CPU each paid per forwarded packet at the largest load both
held, and the latency at half of each one's maximum. A step is *held* when it lost
under 1 % of its packets, everyone joined, the median forwarding latency stayed under
50 ms (a server that queues for seconds loses nothing yet serves no one), and it
delivered at least 95 % of the per-subscriber packet rate of the scenario's smallest
step (loss is counted against what publishers sent, so a publisher that never started
would otherwise go unnoticed). Rows from ``lk load-test`` have no latency; for them a
held step also has every subscriber on every track it expected, and the delivery check
uses lk's received bitrate per subscriber.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
MEDIA_SCENARIOS = ("audio", "meeting", "livestream")
HELD_LOSS_PCT = 1.0
HELD_LATENCY_P50_MS = 50.0
HELD_DELIVERY = 0.95

Row = dict[str, Any]


def results_dir(framing: str, generator: str, root: Path = RESULTS) -> Path:
    """Where scenarios.py writes a framing and generator's rows (scenario_plan.py)."""
    if framing == "core" and generator == "pysfu":
        return root
    return root / f"{framing}-{generator}"


def load(server: str, scenario: str, where: Path = RESULTS) -> list[Row]:
    path = where / f"{server}-{scenario}.json"
    rows: list[Row] = json.loads(path.read_text()) if path.exists() else []
    return rows


def from_lk(row: Row) -> bool:
    return row.get("generator") == "lk"


def delivered(row: Row) -> float:
    """Per subscriber: packets/s (pysfu's generator) or received kbit/s (lk)."""
    if from_lk(row):
        return float(row.get("kbps_per_subscriber") or 0.0)
    return float(row["forwarded_pps"]) / float(row["subscribers"])


def held(row: Row, rows: Sequence[Row]) -> bool:
    loss, p50 = row.get("loss_pct"), row.get("latency_p50_ms")
    first = delivered(min(rows, key=lambda r: r["subscribers"]))
    if not (
        row.get("joined") == row.get("participants")
        and loss is not None
        and loss < HELD_LOSS_PCT
        and delivered(row) >= HELD_DELIVERY * first
    ):
        return False
    if from_lk(row):
        return bool(row.get("tracks_subscribed") == row.get("tracks_expected"))
    return p50 is not None and p50 < HELD_LATENCY_P50_MS


def max_held(rows: Sequence[Row]) -> Row | None:
    """The last held step before the first one that was not."""
    best = None
    for row in sorted(rows, key=lambda r: r["subscribers"]):
        if not held(row, rows):
            break
        best = row
    return best


def at(rows: Sequence[Row], subscribers: int) -> Row | None:
    return next((r for r in rows if r["subscribers"] == subscribers), None)


def near_half(rows: Sequence[Row], top: Row) -> Row | None:
    """The held step closest to half of ``top``'s subscribers."""
    candidates = [r for r in rows if held(r, rows) and r["subscribers"] <= top["subscribers"]]
    if not candidates:
        return None
    return min(candidates, key=lambda r: abs(r["subscribers"] - top["subscribers"] / 2))


def fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def scenario_rows(name: str, where: Path = RESULTS) -> list[str]:
    ours, ref = load("pysfu", name, where), load("ref", name, where)
    top_ours, top_ref = max_held(ours), max_held(ref)
    lines = [f"### {name}", ""]
    if top_ours is None or top_ref is None:
        return [*lines, "(results missing for one of the servers)", ""]
    lines += [
        "| | pysfu | reference | pysfu / reference |",
        "|---|---:|---:|---:|",
        f"| largest load held (subscribers) | {top_ours['subscribers']} |"
        f" {top_ref['subscribers']} | {ratio(top_ours['subscribers'], top_ref['subscribers'])} |",
        f"| forwarded packets/s there | {fmt(top_ours['forwarded_pps'])} |"
        f" {fmt(top_ref['forwarded_pps'])} |"
        f" {ratio(top_ours['forwarded_pps'], top_ref['forwarded_pps'])} |",
    ]
    common = min(top_ours["subscribers"], top_ref["subscribers"])
    a, b = at(ours, common), at(ref, common)
    if a is not None and b is not None:
        per_cpu_a = 1e6 / a["us_cpu_per_pkt"] if a["us_cpu_per_pkt"] else None
        per_cpu_b = 1e6 / b["us_cpu_per_pkt"] if b["us_cpu_per_pkt"] else None
        lines += [
            f"| at {common} subscribers (both held): CPU µs per forwarded packet |"
            f" {fmt(a['us_cpu_per_pkt'], 2)} | {fmt(b['us_cpu_per_pkt'], 2)} |"
            f" {ratio(b['us_cpu_per_pkt'], a['us_cpu_per_pkt'])} less |",
            f"| at {common}: forwarded packets per CPU-second |"
            f" {fmt(per_cpu_a, 0)} | {fmt(per_cpu_b, 0)} | {ratio(per_cpu_a, per_cpu_b)} |",
            f"| at {common}: loss % | {fmt(a['loss_pct'], 2)} | {fmt(b['loss_pct'], 2)} | |",
        ]
    half_a, half_b = near_half(ours, top_ours), near_half(ref, top_ref)
    if half_a is not None and half_b is not None:
        lines.append(
            f"| latency p50 / p99 ms at about half of its maximum |"
            f" {fmt(half_a['latency_p50_ms'], 2)} / {fmt(half_a['latency_p99_ms'], 2)}"
            f" ({half_a['subscribers']}) |"
            f" {fmt(half_b['latency_p50_ms'], 2)} / {fmt(half_b['latency_p99_ms'], 2)}"
            f" ({half_b['subscribers']}) | |"
        )
    first_a, first_b = (
        min(ours, key=lambda r: r["subscribers"]),
        min(ref, key=lambda r: r["subscribers"]),
    )
    lines += [
        f"| join to first media p95 ms ({first_a['subscribers']} subscribers) |"
        f" {fmt(first_a['first_media_p95_ms'], 0)} | {fmt(first_b['first_media_p95_ms'], 0)} |"
        f" |",
        f"| server memory per participant kB, at the maximum |"
        f" {fmt(top_ours['kb_per_participant'], 0)} | {fmt(top_ref['kb_per_participant'], 0)} |"
        f" {ratio(top_ref['kb_per_participant'], top_ours['kb_per_participant'])} less |",
        "",
    ]
    return lines


def idle_rows(where: Path = RESULTS) -> list[str]:
    ours, ref = load("pysfu", "idle", where), load("ref", "idle", where)
    if not ours or not ref:
        return []
    a, b = ours[-1], ref[-1]
    return [
        "### idle",
        "",
        "| | pysfu | reference | reference / pysfu |",
        "|---|---:|---:|---:|",
        f"| memory per idle participant kB ({a['participants']} participants) |"
        f" {fmt(a['kb_per_participant'], 0)} | {fmt(b['kb_per_participant'], 0)} |"
        f" {ratio(b['kb_per_participant'], a['kb_per_participant'])} |",
        f"| server CPU % of a core | {fmt(a['server_cpu_pct'])} | {fmt(b['server_cpu_pct'])} | |",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framing", choices=("core", "machine"), default="core")
    parser.add_argument("--generator", choices=("pysfu", "lk"), default="pysfu")
    parser.add_argument("--results", type=Path, help="read rows from here instead")
    args = parser.parse_args(argv)
    where = args.results or results_dir(args.framing, args.generator)
    lines = [f"<!-- {where}: framing {args.framing}, generator {args.generator} -->", ""]
    for name in MEDIA_SCENARIOS:
        lines += scenario_rows(name, where)
    lines += idle_rows(where)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
