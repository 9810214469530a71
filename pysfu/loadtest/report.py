"""A load test's figures: aggregated from raw measurements, printed as a table or JSON.

Pure: everything comes in as numbers (``build_report``) and goes out as strings.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import attrs

from .plan import LoadPlan
from .probe import ProcessSample

__all__ = [
    "Distribution",
    "Failure",
    "LoadReport",
    "ServerFigures",
    "build_report",
    "format_table",
    "percentile",
    "to_json",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks
    (numpy's default), so p50 of an even count is the mean of the two middle values."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@attrs.frozen
class Distribution:
    """Summary of a set of samples, in the samples' unit."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Distribution | None:
        if not samples:
            return None
        return cls(
            count=len(samples),
            p50=percentile(samples, 50),
            p95=percentile(samples, 95),
            p99=percentile(samples, 99),
            max=max(samples),
        )


@attrs.frozen
class Failure:
    """Participants that failed (or were dropped) for one reason."""

    reason: str
    count: int
    example: str
    """One identity it happened to."""


@attrs.frozen
class ServerFigures:
    """The server process during the run (only when it is local and its PID known)."""

    pid: int
    cpu_s: float
    """User + system CPU seconds over the measurement window."""
    cpu_pct: float
    """``cpu_s`` over the window's wall time; 100 = one core busy."""
    packets_per_cpu_s: float | None
    """Packets received by subscribers per server CPU-second (forwarding efficiency)."""
    rss_before_bytes: int
    """Before any participant joined."""
    rss_end_bytes: int
    """At the end of the window, everyone still connected."""
    rss_peak_bytes: int
    memory_per_participant_bytes: float | None
    """(end - before) / joined participants."""


@attrs.frozen
class LoadReport:
    """Everything a run measured; media figures cover the measurement window only."""

    url: str
    rooms: int
    publishers_per_room: int
    subscribers_per_room: int
    audio_kbps: int | None
    video_kbps: int | None
    participants: int
    joined: int
    failed: int
    dropped: int
    failures: tuple[Failure, ...]
    join_ms: Distribution | None
    """WebSocket open start to JoinResponse."""
    first_media_ms: Distribution | None
    """Subscribers: WebSocket open start to first media packet."""
    subscribers_without_media: int
    window_s: float
    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    packets_expected: int
    """The larger of two counts: every packet sent times the subscribers of its room
    (a stream that never reached a subscriber, or arrived late, is missing from
    this one), and the publisher numbering spanned by each received stream (gaps)."""
    packets_sent_per_s: float
    packets_received_per_s: float
    kbps_sent: float
    kbps_received: float
    loss_pct: float | None
    """Subscriber side: 1 - received / expected; None when nothing was expected."""
    latency_samples: int
    latency_ms: Distribution | None
    """Publisher send to subscriber receive (the count is ``latency_samples``)."""
    peers_connected: int
    peers: int
    server: ServerFigures | None
    generator_cpu_pct: float | None
    """The load generator's own process over the window (user + system CPU over wall
    time, all threads; 100 = one core busy; None without a window). Check it before
    trusting the other figures: the generator runs signaling on one thread and every
    simulated peer's media on another, so near or above 100 % it is likely saturating
    a core, and loss, latency and throughput then measure the generator, not the
    server. A server in the same process (as in the tests) is counted here too."""

    @property
    def all_joined(self) -> bool:
        return self.joined == self.participants


def _failures(items: Sequence[tuple[str, str]]) -> tuple[Failure, ...]:
    counts = Counter(reason for _, reason in items)
    example = {reason: identity for identity, reason in reversed(items)}
    return tuple(Failure(r, n, example[r]) for r, n in counts.most_common())


def _server(
    pid: int,
    window_s: float,
    before: ProcessSample,
    start: ProcessSample,
    end: ProcessSample,
    rss_peak: int,
    joined: int,
    packets_received: int,
) -> ServerFigures:
    cpu_s = max(0.0, end.cpu_s - start.cpu_s)
    return ServerFigures(
        pid=pid,
        cpu_s=cpu_s,
        cpu_pct=100 * cpu_s / window_s if window_s > 0 else 0.0,
        packets_per_cpu_s=packets_received / cpu_s if cpu_s > 0 else None,
        rss_before_bytes=before.rss_bytes,
        rss_end_bytes=end.rss_bytes,
        rss_peak_bytes=max(rss_peak, end.rss_bytes, start.rss_bytes),
        memory_per_participant_bytes=(
            (end.rss_bytes - before.rss_bytes) / joined if joined else None
        ),
    )


