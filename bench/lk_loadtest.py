"""LiveKit's ``lk load-test`` as a second, independent load generator (pure, no I/O).

``lk_argv`` maps a shape's room to one ``lk load-test`` command line; ``parse_summary``
reads what that command prints (livekit-cli v2.18: pkg/loadtester/loadtest.go) into
numbers; ``combine`` adds up the rooms of a step.

What lk can report, per subscriber and in total: tracks subscribed against tracks
expected, received payload bitrate, packets (counted after its sample builder) and
packets it found missing ("Pkt. Loss", gaps its sample builder dropped), and per
tester the error that stopped it. It has no forwarding latency and no
join-to-first-media time; publishers' own errors are not in its tables (only the
"could not connect" lines it prints on the way).

How a shape maps onto lk's flags:

- a publisher of the shape is one lk tester publishing audio (``--audio-publishers``)
  and/or video (``--video-publishers``): lk makes the first N testers publishers of
  each kind, so with both counts equal every publisher sends both;
- lk's video is simulcast (three layers) from its own clips, and each subscriber takes
  the highest layer of one publisher and the lowest of the others (its "speaker"
  layout) — so video load differs from pysfu's generator (one 1.2 Mbit/s layer);
- lk subscribes to at most a layout's count of publishers (speaker 6, 3x3 9, 4x4 16,
  5x5 25): the smallest layout holding every publisher of the room is chosen;
- ``--video-codec h264``: lk's subscriber depacketises every video track as H.264,
  so with VP8 publishers its loss count would be wrong;
- one lk process per room (lk load-test has one ``--room``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "LAYOUTS",
    "LkSummary",
    "LkTester",
    "LkTotals",
    "SummaryError",
    "combine",
    "layout_for",
    "lk_argv",
    "parse_bitrate",
    "parse_loss",
    "parse_summary",
]

LAYOUTS = (("speaker", 6), ("3x3", 9), ("4x4", 16), ("5x5", 25))
"""lk's layouts and how many publishers a subscriber of each subscribes to."""

FINISHED_CONNECTING = "Finished connecting to room"
"""lk prints this once every tester has joined (or failed); its ``--duration`` starts."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STARTING = re.compile(r"^Starting load test with .*?(?:(?P<subs>\d+) subscribers)?, room: ")
_CONNECT_FAILED = re.compile(r"^could not connect (?P<name>(?:Sub|Pub) \d+): (?P<error>.*)$")


class SummaryError(ValueError):
    """lk's output has no summary to read (it failed before printing one)."""


def layout_for(publishers: int) -> str:
    """The smallest lk layout whose subscribers take every one of ``publishers``."""
    for name, count in LAYOUTS:
        if publishers <= count:
            return name
    raise ValueError(f"lk subscribes to at most {LAYOUTS[-1][1]} publishers, not {publishers}")


def lk_argv(
    binary: str,
    *,
    url: str,
    api_key: str,
    api_secret: str,
    room: str,
    publishers: int,
    audio: bool,
    video: bool,
    subscribers: int,
    duration_s: float,
    join_rate: int,
    identity_prefix: str,
) -> list[str]:
    """One ``lk load-test`` command line for one room."""
    if publishers and not (audio or video):
        raise ValueError("publishers need audio, video or both")
    if publishers + subscribers == 0:
        # lk would then run its default of one publisher and one subscriber.
        raise ValueError("a room needs at least one publisher or subscriber")
    argv = [
        binary,
        "load-test",
        "--url",
        url,
        "--api-key",
        api_key,
        "--api-secret",
        api_secret,
        "--room",
        room,
        "--identity-prefix",
        identity_prefix,
        "--subscribers",
        str(subscribers),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--num-per-second",
        str(join_rate),
    ]
    if publishers and audio:
        argv += ["--audio-publishers", str(publishers)]
    if publishers and video:
        argv += ["--video-publishers", str(publishers), "--video-codec", "h264"]
    if publishers:
        argv += ["--layout", layout_for(publishers)]
    return argv


@attrs.frozen
class LkTester:
    """One row of lk's "Subscriber summaries" table (or its Total row)."""

    name: str
    tracks: int
    expected: int
    bitrate_bps: float | None
    """Received payload bits per second; None when lk had nothing to divide (NaN)."""
    dropped: int | None
    """Packets lk's sample builder found missing; None when no packet arrived."""
    loss_pct: float | None
    errors: int
    """1 when the tester stopped on an error (the Total row: how many did)."""
    error: str | None


@attrs.frozen
class LkSummary:
    """What one ``lk load-test`` run printed."""

    finished_connecting: bool
    subscribers: tuple[LkTester, ...]
    total: LkTester | None
    packets: int
    """Packets received by all subscribers (the "Track loading" table's Pkts.)."""
    track_rows: int
    connect_failures: tuple[tuple[str, str], ...]
    """(tester, error) for each "could not connect" line."""


