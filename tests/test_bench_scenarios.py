"""bench/scenarios.py's pure parts: command line to plan (framings, shapes, pinning,
pysfu's rtc.workers), shape to ``lk load-test`` flags, and reading lk's summary from
output captured from real lk runs (tests/data/lk). No server is started and no
benchmark figure is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import compare  # noqa: E402
import lk_loadtest as lk  # noqa: E402
import scenario_plan as sp  # noqa: E402
import scenarios  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "lk"


def test_default_run_measures_both_servers_on_every_shape_per_core() -> None:
    plan = sp.parse_args([], cpus=2)
    assert plan.servers == ("pysfu", "ref")
    assert [s.name for s in plan.shapes] == ["audio", "meeting", "livestream", "idle"]
    assert plan.framing == "core" and plan.generator == "pysfu"
    assert plan.placement.server_cpus == frozenset({0})
    assert plan.placement.generator_cpus == frozenset({1})
    # Today's single-threaded engine: the key is not passed unless asked for.
    assert plan.placement.workers is None
    assert plan.results_dir == sp.RESULTS
    argv = plan.server_argv("pysfu", "python", Path("/tmp/c.yaml"))
    assert argv[:3] == ["taskset", "-c", "0"]
    assert argv[-2:] == ["--config", "/tmp/c.yaml"]
    assert plan.generator_prefix() == ["taskset", "-c", "1"]


def test_machine_framing_gives_the_server_every_core_and_says_the_generator_shares() -> None:
    plan = sp.parse_args(["--framing", "machine", "--server", "ref"], cpus=2)
    assert plan.servers == ("ref",)
    assert plan.placement.server_cpus is None and plan.placement.generator_cpus is None
    assert plan.placement.workers == 2
    assert "shares" in plan.placement.note and "2-core" in plan.placement.note
    ref = plan.server_argv("ref", "python", Path("/x"))
    assert ref == ["/work/ref/livekit-server", "--config", "/work/ref/livekit.yaml"]
    assert plan.generator_prefix() == []
    assert plan.results_dir == sp.RESULTS / "machine-pysfu"


def test_machine_framing_on_a_large_machine_does_not_claim_sharing() -> None:
    where = sp.placement("machine", cpus=16)
    assert where.workers == 16 and "shares" not in where.note


def test_workers_override_and_lk_results_directory() -> None:
    plan = sp.parse_args(["--workers", "1", "--generator", "lk"], cpus=2)
    assert plan.placement.workers == 1
    assert plan.results_dir == sp.RESULTS / "core-lk"
    custom = sp.parse_args(["--results", "/tmp/r"], cpus=2)
    assert custom.results_dir == Path("/tmp/r")


@pytest.mark.parametrize(
    ("argv", "cpus", "message"),
    [
        ([], 1, "needs 2 cores"),
        (["--server-cpu", "1"], 2, "must differ"),
        (["--loadgen-cpu", "5"], 2, "not a core"),
        (["--steps", "10,x"], 2, "whole numbers"),
        (["--steps", "-1"], 2, ">= 0"),
        (["--shape", "idle", "--steps", "0"], 2, "nobody"),
        (["--workers", "-2"], 2, ">= 0"),
        (["--lk-join-rate", "50"], 2, "1-10"),
        (["--duration", "0"], 2, "--duration"),
    ],
)
def test_plans_that_cannot_run_are_refused_with_the_reason(
    argv: list[str], cpus: int, message: str
) -> None:
    with pytest.raises(sp.PlanError, match=message):
        sp.parse_args(argv, cpus=cpus)


def test_one_shape_with_chosen_steps() -> None:
    plan = sp.parse_args(["--shape", "meeting", "--steps", "10,25"], cpus=2)
    assert [(s.name, s.steps) for s in plan.shapes] == [("meeting", (10, 25))]
    assert plan.shapes[0].publishers == 4 and plan.shapes[0].video
    # --scenario still works as before.
    old = sp.parse_args(["--scenario", "audio", "--shape", "audio"], cpus=2)
    assert [s.name for s in old.shapes] == ["audio"]


def test_unknown_shape_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        sp.parse_args(["--shape", "concert"], cpus=2)


def test_pysfu_config_gets_rtc_workers_only_when_asked() -> None:
    base = sp.PYSFU_CONFIG.read_text()
    assert sp.pysfu_config_text(base, None) == base
    raw = yaml.safe_load(sp.pysfu_config_text(base, 2))
    assert raw["rtc"] == {"udp_port": 7882, "workers": 2}
    assert raw["port"] == 7880
    flow = yaml.safe_load(sp.pysfu_config_text("port: 1\nrtc: {udp_port: 9}\n", 3))
    assert flow["rtc"] == {"udp_port": 9, "workers": 3}
    missing = yaml.safe_load(sp.pysfu_config_text("port: 1\n", 4))
    assert missing["rtc"] == {"workers": 4}


def _argv(shape: sp.Shape, subscribers: int = 5) -> list[str]:
    return lk.lk_argv(
        "lk",
        url="ws://127.0.0.1:7880",
        api_key="devkey",
        api_secret="secret",
        room="r0",
        publishers=shape.publishers,
        audio=shape.audio,
        video=shape.video,
        subscribers=subscribers,
        duration_s=20.4,
        join_rate=10,
        identity_prefix="lk0",
    )


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_meeting_maps_to_publishers_of_audio_and_h264_video() -> None:
    argv = _argv(sp.SHAPES["meeting"], subscribers=25)
    assert argv[:2] == ["lk", "load-test"]
    assert _flag(argv, "--audio-publishers") == "4"
    assert _flag(argv, "--video-publishers") == "4"
    assert _flag(argv, "--video-codec") == "h264"
    assert _flag(argv, "--subscribers") == "25"
    assert _flag(argv, "--layout") == "speaker"
    assert _flag(argv, "--duration") == "20s"
    assert _flag(argv, "--room") == "r0"
    assert _flag(argv, "--url") == "ws://127.0.0.1:7880"
    assert _flag(argv, "--api-key") == "devkey" and _flag(argv, "--api-secret") == "secret"
    assert _flag(argv, "--num-per-second") == "10"


def test_audio_room_of_ten_speakers_needs_a_layout_that_subscribes_to_all() -> None:
    argv = _argv(sp.SHAPES["audio"])
    assert _flag(argv, "--audio-publishers") == "10"
    assert "--video-publishers" not in argv and "--video-codec" not in argv
    assert _flag(argv, "--layout") == "4x4"
    assert [lk.layout_for(n) for n in (1, 6, 7, 9, 10, 25)] == [
        "speaker",
        "speaker",
        "3x3",
        "3x3",
        "4x4",
        "5x5",
    ]
    with pytest.raises(ValueError, match="at most 25"):
        lk.layout_for(26)


def test_idle_room_is_subscribers_only() -> None:
    argv = _argv(sp.SHAPES["idle"], subscribers=20)
    assert _flag(argv, "--subscribers") == "20"
    for flag in ("--audio-publishers", "--video-publishers", "--layout"):
        assert flag not in argv
    with pytest.raises(ValueError, match="at least one"):
        _argv(sp.SHAPES["idle"], subscribers=0)


def test_units_of_lk_figures() -> None:
    assert lk.parse_bitrate("999bps") == 999.0
    assert lk.parse_bitrate("10.3kbps") == pytest.approx(10_300)
    assert lk.parse_bitrate("1.5mbps (0.3mbps avg)") == pytest.approx(1_500_000)
    assert lk.parse_bitrate("NaNmbps") is None
    assert lk.parse_loss("12 (0.5%)") == (12, 0.5)
    assert lk.parse_loss(" - ") == (None, None)
    with pytest.raises(lk.SummaryError):
        lk.parse_bitrate("fast")
    with pytest.raises(lk.SummaryError):
        lk.parse_loss("12%")


def test_summary_of_a_run_with_audio_flowing() -> None:
    # livekit-server 1.13.5; lk 2.18.2 built from the module proxy, whose video clips
    # are LFS pointers, so only audio reached the subscribers (1 of 2 tracks).
    summary = lk.parse_summary((DATA / "ref-audio-only-5-subscribers.txt").read_text())
    assert summary.finished_connecting
    assert [t.name for t in summary.subscribers] == [f"Sub {i}" for i in range(5)]
    assert all((t.tracks, t.expected) == (1, 2) for t in summary.subscribers)
    assert summary.subscribers[0].bitrate_bps == pytest.approx(10_300)
    assert summary.subscribers[0].dropped == 0 and summary.subscribers[0].loss_pct == 0.0
    assert summary.total is not None
    assert (summary.total.tracks, summary.total.expected) == (5, 10)
    assert summary.total.bitrate_bps == pytest.approx(51_300)
    assert summary.total.errors == 0
    assert summary.packets == 5 * 251 and summary.track_rows == 5
    assert summary.connect_failures == ()


def test_summary_of_a_run_where_nothing_arrived() -> None:
    summary = lk.parse_summary((DATA / "no-media-5-subscribers.txt").read_text())
    assert summary.finished_connecting
    assert len(summary.subscribers) == 5
    assert all(t.tracks == 0 and t.bitrate_bps is None for t in summary.subscribers)
    assert all(t.dropped is None and t.loss_pct is None for t in summary.subscribers)
    assert summary.packets == 0 and summary.track_rows == 0
    totals = lk.combine([summary])
    assert (totals.tracks, totals.expected, totals.subscribers_with_all_tracks) == (0, 10, 0)
    assert totals.loss_pct is None


def test_rooms_add_up() -> None:
    text = (DATA / "ref-audio-only-5-subscribers.txt").read_text()
    totals = lk.combine([lk.parse_summary(text), lk.parse_summary(text)])
    assert totals.subscribers == 10 and totals.tracks == 10 and totals.expected == 20
    assert totals.packets == 2 * 5 * 251 and totals.dropped == 0
    # The sum of the subscribers' rows (lk's Total divides by the longest track time).
    assert totals.bitrate_bps == pytest.approx(2 * (10.3 + 10.3 + 10.5 + 10.6 + 10.8) * 1000)
    assert totals.loss_pct == 0.0


def test_errors_and_connect_failures_are_read() -> None:
    text = (
        "Starting load test with 1 audio publishers, 2 subscribers, room: r\n"
        "could not connect Sub 1: websocket: bad handshake\n"
        "Finished connecting to room, waiting 5s\n\n"
        "Subscriber summaries:\n"
        "┌────────┬────────┬─────────┬─────────────────┬───────┐\n"
        "│ Tester │ Tracks │ Bitrate │ Total Pkt. Loss │ Error │\n"
        "├────────┼────────┼─────────┼─────────────────┼───────┤\n"
        "│ Sub 0  │ 1/1    │ 32.1kbps │ 3 (1.2%)       │ -     │\n"
        "│ Sub 1  │ 0/1    │ NaNmbps │  -              │ websocket: bad handshake │\n"
        "│ Total  │ 1/2    │ 32.1kbps (16.0kbps avg) │ 3 (1.2%) │ 1 │\n"
        "└────────┴────────┴─────────┴─────────────────┴───────┘\n"
    )
    summary = lk.parse_summary(text)
    assert summary.connect_failures == (("Sub 1", "websocket: bad handshake"),)
    assert summary.subscribers[1].errors == 1
    assert summary.subscribers[1].error == "websocket: bad handshake"
    assert summary.total is not None and summary.total.errors == 1
    assert lk.combine([summary]).dropped == 3


def test_output_cut_before_the_summary_is_an_error() -> None:
    text = (DATA / "ref-audio-only-5-subscribers.txt").read_text()
    cut = text[: text.index("Track loading:")]
    with pytest.raises(lk.SummaryError, match="no subscriber summary"):
        lk.parse_summary(cut)
    # Colour codes (lk on a terminal) do not change what is read.
    coloured = text.replace("Sub 0", "\x1b[1mSub 0\x1b[0m")
    assert lk.parse_summary(coloured).subscribers[0].name == "Sub 0"


def test_a_step_fails_on_loss_missing_joins_or_missing_tracks() -> None:
    ok = {"joined": 10, "participants": 10, "loss_pct": 0.2}
    assert not scenarios.step_failed(ok)
    assert scenarios.step_failed({**ok, "loss_pct": 1.0})
    assert scenarios.step_failed({**ok, "joined": 9})
    assert scenarios.step_failed({**ok, "tracks_subscribed": 9, "tracks_expected": 10})
    assert not scenarios.step_failed({**ok, "tracks_subscribed": 10, "tracks_expected": 10})


def test_idle_memory_reads_growth_and_slope() -> None:
    rows: list[dict[str, object]] = [
        {"participants": 100, "kb_per_participant": 120.0, "rss_before_kb": 50_000,
         "rss_end_kb": 62_000},
        {"participants": 200, "kb_per_participant": 110.0, "rss_before_kb": 50_000,
         "rss_end_kb": 72_000},
    ]  # fmt: skip
    line = scenarios.idle_memory_line("pysfu", rows)
    assert "110.0 kB per joined-but-silent participant (200 participants" in line
    assert "100.0 kB each from 100 to 200" in line
    assert "< 64 kB" in line
    assert "no memory reading" in scenarios.idle_memory_line("ref", [{"participants": 1}])


def test_summary_of_a_pysfu_run_with_audio_and_simulcast_video() -> None:
    # pysfu, 1 publisher of audio and video, 5 subscribers, 15 s; lk 2.18.2 built by
    # bench/build_lk.sh (stand-in clips).
    summary = lk.parse_summary((DATA / "pysfu-livestream-5-subscribers.txt").read_text())
    assert summary.finished_connecting and len(summary.subscribers) == 5
    assert all((t.tracks, t.expected) == (2, 2) for t in summary.subscribers)
    assert summary.total is not None and (summary.total.tracks, summary.total.expected) == (10, 10)
    assert summary.total.bitrate_bps == pytest.approx(7_200_000)
    assert summary.track_rows == 10
    totals = lk.combine([summary])
    assert totals.subscribers_with_all_tracks == 5 and totals.dropped == 0
    assert totals.packets > 10_000  # ~16 s of video and audio to each of 5


def test_pysfu_starts_with_the_machine_framing_config() -> None:
    # Until the sharded engine reads rtc.workers, pysfu warns and ignores it; either
    # way the config the machine framing writes must load.
    from pysfu.config import load_config

    body = sp.pysfu_config_text(sp.PYSFU_CONFIG.read_text(), 2)
    config, _warnings = load_config(config_body=body, env={})
    assert config.udp_port == 7882  # the rest of the file still read


def test_compare_reads_the_directory_scenarios_writes() -> None:
    for framing in sp.FRAMINGS:
        for generator in sp.GENERATORS:
            assert compare.results_dir(framing, generator) == sp.results_dir(framing, generator)


def _lk_row(subscribers: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "generator": "lk",
        "subscribers": subscribers,
        "joined": subscribers + 1,
        "participants": subscribers + 1,
        "loss_pct": 0.1,
        "latency_p50_ms": None,
        "forwarded_pps": 100 * subscribers,
        "kbps_per_subscriber": 1500.0,
        "tracks_subscribed": 2 * subscribers,
        "tracks_expected": 2 * subscribers,
    }
    return {**row, **changes}


def test_compare_holds_lk_rows_without_latency_but_with_every_track() -> None:
    rows = [_lk_row(5), _lk_row(50), _lk_row(100, tracks_subscribed=150)]
    assert compare.held(rows[0], rows) and compare.held(rows[1], rows)
    assert not compare.held(rows[2], rows)
    assert compare.max_held(rows) == rows[1]
    starved = [_lk_row(5), _lk_row(50, kbps_per_subscriber=1000.0)]
    assert not compare.held(starved[1], starved)
    # pysfu's generator's rows still need a latency.
    ours = {**_lk_row(5), "generator": "pysfu", "latency_p50_ms": None}
    assert not compare.held(ours, [ours])
