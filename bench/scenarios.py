"""Load-test shapes against pysfu and the reference server, in one run with one generator.

    python bench/scenarios.py                                   # both servers, every shape
    python bench/scenarios.py --framing machine                 # servers on every core
    python bench/scenarios.py --server pysfu --shape livestream --steps 50,100
    python bench/scenarios.py --generator lk --lk-binary ~/.cache/pysfu-lk/lk --shape audio

Each step starts a fresh server process, runs the load generator, stops the server and
records one row. Framings (bench/scenario_plan.py): ``core`` pins the server to one core
and the generator to another; ``machine`` gives the server every core (pysfu with
``rtc.workers`` = the number of cores, livekit-server with Go's default GOMAXPROCS) and
leaves the generator unpinned, so on a 2-core machine the two share the cores.
Generators: ``pysfu`` is ``pysfu loadtest``'s engine (``run_loadtest``) in this process;
``lk`` is LiveKit's ``lk load-test`` (bench/lk_loadtest.py for what it reports).

A shape stops climbing at the first step that loses 1 % or more of its packets or fails
to join everyone. Rows go to ``<results>/<server>-<shape>.json`` (bench/results for
the core framing with pysfu's generator, bench/results/<framing>-<generator>
otherwise) and a Markdown table on stdout. The idle shape also prints the server's
memory per joined-but-silent participant.

The reference server is built outside the repository (see bench/README.md); point
``--ref-binary``/``--ref-config`` at it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import trio
from lk_loadtest import (
    FINISHED_CONNECTING,
    LkSummary,
    SummaryError,
    combine,
    lk_argv,
    parse_summary,
)
from scenario_plan import (
    PORTS,
    PYSFU_CONFIG,
    BenchPlan,
    PlanError,
    Server,
    Shape,
    parse_args,
    pysfu_config_text,
)

from pysfu.loadtest import LoadPlan, LoadReport, run_loadtest
from pysfu.loadtest.probe import ProbeError, ProcessSample, ServerProbe

Row = dict[str, object]
API_KEY, API_SECRET = "devkey", "secret"
IDLE_TARGET_KB = 64  # issue 15: an idle participant below 64 kB in the server


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if port_in_use(port):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start listening")


@contextmanager
def running_server(
    plan: BenchPlan, server: Server, pysfu_config: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if plan.framing == "machine":
        # "Default GOMAXPROCS" means Go's own choice (the cores it may run on).
        env.pop("GOMAXPROCS", None)
    if port_in_use(PORTS[server]):
        # Another server there would answer the generator and be measured by nobody.
        raise RuntimeError(f"port {PORTS[server]} is already in use: stop that server first")
    cmd = plan.server_argv(server, sys.executable, pysfu_config)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_listening(PORTS[server], proc)
        time.sleep(1.0)  # let start-up allocation settle before the memory baseline
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def base_row(plan: BenchPlan, server: Server, shape: Shape, subscribers: int) -> Row:
    return {
        "server": server,
        "framing": plan.framing,
        "generator": plan.generator,
        "workers": plan.placement.workers if server == "pysfu" else None,
        "scenario": shape.name,
        "rooms": shape.rooms,
        "publishers": shape.publishers,
        "subscribers": subscribers,
    }


def pysfu_row(r: LoadReport) -> Row:
    s = r.server
    return {
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
        "rss_before_kb": round(s.rss_before_bytes / 1024) if s else None,
        "rss_end_kb": round(s.rss_end_bytes / 1024) if s else None,
    }


def run_step_pysfu(plan: BenchPlan, shape: Shape, subscribers: int, pid: int, port: int) -> Row:
    load = LoadPlan(
        url=f"ws://127.0.0.1:{port}",
        api_key=API_KEY,
        api_secret=API_SECRET,
        rooms=shape.rooms,
        publishers=shape.publishers,
        subscribers=subscribers,
        audio=shape.audio,
        video=shape.video,
        audio_kbps=shape.audio_kbps,
        video_kbps=shape.video_kbps,
        duration_s=plan.duration_s,
        ramp_up_s=plan.ramp_up_s,
        server_pid=pid,
    )
    report = trio.run(run_loadtest, load)
    if shape.publishers and not report.packets_sent:
        # The publishers never got media going (a failed set-up, not a load figure):
        # the caller runs the step once more.
        return {"nothing_sent": True, **pysfu_row(report)}
    return pysfu_row(report)


class LkProcess:
    """One ``lk load-test`` child: its output, read as it comes, and when it said it
    had finished connecting (the start of its ``--duration``)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: list[str] = []
        self.connected = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if FINISHED_CONNECTING in line:
                self.connected.set()
        self.connected.set()  # exited without connecting: nobody waits forever

    def finish(self, timeout_s: float) -> str:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        return "".join(self.lines)


