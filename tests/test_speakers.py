"""The pure speaker selection (pysfu.rtc.speakers) against the reference's rules."""

from __future__ import annotations

from livekit.protocol import models, rtc

from pysfu.rtc.room import Room
from pysfu.rtc.speakers import ACTIVE_THRESHOLD, LevelMeter, LevelSummary, Speakers

LOUD = LevelSummary(observed_ms=400, active_ms=400, loudest=6)
QUIET = LevelSummary(observed_ms=400, active_ms=0, loudest=127)


def test_a_loud_window_speaks_at_once_and_a_quiet_one_stops_it() -> None:
    m = LevelMeter()
    m.observe(LOUD, now=0.4)
    level, speaking = m.level(0.4)
    # EMA over two windows from silence: 2/3 of -6 dBov in linear scale.
    assert speaking and abs(level - (2 / 3) * 10 ** (-6 / 20)) < 1e-9
    m.observe(QUIET, now=0.8)
    assert m.level(0.8) == (0.0, False)


def test_brief_or_faint_sound_is_not_speech() -> None:
    m = LevelMeter()
    # Loud for 100 ms of 400: under the 40th percentile.
    m.observe(LevelSummary(observed_ms=400, active_ms=100, loudest=0), now=0.4)
    assert m.level(0.4) == (0.0, False)
    # Half the window at the threshold level reads below the threshold.
    m.observe(LevelSummary(observed_ms=400, active_ms=200, loudest=35), now=0.8)
    level, speaking = m.level(0.8)
    assert 0 < level < ACTIVE_THRESHOLD and not speaking


def test_partial_windows_accumulate_and_stale_tracks_fall_silent() -> None:
    m = LevelMeter()
    m.observe(LevelSummary(observed_ms=200, active_ms=200, loudest=10), now=0.2)
    assert m.level(0.2) == (0.0, False)
    m.observe(LevelSummary(observed_ms=200, active_ms=200, loudest=10), now=0.4)
    assert m.level(0.4)[1]
    assert m.level(0.4 + 0.8) == (0.0, False)


def test_changes_announce_starts_level_changes_and_stops_once() -> None:
    s = Speakers()
    mics = {"PA_a": ["TR_a"], "PA_b": ["TR_b"]}
    s.observe("TR_a", LOUD, 0.4)
    s.observe("TR_b", QUIET, 0.4)
    (first,) = s.changes(mics, 0.4)
    assert first.sid == "PA_a" and first.active and first.level * 8 == int(first.level * 8)
    s.observe("TR_a", LOUD, 0.8)
    # The EMA moved the level up a quantum: news. The same level again is not.
    assert [c.sid for c in s.changes(mics, 0.8)] == ["PA_a"]
    s.observe("TR_a", LOUD, 1.2)
    s.observe("TR_a", LOUD, 1.6)
    s.changes(mics, 1.6)
    s.observe("TR_a", LOUD, 2.0)
    assert s.changes(mics, 2.0) == []
    s.observe("TR_a", QUIET, 2.4)
    (stop,) = s.changes(mics, 2.4)
    assert (stop.sid, stop.active, stop.level) == ("PA_a", False, 0.0)
    assert s.changes(mics, 2.8) == []


def test_loudest_first_and_muted_tracks_left_out() -> None:
    s = Speakers()
    s.observe("TR_a", LevelSummary(400, 400, 20), 0.4)
    s.observe("TR_b", LOUD, 0.4)
    assert [x.sid for x in s.current({"PA_a": ["TR_a"], "PA_b": ["TR_b"]}, 0.4)] == [
        "PA_b",
        "PA_a",
    ]
    assert [x.sid for x in s.current({"PA_a": ["TR_a"], "PA_b": []}, 0.4)] == ["PA_a"]


def test_a_new_subscriber_of_a_speaker_hears_of_it_at_once() -> None:
    room = Room(name="r", created_at=0.0)
    alice, _ = room.join(identity="alice", now=0.0)
    room.add_track(
        alice.sid,
        rtc.AddTrackRequest(
            cid="mic", type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
        ),
    )
    pub, _ = room.track_live(alice.sid, cid="mic", mid="0")
    assert pub is not None
    fx = room.audio_levels([(pub.sid, 400, 400, 6)], now=0.4)
    ((sid, msg),) = fx.messages
    assert sid == alice.sid and msg.speakers_changed.speakers[0].sid == alice.sid
    bob, fx = room.join(identity="bob", now=0.5)
    to_bob = [
        m.speakers_changed
        for s, m in fx.messages
        if s == bob.sid and m.HasField("speakers_changed")
    ]
    assert [[x.sid for x in c.speakers] for c in to_bob] == [[alice.sid]]
    assert to_bob[0].speakers[0].active