def parse_bitrate(text: str) -> float | None:
    """``10.3kbps`` / ``1.2mbps`` / ``999bps`` (lk's ``formatBitrate``) in bit/s;
    the total's ``51.3kbps (10.3kbps avg)`` reads as its first figure."""
    m = re.match(r"^\s*(NaN|[+-]?Inf|[0-9.]+)\s*(bps|kbps|mbps)", text)
    if m is None:
        raise SummaryError(f"not an lk bitrate: {text!r}")
    value, unit = m.groups()
    if value in ("NaN", "Inf", "+Inf", "-Inf"):
        return None
    return float(value) * {"bps": 1.0, "kbps": 1e3, "mbps": 1e6}[unit]


def parse_loss(text: str) -> tuple[int | None, float | None]:
    """``3 (0.12%)`` as (3, 0.12); `` - `` (no packet received) as (None, None)."""
    text = text.strip()
    if text in ("-", ""):
        return None, None
    m = re.match(r"^(\d+) \(([0-9.]+)%\)$", text)
    if m is None:
        raise SummaryError(f"not an lk packet loss: {text!r}")
    return int(m.group(1)), float(m.group(2))


def _cells(line: str) -> list[str] | None:
    """The cells of a table row drawn with box characters, None for a border line."""
    line = line.strip()
    if not line.startswith("│"):
        return None
    return [c.strip() for c in line.strip("│").split("│")]


def _table(lines: Sequence[str], title: str) -> list[list[str]] | None:
    """The data rows of the table printed after ``title`` (header row dropped)."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == title)
    except StopIteration:
        return None
    rows: list[list[str]] = []
    seen_header = False
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith("└"):
            break
        cells = _cells(line)
        if cells is None:
            continue
        if not seen_header:
            seen_header = True
            continue
        rows.append(cells)
    return rows


def _tester(cells: Sequence[str]) -> LkTester:
    if len(cells) != 5:
        raise SummaryError(f"an lk summary row has 5 cells, this one {len(cells)}: {cells}")
    name, tracks, bitrate, loss, error = cells
    m = re.match(r"^(\d+)/(\d+)$", tracks)
    if m is None:
        raise SummaryError(f"not an lk track count: {tracks!r}")
    dropped, pct = parse_loss(loss)
    total = name == "Total"
    if total:
        errors, message = int(error), None
    else:
        errors, message = (0, None) if error == "-" else (1, error)
    return LkTester(
        name=name,
        tracks=int(m.group(1)),
        expected=int(m.group(2)),
        bitrate_bps=parse_bitrate(bitrate),
        dropped=dropped,
        loss_pct=pct,
        errors=errors,
        error=message,
    )


def parse_summary(output: str) -> LkSummary:
    """Read one ``lk load-test`` run's standard output (colours or not).

    Raises :class:`SummaryError` when there is no "Subscriber summaries" table
    although lk finished connecting with subscribers in the room (lk prints no
    summary only when it has no subscriber at all).
    """
    lines = _ANSI.sub("", output).splitlines()
    failures = tuple(
        (m.group("name"), m.group("error"))
        for m in (_CONNECT_FAILED.match(line.strip()) for line in lines)
        if m is not None
    )
    finished = any(FINISHED_CONNECTING in line for line in lines)
    packets = track_rows = 0
    for cells in _table(lines, "Track loading:") or []:
        if len(cells) == 6 and cells[3].isdigit():
            packets += int(cells[3])
            track_rows += 1
    rows = _table(lines, "Subscriber summaries:")
    if rows is None:
        starts = [m for m in map(_STARTING.match, lines) if m is not None]
        if finished and any(m.group("subs") for m in starts):
            raise SummaryError("lk finished connecting but printed no subscriber summary")
        return LkSummary(finished, (), None, packets, track_rows, failures)
    testers = [_tester(cells) for cells in rows]
    total = next((t for t in testers if t.name == "Total"), None)
    return LkSummary(
        finished_connecting=finished,
        subscribers=tuple(t for t in testers if t.name != "Total"),
        total=total,
        packets=packets,
        track_rows=track_rows,
        connect_failures=failures,
    )


@attrs.frozen
class LkTotals:
    """A step's rooms added up."""

    subscribers: int
    subscribers_with_all_tracks: int
    tracks: int
    expected: int
    packets: int
    dropped: int
    bitrate_bps: float
    errors: int
    connect_failures: int

    @property
    def loss_pct(self) -> float | None:
        seen = self.packets + self.dropped
        return 100 * self.dropped / seen if seen else None


def combine(summaries: Iterable[LkSummary]) -> LkTotals:
    items = list(summaries)
    subs = [t for s in items for t in s.subscribers]
    return LkTotals(
        subscribers=len(subs),
        subscribers_with_all_tracks=sum(1 for t in subs if t.tracks >= t.expected),
        tracks=sum(t.tracks for t in subs),
        expected=sum(t.expected for t in subs),
        packets=sum(s.packets for s in items),
        dropped=sum(t.dropped or 0 for t in subs),
        bitrate_bps=sum(t.bitrate_bps or 0.0 for t in subs),
        errors=sum(t.errors for t in subs),
        connect_failures=sum(len(s.connect_failures) for s in items),
    )
