"""``pysfu loadtest``: plans, report arithmetic, the CLI, and a small real run against
the server fixture (synthetic media through the real SFU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio
from trio_websocket import ConnectionRejected

from pysfu.loadtest import LoadPlan, PlanError, format_table, run_loadtest, to_json
from pysfu.loadtest.probe import ProcessSample, ServerProbe
from pysfu.loadtest.report import Distribution, build_report, percentile
from pysfu.loadtest.signal import SignalError, describe_error, signal_url

from .conftest import API_KEY, API_SECRET, RunningServer

# --- plan -------------------------------------------------------------------------


def test_plan_layout_publishers_first() -> None:
    plan = LoadPlan(rooms=2, publishers=1, subscribers=2, audio=True, video=True, run_id="x")
    specs = plan.participants()
    assert [s.identity for s in specs] == [
        "pub-0-0",
        "pub-1-0",
        "sub-0-0",
        "sub-0-1",
        "sub-1-0",
        "sub-1-1",
    ]
    assert plan.total_participants == len(specs) == 6
    assert {s.room for s in specs} == {"loadtest-0-x", "loadtest-1-x"}
    pub = specs[0]
    assert [t.kind for t in pub.tracks] == ["audio", "video"]
    assert [t.kbps for t in pub.tracks] == [32, 1500]
    assert len({t.cid for s in specs for t in s.tracks}) == 4
    assert not pub.auto_subscribe
    assert specs[2].auto_subscribe and specs[2].tracks == ()


def test_plan_run_ids_differ_between_runs() -> None:
    assert LoadPlan().room_name(0) != LoadPlan().room_name(0)


@pytest.mark.parametrize(
    "bad",
    [
        {"rooms": 0},
        {"publishers": -1},
        {"subscribers": -3},
        {"publishers": 0, "subscribers": 0},
        {"audio": False, "video": False},
        {"video_kbps": 0, "video": True},
        {"audio_kbps": -32},
        {"duration_s": 0},
        {"duration_s": float("nan")},
        {"ramp_up_s": -1},
        {"join_concurrency": 0},
        {"join_rate": 0.0},
        {"rooms": 1.5},
        {"url": "127.0.0.1:7880"},
        {"url": "ftp://host"},
        {"server_pid": 0},
        {"api_secret": ""},
    ],
)
def test_plan_refuses_bad_numbers(bad: dict[str, object]) -> None:
    with pytest.raises(PlanError):
        LoadPlan(**bad)  # type: ignore[arg-type]


def test_subscriber_only_plan_needs_no_media() -> None:
    plan = LoadPlan(publishers=0, subscribers=3, audio=False, video=False)
    assert all(s.role == "subscriber" for s in plan.participants())


def test_signal_url() -> None:
    url = signal_url("http://h:1/prefix/", "tok", auto_subscribe=False)
    assert url.startswith("ws://h:1/prefix/rtc?access_token=tok&")
    assert "auto_subscribe=0" in url and "protocol=15" in url
    assert "auto_subscribe=1" in signal_url("wss://h", "t", auto_subscribe=True)


def test_errors_read_as_one_line() -> None:
    rejected = ConnectionRejected(401, (), b"invalid signature\n")
    assert describe_error(rejected) == "server refused the connection: HTTP 401: invalid signature"
    grouped = ExceptionGroup("nursery", [SignalError("timed out after 15 s waiting for x")])
    assert describe_error(grouped) == "timed out after 15 s waiting for x"


# --- report -----------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 95) == pytest.approx(95.05)
    with pytest.raises(ValueError):
        percentile([], 50)
    assert Distribution.of([]) is None
    d = Distribution.of(values)
    assert d is not None and (d.count, d.p50, d.max) == (100, 50.5, 100.0)


def test_report_aggregates_and_formats() -> None:
    plan = LoadPlan(publishers=1, subscribers=2, audio=True, video=True, server_pid=1234)
    mb = 1_000_000
    report = build_report(
        plan,
        join_ms=[10.0, 20.0, 30.0],
        first_media_ms=[100.0, 300.0],
        subscribers_without_media=0,
        failed=[],
        dropped=[("sub-0-1", "server sent leave (ROOM_DELETED)")],
        stats={
            "packets_sent": 1000,
            "bytes_sent": 500_000,
            "packets_received": 1960,
            "bytes_received": 980_000,
            "packets_expected": 2000,
            "latency_samples": 1960,
            "latency_p50_us": 400,
            "latency_p95_us": 900,
            "latency_p99_us": 1500,
            "latency_max_us": 8000,
            "peers": 3,
            "peers_connected": 3,
        },
        window_s=10.0,
        server_pid=1234,
        server_samples=(
            ProcessSample(at_s=0, cpu_s=1.0, rss_bytes=50 * mb),
            ProcessSample(at_s=5, cpu_s=3.0, rss_bytes=55 * mb),
            ProcessSample(at_s=15, cpu_s=5.0, rss_bytes=56 * mb),
        ),
        rss_peak=57 * mb,
        generator_samples=(
            ProcessSample(at_s=5, cpu_s=40.0, rss_bytes=80 * mb),
            ProcessSample(at_s=15, cpu_s=47.5, rss_bytes=81 * mb),
        ),
    )
    assert report.all_joined and report.joined == 3 and report.dropped == 1
    assert report.loss_pct == pytest.approx(2.0)
    assert report.packets_received_per_s == pytest.approx(196.0)
    assert report.kbps_sent == pytest.approx(400.0)
    assert report.join_ms is not None and report.join_ms.p50 == 20.0
    assert report.first_media_ms is not None and report.first_media_ms.max == 300.0
    assert report.latency_ms is not None
    assert (report.latency_ms.p50, report.latency_ms.p99) == (0.4, 1.5)
    server = report.server
    assert server is not None
    assert server.cpu_s == pytest.approx(2.0) and server.cpu_pct == pytest.approx(20.0)
    assert server.packets_per_cpu_s == pytest.approx(980.0)
    assert server.memory_per_participant_bytes == pytest.approx(2 * mb)
    assert server.rss_peak_bytes == 57 * mb
    assert report.generator_cpu_pct == pytest.approx(75.0)  # 7.5 CPU-s in a 10 s window

    table = format_table(report)
    for text in ("3/3 joined", "2.00 %", "p99 1.5 ms", "20.0 % of a core", "2,000 kB"):
        assert text in table, table
    assert "generator CPU  75.0 % of a core" in table, table
    assert "1x server sent leave (ROOM_DELETED) (e.g. sub-0-1)" in table
    data = json.loads(to_json(report))
    assert data["server"]["cpu_s"] == pytest.approx(2.0)
    assert data["generator_cpu_pct"] == pytest.approx(75.0)
    assert data["latency_ms"]["p95"] == 0.9
    assert data["failures"][0]["count"] == 1


def test_report_counts_streams_that_never_arrived_as_loss() -> None:
    # Two publishers, three subscribers: 600 packets owed. Each received stream is
    # complete, but one subscriber never got one publisher's track.
    plan = LoadPlan(publishers=2, subscribers=3, audio=True)
    report = build_report(
        plan,
        join_ms=[],
        first_media_ms=[],
        subscribers_without_media=0,
        failed=[],
        dropped=[],
        stats={"packets_sent": 200, "packets_received": 500, "packets_expected": 500},
        window_s=1.0,
    )
    assert report.packets_expected == 600
    assert report.loss_pct == pytest.approx(100 / 6)


def test_report_of_a_run_where_nobody_joined() -> None:
    plan = LoadPlan(publishers=1, subscribers=1)
    report = build_report(
        plan,
        join_ms=[],
        first_media_ms=[],
        subscribers_without_media=0,
        failed=[("pub-0-0", "HTTP 401"), ("sub-0-0", "HTTP 401")],
        dropped=[],
        stats={},
        window_s=0.0,
    )
    assert not report.all_joined and report.failed == 2
    assert report.loss_pct is None and report.latency_ms is None and report.server is None
    assert report.generator_cpu_pct is None
    assert "2x HTTP 401" in format_table(report)


def test_probe_reads_a_process() -> None:
    import os

    probe = ServerProbe(os.getpid())
    sample = probe.sample()
    assert sample.rss_bytes > 0 and sample.cpu_s > 0


# --- CLI --------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysfu.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help() -> None:
    result = _cli("loadtest", "--help")
    assert result.returncode == 0
    for flag in ("--publishers", "--subscribers", "--video-kbps", "--server-pid", "--json"):
        assert flag in result.stdout


def test_cli_refuses_bad_numbers() -> None:
    result = _cli("loadtest", "--rooms", "0")
    assert result.returncode == 2
    assert "rooms must be > 0" in result.stderr


def test_cli_wrong_secret_fails_with_401(server: RunningServer) -> None:
    result = _cli(
        "loadtest",
        "--url",
        server.url,
        "--api-key",
        API_KEY,
        "--api-secret",
        "not-the-secret",
        "--publishers",
        "1",
        "--subscribers",
        "1",
        "--duration",
        "1",
        "--ramp-up",
        "0",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 of 2 participants failed to join" in result.stderr
    assert "HTTP 401" in result.stderr


# --- a real run -------------------------------------------------------------------


def test_small_run_against_the_server(server: RunningServer, tmp_path: object) -> None:
    plan = LoadPlan(
        url=server.url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        rooms=1,
        publishers=1,
        subscribers=2,
        audio=True,
        video=True,
        video_kbps=500,
        duration_s=3.0,
        ramp_up_s=2.0,
    )
    report = trio.run(run_loadtest, plan)
    assert report.all_joined, format_table(report)
    assert report.dropped == 0, format_table(report)
    assert report.join_ms is not None and report.join_ms.count == 3
    assert report.first_media_ms is not None and report.first_media_ms.count == 2
    assert report.subscribers_without_media == 0
    assert report.packets_sent > 0 and report.packets_received > 0
    assert report.loss_pct is not None and report.loss_pct < 5, format_table(report)
    assert report.latency_samples > 0
    assert report.server is None
    assert report.generator_cpu_pct is not None and report.generator_cpu_pct > 0
