"""Subscriber track settings and dynacast in the pure room (pysfu.rtc.room,
pysfu.rtc.dynacast): what the media plane forwards and what publishers encode."""

from __future__ import annotations

from livekit.protocol import models, rtc

from pysfu.rtc.effects import Effects, LayerChoice
from pysfu.rtc.room import Room

Q = models.VideoQuality


def _enabled(fx: Effects, publisher: str) -> list[tuple[bool, bool, bool]]:
    """The SubscribedQualityUpdates ``publisher`` was sent, as (LOW, MEDIUM, HIGH)."""
    out = []
    for sid, msg in fx.messages:
        if sid == publisher and msg.HasField("subscribed_quality_update"):
            update = msg.subscribed_quality_update
            assert [c.codec for c in update.subscribed_codecs] == ["vp8"]
            out.append(tuple(q.enabled for q in update.subscribed_qualities))
    return out


def test_publishers_encode_only_what_someone_receives() -> None:
    room = Room(name="r", created_at=0.0)
    alice, _ = room.join(identity="alice", now=0.0)
    room.add_track(alice.sid, rtc.AddTrackRequest(cid="cam", type=models.TrackType.VIDEO))
    pub, fx = room.track_live(alice.sid, cid="cam", mid="0", mime_type="video/vp8")
    assert pub is not None
    # Nobody subscribes yet: every layer pauses.
    assert _enabled(fx, alice.sid) == [(False, False, False)]
    bob, fx = room.join(identity="bob", now=0.0)
    assert _enabled(fx, alice.sid) == [(True, True, True)]
    fx = room.track_settings(bob.sid, rtc.UpdateTrackSettings(track_sids=[pub.sid], quality=Q.LOW))
    assert fx.layers == [LayerChoice(bob.sid, pub.sid, 0, False)]
    assert _enabled(fx, alice.sid) == [(True, False, False)]
    # A size asks for the layer that fits it.
    fx = room.track_settings(bob.sid, rtc.UpdateTrackSettings(track_sids=[pub.sid], height=360))
    assert _enabled(fx, alice.sid) == [(True, True, False)]
    carol, fx = room.join(identity="carol", now=0.0)
    assert _enabled(fx, alice.sid) == [(True, True, True)]
    fx = room.track_settings(
        carol.sid, rtc.UpdateTrackSettings(track_sids=[pub.sid], disabled=True, quality=Q.HIGH)
    )
    assert fx.layers == [LayerChoice(carol.sid, pub.sid, 2, True)]
    assert _enabled(fx, alice.sid) == [(True, True, False)]
    # The same settings again change nothing.
    fx = room.track_settings(
        carol.sid, rtc.UpdateTrackSettings(track_sids=[pub.sid], disabled=True, quality=Q.HIGH)
    )
    assert fx.layers == [] and _enabled(fx, alice.sid) == []
    fx = room.remove(bob.sid, models.DisconnectReason.CLIENT_INITIATED, now=1.0)
    assert _enabled(fx, alice.sid) == [(False, False, False)]


def test_settings_before_binding_apply_when_it_binds() -> None:
    room = Room(name="r", created_at=0.0)
    alice, _ = room.join(identity="alice", now=0.0)
    bob, _ = room.join(identity="bob", now=0.0, auto_subscribe=False)
    room.add_track(alice.sid, rtc.AddTrackRequest(cid="cam", type=models.TrackType.VIDEO))
    pub, _ = room.track_live(alice.sid, cid="cam", mid="0", mime_type="video/vp8")
    assert pub is not None
    room.update_subscription(bob.sid, track_sids=[pub.sid], subscribe=False)
    fx = room.track_settings(bob.sid, rtc.UpdateTrackSettings(track_sids=[pub.sid], quality=Q.LOW))
    assert fx.layers == []  # not bound: nothing to forward yet
    fx = room.update_subscription(bob.sid, track_sids=[pub.sid], subscribe=True)
    assert fx.layers == [LayerChoice(bob.sid, pub.sid, 0, False)]
    assert _enabled(fx, alice.sid) == [(True, False, False)]
