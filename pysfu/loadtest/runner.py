"""One load-test run: join everyone, let media settle, measure a window, leave.

Publishers join before subscribers so that subscribers find every track already
published, which is also what a loaded server usually sees (a few speakers, many
listeners). Joins are bounded (``join_concurrency``, optionally ``join_rate``) so that
the join burst measures the server rather than a thundering herd of handshakes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from pysfu.auth import VideoGrant, mint_token

from .plan import LoadPlan, ParticipantSpec
from .probe import ProbeError, ProcessSample, ServerProbe
from .report import LoadReport, build_report
from .signal import SimParticipant

if TYPE_CHECKING:
    from pysfu._core import LoadGenerator

__all__ = ["run_loadtest"]

log = logging.getLogger("pysfu.loadtest")

_LEAVE_TIMEOUT_S = 5.0
_PROBE_PERIOD_S = 1.0


async def run_loadtest(plan: LoadPlan) -> LoadReport:
    """Run ``plan`` against its server and return the figures.

    Raises :class:`~pysfu.loadtest.probe.ProbeError` if ``plan.server_pid`` cannot be
    watched; a participant that cannot join is a figure in the report, not an error.
    """
    # Imported here so that the rest of the package (plans, reports, --help) works
    # without the compiled generator.
    from pysfu._core import LoadGenerator

    probe = ServerProbe(plan.server_pid) if plan.server_pid is not None else None
    if probe is not None:
        log.info("watching server process %d (%s)", probe.pid, probe.name)
    before = probe.sample() if probe is not None else None
    gen = LoadGenerator(local_ip=plan.local_ip)
    try:
        return await _run(plan, gen, probe, before)
    finally:
        gen.close()


def _token(plan: LoadPlan, spec: ParticipantSpec) -> str:
    grant = VideoGrant(room_join=True, room=spec.room, can_publish=spec.role == "publisher")
    return mint_token(
        plan.api_key,
        plan.api_secret,
        identity=spec.identity,
        grant=grant,
        # Outlive the run with room to spare; the server may refresh it anyway.
        ttl_s=plan.ramp_up_s + plan.duration_s + 3600,
    )


def _clock_offset_ns(gen: LoadGenerator) -> int:
    """Generator clock minus ``time.monotonic_ns``; both are meant to be CLOCK_MONOTONIC
    (offset 0), but a bracketed reading keeps the figures right if they ever are not."""
    best: tuple[int, int] | None = None
    for _ in range(3):
        before = time.monotonic_ns()
        theirs = gen.now_ns()
        after = time.monotonic_ns()
        reading = (after - before, theirs - (before + after) // 2)
        if best is None or reading[0] < best[0]:
            best = reading
    assert best is not None
    uncertainty, offset = best
    return 0 if abs(offset) <= uncertainty else offset


async def _join_all(nursery: trio.Nursery, sims: Sequence[SimParticipant], plan: LoadPlan) -> None:
    limiter = trio.CapacityLimiter(plan.join_concurrency)

    async def start(sim: SimParticipant) -> None:
        async with limiter:
            nursery.start_soon(sim.run, plan.join_timeout_s)
            await sim.settled.wait()

    async with trio.open_nursery() as starters:
        for i, sim in enumerate(sims):
            if plan.join_rate is not None and i > 0:
                await trio.sleep(1 / plan.join_rate)
            starters.start_soon(start, sim)


def _safe_sample(probe: ServerProbe | None) -> ProcessSample | None:
    if probe is None:
        return None
    try:
        return probe.sample()
    except ProbeError as exc:
        log.warning("%s; no server figures", exc)
        return None


async def _measure(probe: ServerProbe | None, duration_s: float) -> int:
    """Sleep through the window, sampling the server for its peak RSS."""
    deadline = trio.current_time() + duration_s
    peak = 0
    while (left := deadline - trio.current_time()) > 0:
        await trio.sleep(min(_PROBE_PERIOD_S, left))
        sample = _safe_sample(probe)
        if sample is not None:
            peak = max(peak, sample.rss_bytes)
    return peak


def _log_joins(what: str, sims: Sequence[SimParticipant]) -> None:
    joined = sum(s.outcome.joined for s in sims)
    log.info("%s: %d/%d joined", what, joined, len(sims))


async def _run(
    plan: LoadPlan, gen: LoadGenerator, probe: ServerProbe | None, before: ProcessSample | None
) -> LoadReport:
    sims = [SimParticipant(spec, plan.url, _token(plan, spec), gen) for spec in plan.participants()]
    publishers = [s for s in sims if s.spec.role == "publisher"]
    subscribers = [s for s in sims if s.spec.role == "subscriber"]
    offset_ns = _clock_offset_ns(gen)
    stats: dict[str, int] = {}
    window_s = 0.0
    start = end = None
    # Our own CPU as well: a generator that saturates its core measures itself.
    generator = ServerProbe(os.getpid())
    generator_samples = None
    rss_peak = 0
    async with trio.open_nursery() as nursery:
        log.info("joining %d publishers, then %d subscribers", len(publishers), len(subscribers))
        await _join_all(nursery, publishers, plan)
        _log_joins("publishers", publishers)
        await _join_all(nursery, subscribers, plan)
        _log_joins("subscribers", subscribers)
        if any(s.outcome.joined for s in sims):
            log.info("ramp-up %g s, then measuring for %g s", plan.ramp_up_s, plan.duration_s)
            await trio.sleep(plan.ramp_up_s)
            gen.reset_stats()
            start = _safe_sample(probe)
            generator_start = generator.sample()
            began = trio.current_time()
            rss_peak = await _measure(probe, plan.duration_s)
            stats = gen.stats()
            window_s = trio.current_time() - began
            generator_samples = (generator_start, generator.sample())
            end = _safe_sample(probe)
        first_media = [s.first_media_ns() for s in subscribers]
        for sim in sims:
            sim.stop()
        with trio.move_on_after(_LEAVE_TIMEOUT_S):
            for sim in sims:
                await sim.finished.wait()
        nursery.cancel_scope.cancel()

    has_media = plan.publishers > 0
    first_media_ms = [
        (ns - offset_ns - s.outcome.start_ns) / 1e6
        for s, ns in zip(subscribers, first_media, strict=True)
        if ns
    ]
    samples = None
    if before is not None and start is not None and end is not None:
        samples = (before, start, end)
    return build_report(
        plan,
        join_ms=[(s.outcome.join_ns - s.outcome.start_ns) / 1e6 for s in sims if s.outcome.join_ns],
        first_media_ms=first_media_ms,
        subscribers_without_media=sum(
            1
            for s, ns in zip(subscribers, first_media, strict=True)
            if has_media and s.outcome.joined and not ns
        ),
        failed=[(s.spec.identity, s.outcome.error) for s in sims if not s.outcome.joined],
        dropped=[(s.spec.identity, s.outcome.dropped) for s in sims if s.outcome.dropped],
        stats=stats,
        window_s=window_s,
        server_pid=plan.server_pid,
        server_samples=samples,
        rss_peak=rss_peak,
        generator_samples=generator_samples,
    )
