"""What a ``scenarios.py`` run does, decided from its arguments (pure, no I/O).

A run measures one or both servers (pysfu, the reference livekit-server) on the same
shapes with the same load generator, in one *framing*:

- ``core``: each server pinned to one core (``--server-cpu``), the generator pinned to
  another (``--loadgen-cpu``): throughput per core.
- ``machine``: each server on every core of the machine (pysfu with ``rtc.workers`` =
  the number of cores, livekit-server unpinned with Go's default GOMAXPROCS), the
  generator unpinned too: throughput per machine. On a machine with few cores (2
  here) the generator then competes with the server for the same cores.

``parse_args`` turns a command line into a :class:`BenchPlan`; ``scenarios.py`` carries
it out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PYSFU_CONFIG = BENCH / "pysfu.yaml"
PORTS = {"pysfu": 7880, "ref": 7890}

Server = Literal["pysfu", "ref"]
Framing = Literal["core", "machine"]
Generator = Literal["pysfu", "lk"]
SERVERS: tuple[Server, ...] = ("pysfu", "ref")
FRAMINGS: tuple[Framing, ...] = ("core", "machine")
GENERATORS: tuple[Generator, ...] = ("pysfu", "lk")


@attrs.frozen
class Shape:
    """A room layout; ``steps`` are subscriber counts per room, climbed in order."""

    name: str
    rooms: int
    publishers: int
    audio: bool
    video: bool
    steps: tuple[int, ...]
    audio_kbps: int = 32
    video_kbps: int = 1200

    @property
    def participants_per_step(self) -> tuple[int, ...]:
        return tuple(self.rooms * (self.publishers + s) for s in self.steps)


# Shapes of the reference server's published benchmark (audio-only room, large
# video meeting, one-to-many livestream), scaled to a 2-core machine that also
# runs the load generator; idle is joined-but-silent participants, for memory.
SHAPES = {
    "audio": Shape(
        "audio",
        rooms=1,
        publishers=10,
        audio=True,
        video=False,
        steps=(25, 50, 100, 150, 200, 250, 300, 400),
    ),
    "meeting": Shape(
        "meeting",
        rooms=1,
        publishers=4,
        audio=True,
        video=True,
        steps=(10, 25, 50, 75, 100, 125, 150, 200, 250),
    ),
    "livestream": Shape(
        "livestream",
        rooms=1,
        publishers=1,
        audio=True,
        video=True,
        steps=(50, 100, 200, 300, 400, 500, 600, 800),
    ),
    # Two sizes, so that the memory per participant can also be read as the slope
    # between them (what one more participant costs, without start-up allocations).
    "idle": Shape("idle", rooms=10, publishers=0, audio=True, video=False, steps=(10, 20)),
}
DEFAULT_SHAPES = ("audio", "meeting", "livestream", "idle")


class PlanError(ValueError):
    """The command line asks for something this machine or script cannot do."""


@attrs.frozen
class Placement:
    """Where the server and the generator run, and pysfu's engine thread count."""

    server_cpus: frozenset[int] | None
    """``taskset`` for the server; None: not pinned (every core)."""
    generator_cpus: frozenset[int] | None
    """The generator's affinity; None: not pinned."""
    workers: int | None
    """``rtc.workers`` written into pysfu's config; None: the key is not passed."""
    note: str
    """One line for the output (and so for whoever reads the results)."""


def placement(
    framing: Framing,
    *,
    cpus: int,
    server_cpu: int = 0,
    loadgen_cpu: int = 1,
    workers: int | None = None,
) -> Placement:
    """The placement for ``framing`` on a machine with ``cpus`` cores.

    ``workers`` overrides pysfu's ``rtc.workers``; by default only the machine framing
    passes it (= ``cpus``). In the core framing the server sees one core in its
    affinity mask, so a "one per core" default would also mean one there.
    """
    if cpus < 1:
        raise PlanError(f"cpus must be >= 1, got {cpus}")
    if workers is not None and workers < 0:
        raise PlanError(f"--workers must be >= 0, got {workers}")
    if framing == "core":
        if cpus < 2:
            raise PlanError("the core framing needs 2 cores (server and generator apart)")
        for name, cpu in (("--server-cpu", server_cpu), ("--loadgen-cpu", loadgen_cpu)):
            if not 0 <= cpu < cpus:
                raise PlanError(f"{name} {cpu} is not a core of this machine (0-{cpus - 1})")
        if server_cpu == loadgen_cpu:
            raise PlanError("--server-cpu and --loadgen-cpu must differ in the core framing")
        return Placement(
            server_cpus=frozenset({server_cpu}),
            generator_cpus=frozenset({loadgen_cpu}),
            workers=workers,
            note=(
                f"framing core: server pinned to CPU {server_cpu}, "
                f"generator pinned to CPU {loadgen_cpu}"
            ),
        )
    shared = (
        f"; on this {cpus}-core machine the generator shares the server's cores, "
        "so these figures understate what a server alone on the machine holds"
        if cpus <= 4
        else ""
    )
    return Placement(
        server_cpus=None,
        generator_cpus=None,
        workers=cpus if workers is None else workers,
        note=(
            f"framing machine: server on all {cpus} cores (pysfu rtc.workers="
            f"{cpus if workers is None else workers}, livekit-server default GOMAXPROCS), "
            f"generator not pinned{shared}"
        ),
    )