def _sample(probe: ServerProbe | None) -> ProcessSample | None:
    try:
        return probe.sample() if probe is not None else None
    except ProbeError:
        return None


def _cpu_s(probes: Sequence[ServerProbe]) -> float:
    total = 0.0
    for p in probes:
        sample = _sample(p)
        total += sample.cpu_s if sample else 0.0
    return total


def run_step_lk(plan: BenchPlan, shape: Shape, subscribers: int, pid: int, port: int) -> Row:
    """One step with one lk process per room; the server's CPU is read over the
    measurement window (``--ramp-up`` after every lk finished connecting, then
    ``--duration``), its memory against the reading before anyone joined."""
    server = ServerProbe(pid)
    before = server.sample()
    run_id = secrets.token_hex(3)
    children = [
        LkProcess(
            [
                *plan.generator_prefix(),
                *lk_argv(
                    plan.lk_binary,
                    url=f"ws://127.0.0.1:{port}",
                    api_key=API_KEY,
                    api_secret=API_SECRET,
                    room=f"lk-{shape.name}-{r}-{run_id}",
                    publishers=shape.publishers,
                    audio=shape.audio,
                    video=shape.video,
                    subscribers=subscribers,
                    duration_s=plan.ramp_up_s + plan.duration_s,
                    join_rate=plan.lk_join_rate,
                    identity_prefix=f"lk{r}",
                ),
            ]
        )
        for r in range(shape.rooms)
    ]
    per_room = shape.publishers + subscribers
    join_budget_s = 30 + 2 * per_room / plan.lk_join_rate
    deadline = time.monotonic() + join_budget_s
    for child in children:
        child.connected.wait(max(0.0, deadline - time.monotonic()))
    connected_at = time.monotonic()
    gens: list[ServerProbe] = []
    for child in children:
        with suppress(ProbeError):
            gens.append(ServerProbe(child.proc.pid))
    time.sleep(plan.ramp_up_s)
    start, gen_start = _sample(server), _cpu_s(gens)
    # lk stops its testers right after its duration; read the server just before.
    time.sleep(max(0.0, plan.duration_s - 0.5))
    window_s = time.monotonic() - connected_at - plan.ramp_up_s
    end, gen_end = _sample(server), _cpu_s(gens)
    outputs = [c.finish(timeout_s=60 + join_budget_s) for c in children]
    summaries: list[LkSummary] = []
    unreadable: list[str] = []
    for child, text in zip(children, outputs, strict=True):
        try:
            summaries.append(parse_summary(text))
        except SummaryError as exc:
            tail = text.strip().splitlines()[-1:] or ["(no output)"]
            unreadable.append(f"{exc} (exit {child.proc.returncode}: {tail[0][:200]})")
    totals = combine(summaries)
    participants = shape.rooms * per_room
    # lk's packet counts run from each track's first packet to its summary: the
    # window plus the ramp-up and part of the joins; divide by the time since the
    # last room finished connecting plus the ramp-up (an upper bound on the rate).
    elapsed_s = plan.ramp_up_s + plan.duration_s
    cpu_s = (end.cpu_s - start.cpu_s) if start and end else None
    window_pkts = totals.packets * window_s / elapsed_s if elapsed_s else 0.0
    row: Row = {
        # A room whose summary could not be read: who joined there is unknown.
        "joined": None if unreadable else participants - totals.errors - totals.connect_failures,
        "participants": participants,
        "tracks_subscribed": totals.tracks,
        "tracks_expected": totals.expected,
        "subscribers_with_all_tracks": totals.subscribers_with_all_tracks,
        "lk_packets": totals.packets,
        "lk_dropped": totals.dropped,
        "forwarded_pps": round(totals.packets / elapsed_s) if elapsed_s else None,
        "kbps_received": round(totals.bitrate_bps / 1000, 1),
        "kbps_per_subscriber": round(totals.bitrate_bps / 1000 / totals.subscribers, 1)
        if totals.subscribers
        else None,
        "loss_pct": None if totals.loss_pct is None else round(totals.loss_pct, 3),
        "latency_p50_ms": None,
        "latency_p95_ms": None,
        "latency_p99_ms": None,
        "first_media_p95_ms": None,
        "server_cpu_pct": round(100 * cpu_s / window_s, 1) if cpu_s is not None else None,
        "generator_cpu_pct": round(100 * (gen_end - gen_start) / window_s, 1) if gens else None,
        "pkts_per_cpu_s": round(window_pkts / cpu_s) if cpu_s and window_pkts else None,
        "us_cpu_per_pkt": round(1e6 * cpu_s / window_pkts, 2) if cpu_s and window_pkts else None,
        "kb_per_participant": round((end.rss_bytes - before.rss_bytes) / 1024 / participants, 1)
        if end and participants
        else None,
        "rss_before_kb": round(before.rss_bytes / 1024),
        "rss_end_kb": round(end.rss_bytes / 1024) if end else None,
        "lk_errors": unreadable
        + sorted(
            {t.error for s in summaries for t in s.subscribers if t.error}
            | {e for s in summaries for _, e in s.connect_failures}
        )[:5],
    }
    return row