def build_report(
    plan: LoadPlan,
    *,
    join_ms: Sequence[float],
    first_media_ms: Sequence[float],
    subscribers_without_media: int,
    failed: Sequence[tuple[str, str]],
    dropped: Sequence[tuple[str, str]],
    stats: Mapping[str, int],
    window_s: float,
    server_pid: int | None = None,
    server_samples: tuple[ProcessSample, ProcessSample, ProcessSample] | None = None,
    rss_peak: int = 0,
    generator_samples: tuple[ProcessSample, ProcessSample] | None = None,
) -> LoadReport:
    """Aggregate one run. ``failed``/``dropped`` are (identity, reason) pairs;
    ``stats`` is ``LoadGenerator.stats()`` for the window; ``server_samples`` are the
    server readings before any join, at the window's start and at its end;
    ``generator_samples`` are the generator's own, at the window's start and end."""
    participants = plan.total_participants
    joined = participants - len(failed)
    sent, received = stats.get("packets_sent", 0), stats.get("packets_received", 0)
    # Rooms are laid out alike, so every packet sent is owed to the subscribers of
    # one room; the generator's own figure only covers streams that arrived at all.
    expected = max(stats.get("packets_expected", 0), sent * plan.subscribers)
    per_s = 1 / window_s if window_s > 0 else 0.0
    latency_samples = stats.get("latency_samples", 0)
    latency = None
    if latency_samples:
        latency = Distribution(
            count=latency_samples,
            p50=stats.get("latency_p50_us", 0) / 1000,
            p95=stats.get("latency_p95_us", 0) / 1000,
            p99=stats.get("latency_p99_us", 0) / 1000,
            max=stats.get("latency_max_us", 0) / 1000,
        )
    server = None
    if server_pid is not None and server_samples is not None:
        server = _server(server_pid, window_s, *server_samples, rss_peak, joined, received)
    generator_cpu_pct = None
    if generator_samples is not None and window_s > 0:
        gen_start, gen_end = generator_samples
        generator_cpu_pct = 100 * max(0.0, gen_end.cpu_s - gen_start.cpu_s) / window_s
    return LoadReport(
        url=plan.url,
        rooms=plan.rooms,
        publishers_per_room=plan.publishers,
        subscribers_per_room=plan.subscribers,
        audio_kbps=plan.audio_kbps if plan.audio and plan.publishers else None,
        video_kbps=plan.video_kbps if plan.video and plan.publishers else None,
        participants=participants,
        joined=joined,
        failed=len(failed),
        dropped=len(dropped),
        failures=_failures([*failed, *dropped]),
        join_ms=Distribution.of(join_ms),
        first_media_ms=Distribution.of(first_media_ms),
        subscribers_without_media=subscribers_without_media,
        window_s=window_s,
        packets_sent=sent,
        bytes_sent=stats.get("bytes_sent", 0),
        packets_received=received,
        bytes_received=stats.get("bytes_received", 0),
        packets_expected=expected,
        packets_sent_per_s=sent * per_s,
        packets_received_per_s=received * per_s,
        kbps_sent=stats.get("bytes_sent", 0) * 8 / 1000 * per_s,
        kbps_received=stats.get("bytes_received", 0) * 8 / 1000 * per_s,
        loss_pct=100 * max(0.0, 1 - received / expected) if expected else None,
        latency_samples=latency_samples,
        latency_ms=latency,
        peers_connected=stats.get("peers_connected", 0),
        peers=stats.get("peers", 0),
        server=server,
        generator_cpu_pct=generator_cpu_pct,
    )


def _dist(d: Distribution | None, unit: str = "ms") -> str:
    if d is None:
        return "-"
    return (
        f"p50 {d.p50:.1f} {unit}   p95 {d.p95:.1f} {unit}   p99 {d.p99:.1f} {unit}"
        f"   max {d.max:.1f} {unit}   ({d.count:,})"
    )


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def format_table(report: LoadReport) -> str:
    """A human-readable summary, one figure per line."""
    media = [
        f"audio {report.audio_kbps} kbps" if report.audio_kbps else "",
        f"video {report.video_kbps} kbps" if report.video_kbps else "",
    ]
    rows: list[tuple[str, str]] = [
        ("server", report.url),
        (
            "layout",
            f"{report.rooms} room(s) x ({report.publishers_per_room} publishers"
            f" + {report.subscribers_per_room} subscribers)"
            f"; {', '.join(m for m in media if m) or 'no media'}",
        ),
        (
            "participants",
            f"{report.joined}/{report.participants} joined, {report.failed} failed,"
            f" {report.dropped} dropped",
        ),
        ("join time", _dist(report.join_ms)),
        ("first media", _dist(report.first_media_ms)),
    ]
    if report.subscribers_without_media:
        rows.append(("no media", f"{report.subscribers_without_media} subscriber(s)"))
    rows += [
        ("window", f"{report.window_s:.1f} s"),
        (
            "sent",
            f"{report.packets_sent:,} packets, {_mb(report.bytes_sent)}"
            f"  ({report.packets_sent_per_s:,.0f} pkt/s, {report.kbps_sent:,.0f} kbit/s)",
        ),
        (
            "received",
            f"{report.packets_received:,} packets, {_mb(report.bytes_received)}"
            f"  ({report.packets_received_per_s:,.0f} pkt/s, {report.kbps_received:,.0f} kbit/s)",
        ),
        (
            "loss",
            "-"
            if report.loss_pct is None
            else f"{report.loss_pct:.2f} % of {report.packets_expected:,} expected",
        ),
        ("latency", _dist(report.latency_ms)),
        ("peers", f"{report.peers_connected}/{report.peers} connected at the end"),
        (
            "generator CPU",
            "-"
            if report.generator_cpu_pct is None
            else f"{report.generator_cpu_pct:.1f} % of a core",
        ),
    ]
    server = report.server
    if server is not None:
        per_cpu = "-" if server.packets_per_cpu_s is None else f"{server.packets_per_cpu_s:,.0f}"
        per_participant = (
            "-"
            if server.memory_per_participant_bytes is None
            else f"{server.memory_per_participant_bytes / 1e3:,.0f} kB"
        )
        rows += [
            (
                "server CPU",
                f"{server.cpu_s:.2f} s ({server.cpu_pct:.1f} % of a core),"
                f" {per_cpu} forwarded packets per CPU-second",
            ),
            (
                "server memory",
                f"RSS {_mb(server.rss_before_bytes)} before, {_mb(server.rss_end_bytes)} at"
                f" end, peak {_mb(server.rss_peak_bytes)}; {per_participant} per participant",
            ),
        ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    for failure in report.failures:
        lines.append(f"  {failure.count}x {failure.reason} (e.g. {failure.example})")
    return "\n".join(lines)


def to_json(report: LoadReport) -> str:
    """Every figure, for scripts (``--json``)."""
    return json.dumps(attrs.asdict(report), indent=2)