@attrs.frozen
class BenchPlan:
    """One ``scenarios.py`` run."""

    servers: tuple[Server, ...]
    shapes: tuple[Shape, ...]
    framing: Framing
    generator: Generator
    placement: Placement
    duration_s: float
    ramp_up_s: float
    results_dir: Path
    ref_binary: str
    ref_config: str
    lk_binary: str
    lk_join_rate: int

    def server_argv(self, server: Server, python: str, pysfu_config: Path) -> list[str]:
        """The server's command line, with ``taskset`` when the framing pins it."""
        if server == "pysfu":
            cmd = [
                python,
                "-c",
                "from pysfu.cli import main; main()",
                "serve",
                "--config",
                str(pysfu_config),
            ]
        else:
            cmd = [self.ref_binary, "--config", self.ref_config]
        cpus = self.placement.server_cpus
        if cpus is None:
            return cmd
        return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]

    def generator_prefix(self) -> list[str]:
        """``taskset`` for an external generator (lk) when the framing pins it."""
        cpus = self.placement.generator_cpus
        return [] if cpus is None else ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def results_dir(framing: str, generator: str, root: Path = RESULTS) -> Path:
    """``bench/results`` for the per-core framing with pysfu's generator (where the
    first published figures are), a subdirectory per other combination."""
    if framing == "core" and generator == "pysfu":
        return root
    return root / f"{framing}-{generator}"


def pysfu_config_text(base: str, workers: int | None) -> str:
    """``base`` (pysfu's YAML) with ``rtc.workers`` set, or unchanged for None.

    Appended as text rather than re-serialised, so that comments and key order of the
    checked-in config stay as they are; an ``rtc:`` block must already exist in flow
    or block style (it does in bench/pysfu.yaml).
    """
    if workers is None:
        return base
    lines = base.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip() == "rtc:":
            lines.insert(i + 1, f"  workers: {workers}")
            return "\n".join(lines) + "\n"
        if line.startswith("rtc: {") and line.rstrip().endswith("}"):
            lines[i] = line.rstrip()[:-1].rstrip() + f", workers: {workers}}}"
            return "\n".join(lines) + "\n"
    return base.rstrip("\n") + f"\nrtc:\n  workers: {workers}\n"


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise PlanError(f"--steps must be comma-separated whole numbers, got {text!r}") from None
    if not steps or any(s < 0 for s in steps):
        raise PlanError(f"--steps must be comma-separated counts >= 0, got {text!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenarios.py",
        description="Load-test shapes against pysfu and the reference server.",
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=SERVERS,
        help="a server to measure (repeat for both; default: both, pysfu first)",
    )
    parser.add_argument(
        "--shape",
        "--scenario",
        dest="shape",
        action="append",
        choices=sorted(SHAPES),
        help="a shape to run (repeat for several; default: all)",
    )
    parser.add_argument("--steps", help="comma-separated subscriber counts (override)")
    parser.add_argument("--framing", choices=FRAMINGS, default="core")
    parser.add_argument("--generator", choices=GENERATORS, default="pysfu")
    parser.add_argument(
        "--workers",
        type=int,
        help="pysfu's rtc.workers (default: not passed in the core framing, "
        "the number of cores in the machine framing)",
    )
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--ramp-up", type=float, default=5.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--loadgen-cpu", type=int, default=1)
    parser.add_argument("--ref-binary", default="/work/ref/livekit-server")
    parser.add_argument("--ref-config", default="/work/ref/livekit.yaml")
    parser.add_argument("--lk-binary", default="lk", help="LiveKit's CLI, for --generator lk")
    parser.add_argument(
        "--lk-join-rate",
        type=int,
        default=10,
        help="lk load-test --num-per-second (lk caps it at 10)",
    )
    parser.add_argument("--results", type=Path, help="directory for the JSON rows")
    return parser


def parse_args(argv: Sequence[str] | None, *, cpus: int) -> BenchPlan:
    """The plan for a command line on a machine with ``cpus`` cores; raises
    :class:`PlanError` (or exits, for argparse's own errors) when it cannot be run."""
    args = build_parser().parse_args(argv)
    servers: tuple[Server, ...] = tuple(dict.fromkeys(args.server or SERVERS))
    names = tuple(dict.fromkeys(args.shape or DEFAULT_SHAPES))
    shapes = tuple(SHAPES[n] for n in names)
    if args.steps:
        steps = parse_steps(args.steps)
        shapes = tuple(attrs.evolve(s, steps=steps) for s in shapes)
    for shape in shapes:
        if shape.publishers == 0 and 0 in shape.steps:
            raise PlanError(f"{shape.name}: a step with nobody in it measures nothing")
    if args.duration <= 0 or args.ramp_up < 0:
        raise PlanError("--duration must be > 0 and --ramp-up >= 0")
    if not 1 <= args.lk_join_rate <= 10:
        raise PlanError("--lk-join-rate must be within 1-10 (lk's own bounds)")
    where = placement(
        args.framing,
        cpus=cpus,
        server_cpu=args.server_cpu,
        loadgen_cpu=args.loadgen_cpu,
        workers=args.workers,
    )
    return BenchPlan(
        servers=servers,
        shapes=shapes,
        framing=args.framing,
        generator=args.generator,
        placement=where,
        duration_s=args.duration,
        ramp_up_s=args.ramp_up,
        results_dir=args.results or results_dir(args.framing, args.generator),
        ref_binary=args.ref_binary,
        ref_config=args.ref_config,
        lk_binary=args.lk_binary,
        lk_join_rate=args.lk_join_rate,
    )