def step_failed(row: Mapping[str, object]) -> bool:
    loss = row.get("loss_pct")
    if row.get("joined") != row.get("participants"):
        return True
    if isinstance(loss, float | int) and loss >= 1.0:
        return True
    return row.get("tracks_subscribed", 0) != row.get("tracks_expected", 0)


def idle_memory_line(server: str, rows: Sequence[Row]) -> str:
    """The idle shape's reading: RSS growth per participant against the baseline
    before anyone joined and, with two steps, the slope between them (what one more
    participant costs, without the allocations the first joins make once)."""
    ok = [r for r in rows if isinstance(r.get("rss_end_kb"), int)]
    if not ok:
        return f"<!-- idle, {server}: no memory reading -->"
    last = ok[-1]
    text = (
        f"idle, {server}: {last['kb_per_participant']} kB per joined-but-silent participant "
        f"({last['participants']} participants, RSS growth from before the first join)"
    )
    if len(ok) >= 2:
        a, b = ok[-2], ok[-1]
        n = int(str(b["participants"])) - int(str(a["participants"]))
        if n > 0:
            growth = (int(str(b["rss_end_kb"])) - int(str(b["rss_before_kb"]))) - (
                int(str(a["rss_end_kb"])) - int(str(a["rss_before_kb"]))
            )
            text += f"; {growth / n:.1f} kB each from {a['participants']} to {b['participants']}"
    return f"<!-- {text}; issue 15 target < {IDLE_TARGET_KB} kB -->"


COLUMNS = (
    "server",
    "framing",
    "generator",
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
LK_COLUMNS = ("tracks_subscribed", "tracks_expected", "kbps_per_subscriber")


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "-" if v is None else str(v)


def run_shape(plan: BenchPlan, server: Server, shape: Shape, pysfu_config: Path) -> list[Row]:
    columns = COLUMNS + (LK_COLUMNS if plan.generator == "lk" else ())
    rows: list[Row] = []
    for subscribers in shape.steps:
        for attempt in range(2):
            with running_server(plan, server, pysfu_config) as proc:
                port = PORTS[server]
                if plan.generator == "lk":
                    figures = run_step_lk(plan, shape, subscribers, proc.pid, port)
                else:
                    figures = run_step_pysfu(plan, shape, subscribers, proc.pid, port)
            if not figures.pop("nothing_sent", False) or attempt:
                break
            print(f"<!-- {shape.name} {subscribers}: nothing was sent; rerun -->", flush=True)
        row = {**base_row(plan, server, shape, subscribers), **figures}
        rows.append(row)
        print("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |", flush=True)
        if step_failed(row):
            break
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cpus = len(os.sched_getaffinity(0))
    try:
        plan = parse_args(argv, cpus=cpus)
    except PlanError as exc:
        print(f"scenarios.py: {exc}", file=sys.stderr)
        return 2
    missing = [
        f"{what} {path!r} not found{hint}"
        for what, path, wanted, hint in (
            ("--ref-binary", plan.ref_binary, "ref" in plan.servers, " (bench/README.md)"),
            ("--ref-config", plan.ref_config, "ref" in plan.servers, ""),
            ("--lk-binary", plan.lk_binary, plan.generator == "lk", " (bench/build_lk.sh)"),
        )
        if wanted and shutil.which(path) is None and not Path(path).is_file()
    ]
    if missing:
        print("scenarios.py: " + "; ".join(missing), file=sys.stderr)
        return 2
    all_cpus = set(range(os.cpu_count() or cpus))
    os.sched_setaffinity(0, plan.placement.generator_cpus or all_cpus)
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    print(f"<!-- {plan.placement.note}; generator {plan.generator} -->", flush=True)
    columns = COLUMNS + (LK_COLUMNS if plan.generator == "lk" else ())
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory(prefix="pysfu-bench-") as tmp:
        config = Path(tmp) / "pysfu.yaml"
        config.write_text(pysfu_config_text(PYSFU_CONFIG.read_text(), plan.placement.workers))
        for shape in plan.shapes:
            for server in plan.servers:
                rows = run_shape(plan, server, shape, config)
                if shape.name == "idle":
                    print(idle_memory_line(server, rows), flush=True)
                path = plan.results_dir / f"{server}-{shape.name}.json"
                path.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
