"""Property-based tests of the room domain: random sequences of joins, leaves,
identity collisions, publishes, mutes and (un)subscriptions, checked against
invariants and a model of what the media plane was told."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from livekit.protocol import models, rtc

from pysfu.rtc.dynacast import subscribed_layers
from pysfu.rtc.lifecycle import ParticipantEvent, ParticipantState
from pysfu.rtc.room import Effects, Room
from pysfu.rtc.subscription import DEFAULT_SETTINGS

IDENTITIES = st.sampled_from(["ann", "ben", "cat", "dan"])
CIDS = st.sampled_from(["c1", "c2", "c3"])
Reason = models.DisconnectReason


class RoomMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.now = 0.0
        self.room = Room(name="r", created_at=0.0, wall_clock=lambda: 1_700_000_000.0)
        self.media: set[tuple[str, str]] = set()
        """(subscriber sid, track sid) pairs the media plane forwards, per bindings."""
        self.seen_versions: dict[tuple[str, str], int] = {}
        """Highest version each recipient saw of each participant sid."""
        self.closed_sessions: set[str] = set()
        self.layers: dict[tuple[str, str], tuple[int, bool]] = {}
        """What the media plane forwards of each bound pair: (layer, disabled)."""
        self.encodes: dict[str, tuple[bool, ...]] = {}
        """Per video track, the qualities its publisher was last told to send."""

    # ---- applying effects like the manager would --------------------------------------

    def apply(self, fx: Effects) -> None:
        for to_sid, msg in fx.messages:
            assert to_sid not in self.closed_sessions, "message after session end"
            infos: list[models.ParticipantInfo] = []
            if msg.HasField("update"):
                infos = list(msg.update.participants)
            elif msg.HasField("join"):
                infos = [msg.join.participant, *msg.join.other_participants]
            for info in infos:
                key = (to_sid, info.sid)
                assert info.version > self.seen_versions.get(key, 0), "version did not grow"
                self.seen_versions[key] = info.version
            if msg.HasField("subscribed_quality_update"):
                update = msg.subscribed_quality_update
                pub = self.room.find_publication(update.track_sid)
                assert pub is not None and pub.publisher_sid == to_sid
                enabled = tuple(q.enabled for q in update.subscribed_qualities)
                assert self.encodes.get(update.track_sid) != enabled, "repeated update"
                self.encodes[update.track_sid] = enabled
        for b in fx.bindings:
            pair = (b.subscriber_sid, b.track_sid)
            if b.bind:
                assert pair not in self.media, "bound twice"
                self.media.add(pair)
                self.layers[pair] = DEFAULT_SETTINGS  # a fresh down track
            else:
                assert pair in self.media, "unbound what was not bound"
                self.media.discard(pair)
                self.layers.pop(pair, None)
        for choice in fx.layers:
            pair = (choice.subscriber_sid, choice.track_sid)
            assert pair in self.media, "layer choice for an unbound track"
            self.layers[pair] = choice.settings()
        for sid, _reason in fx.closes:
            self.closed_sessions.add(sid)

    def sids(self) -> list[str]:
        # Insertion order, not sorted: sids are random, and hypothesis needs the same
        # draw to pick the same participant when it replays an example.
        return list(self.room.participants)

    def tracks(self) -> list[tuple[str, str]]:
        return [(p.sid, t) for p in self.room.participants.values() for t in p.publications]

    # ---- rules --------------------------------------------------------------------------

    @rule(identity=IDENTITIES, auto=st.booleans(), can_sub=st.booleans())
    def join(self, identity: str, auto: bool, can_sub: bool) -> None:
        old = self.room.participant_by_identity(identity)
        p, fx = self.room.join(
            identity=identity,
            now=self.now,
            auto_subscribe=auto,
            permission=models.ParticipantPermission(
                can_publish=True, can_subscribe=can_sub, can_publish_data=True
            ),
        )
        self.apply(fx)
        assert fx.messages[0 if old is None else _first_for(fx, p.sid)][1].HasField("join")
        if old is not None:
            assert (old.sid, Reason.DUPLICATE_IDENTITY) in fx.closes
            assert old.sid not in self.room.participants

    @precondition(lambda self: self.room.participants)
    @rule(
        data=st.data(),
        reason=st.sampled_from([Reason.CLIENT_INITIATED, Reason.PARTICIPANT_REMOVED]),
    )
    def leave(self, data: st.DataObject, reason: int) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        self.apply(self.room.remove(sid, reason, now=self.now))
        assert sid not in self.room.participants
        assert not any(s == sid for s, _ in self.media)

    @precondition(lambda self: self.room.participants)
    @rule(data=st.data(), cid=CIDS, event=st.sampled_from(list(ParticipantEvent)[:2]))
    def lifecycle(self, data: st.DataObject, cid: str, event: ParticipantEvent) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        self.apply(self.room.transition(sid, event))
        assert self.room.participants[sid].state is not ParticipantState.DISCONNECTED

    @precondition(lambda self: self.room.participants)
    @rule(data=st.data(), cid=CIDS)
    def publish(self, data: st.DataObject, cid: str) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        fx = self.room.add_track(
            sid,
            rtc.AddTrackRequest(
                cid=cid, type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
            ),
        )
        self.apply(fx)
        assert fx.messages[-1][1].HasField("track_published")

    @precondition(lambda self: self.room.participants)
    @rule(data=st.data(), cid=CIDS)
    def publish_video(self, data: st.DataObject, cid: str) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        req = rtc.AddTrackRequest(
            cid=f"v{cid}", type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA
        )
        self.apply(self.room.add_track(sid, req))
        self.apply(self.room.track_live(sid, cid=f"v{cid}", mime_type="video/vp8")[1])

    @precondition(lambda self: self.tracks() and self.room.participants)
    @rule(
        data=st.data(),
        quality=st.sampled_from([0, 1, 2, 3]),
        height=st.sampled_from([0, 180, 360, 720]),
        disabled=st.booleans(),
        fps=st.sampled_from([0, 0, 7, 15, 30]),
        priority=st.sampled_from([0, 0, 1, 2]),
    )
    def track_settings(
        self,
        data: st.DataObject,
        quality: int,
        height: int,
        disabled: bool,
        fps: int,
        priority: int,
    ) -> None:
        sub = data.draw(st.sampled_from(self.sids()))
        _, track = data.draw(st.sampled_from(self.tracks()))
        settings = rtc.UpdateTrackSettings(
            track_sids=[track],
            quality=quality,
            height=height,
            disabled=disabled,
            fps=fps,
            priority=priority,
        )
        self.apply(self.room.track_settings(sub, settings))

    @precondition(lambda self: self.room.participants)
    @rule(data=st.data(), cid=CIDS)
    def media_arrives(self, data: st.DataObject, cid: str) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        _, fx = self.room.track_live(sid, cid=cid)
        self.apply(fx)

    @precondition(lambda self: self.tracks())
    @rule(data=st.data())
    def unpublish(self, data: st.DataObject) -> None:
        sid, track = data.draw(st.sampled_from(self.tracks()))
        self.apply(self.room.unpublish(sid, track))
        assert not any(t == track for _, t in self.media)

    @precondition(lambda self: self.tracks())
    @rule(data=st.data(), muted=st.booleans())
    def mute(self, data: st.DataObject, muted: bool) -> None:
        sid, track = data.draw(st.sampled_from(self.tracks()))
        self.apply(self.room.set_muted(sid, track, muted, by_server=False))
        assert self.room.participants[sid].publications[track].info.muted == muted

    @precondition(lambda self: self.tracks() and self.room.participants)
    @rule(data=st.data(), subscribe=st.booleans())
    def subscribe(self, data: st.DataObject, subscribe: bool) -> None:
        sub = data.draw(st.sampled_from(self.sids()))
        _, track = data.draw(st.sampled_from(self.tracks()))
        self.apply(self.room.update_subscription(sub, track_sids=[track], subscribe=subscribe))

    @precondition(lambda self: self.room.participants)
    @rule(data=st.data(), can_sub=st.booleans())
    def change_permission(self, data: st.DataObject, can_sub: bool) -> None:
        sid = data.draw(st.sampled_from(self.sids()))
        perm = models.ParticipantPermission(
            can_publish=True, can_subscribe=can_sub, can_publish_data=True
        )
        self.apply(self.room.update_participant(sid, permission=perm))

    @rule(dt=st.floats(min_value=0, max_value=400))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def flush_updates(self) -> None:
        self.apply(self.room.flush_updates())
        # Batching delays updates, never loses them: after a flush everyone has
        # seen everyone else's latest state.
        for to in self.room.participants.values():
            for about in self.room.participants.values():
                if about.sid != to.sid and not about.hidden:
                    assert self.seen_versions.get((to.sid, about.sid)) == about.version

    # ---- invariants -----------------------------------------------------------------------

    @invariant()
    def room_invariants(self) -> None:
        self.room.check_invariants()

    @invariant()
    def media_matches_subscriptions(self) -> None:
        expected = {
            (s.subscriber_sid, s.track_sid) for s in self.room.subscriptions.values() if s.bound
        }
        assert self.media == expected
        for sub_sid, track in self.media:
            pub = self.room.find_publication(track)
            assert pub is not None and pub.live and pub.publisher_sid != sub_sid
            assert self.room.participants[sub_sid].permission.can_subscribe

    @invariant()
    def media_follows_track_settings(self) -> None:
        for pair in self.media:
            sub = self.room.subscriptions[pair]
            assert self.layers[pair] == sub.settings()

    @invariant()
    def publishers_encode_what_is_received(self) -> None:
        for p in self.room.participants.values():
            for pub in p.publications.values():
                if not pub.live or pub.info.type != models.TrackType.VIDEO:
                    continue
                wanted = subscribed_layers(
                    (s.layer, s.disabled)
                    for (_, t), s in self.room.subscriptions.items()
                    if t == pub.sid and s.bound
                )
                assert self.encodes.get(pub.sid) == wanted

    @invariant()
    def auto_subscribers_get_live_tracks(self) -> None:
        for p in self.room.participants.values():
            if not (p.auto_subscribe and p.permission.can_subscribe):
                continue
            for other in self.room.participants.values():
                for pub in other.publications.values():
                    if other.sid == p.sid or not pub.live:
                        continue
                    sub = self.room.subscriptions.get((p.sid, pub.sid))
                    # Only an explicit unsubscribe may leave a live track unbound.
                    assert sub is not None
                    assert sub.bound or not sub.desired

    @invariant()
    def close_deadline_follows_occupancy(self) -> None:
        deadline = self.room.close_deadline()
        if self.room.participants:
            assert deadline is None
        elif self.room.last_departure is None:
            assert deadline == self.room.empty_timeout_s
        else:
            assert deadline == self.room.last_departure + self.room.departure_timeout_s


def _first_for(fx: Effects, sid: str) -> int:
    return next(i for i, (to, _) in enumerate(fx.messages) if to == sid)


RoomMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRoomMachine = RoomMachine.TestCase


def test_room_close_tells_everyone_and_unbinds() -> None:
    room = Room(name="r", created_at=0.0)
    a, _ = room.join(identity="a", now=0)
    b, _ = room.join(identity="b", now=0)
    room.add_track(a.sid, rtc.AddTrackRequest(cid="c", type=models.TrackType.AUDIO))
    _, live = room.track_live(a.sid, cid="c")
    assert [x.bind for x in live.bindings] == [True]
    fx = room.close(Reason.ROOM_DELETED, now=1)
    leaves = {sid: m.leave.reason for sid, m in fx.messages if m.HasField("leave")}
    assert leaves == {a.sid: Reason.ROOM_DELETED, b.sid: Reason.ROOM_DELETED}
    assert [x.bind for x in fx.bindings] == [False]
    assert fx.room_closed and [e.event for e in fx.events][-1] == "room_finished"


def test_revoking_publish_permission_unpublishes() -> None:
    room = Room(name="r", created_at=0.0)
    a, _ = room.join(identity="a", now=0)
    room.join(identity="b", now=0)
    room.add_track(a.sid, rtc.AddTrackRequest(cid="c", type=models.TrackType.AUDIO))
    _, live = room.track_live(a.sid, cid="c")
    track_sid = live.bindings[0].track_sid
    fx = room.update_participant(
        a.sid, permission=models.ParticipantPermission(can_publish=False, can_subscribe=True)
    )
    assert [x.bind for x in fx.bindings] == [False]
    unpublished = [m for sid, m in fx.messages if sid == a.sid and m.HasField("track_unpublished")]
    assert unpublished[0].track_unpublished.track_sid == track_sid
    assert not room.participants[a.sid].publications
    room.check_invariants()


def test_publications_per_participant_are_capped() -> None:
    from pysfu.rtc.room import MAX_PUBLICATIONS

    room = Room(name="r", created_at=0.0)
    a, _ = room.join(identity="a", now=0)
    for i in range(MAX_PUBLICATIONS):
        fx = room.add_track(a.sid, rtc.AddTrackRequest(cid=f"c{i}", type=models.TrackType.AUDIO))
        assert fx.messages[-1][1].HasField("track_published")
    refused = room.add_track(a.sid, rtc.AddTrackRequest(cid="one-more"))
    reply = refused.messages[-1][1].request_response
    assert reply.reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED
    assert reply.add_track.cid == "one-more"
    assert len(room.participants[a.sid].publications) == MAX_PUBLICATIONS
    # Re-announcing a known cid is not a new publication and still answers.
    again = room.add_track(a.sid, rtc.AddTrackRequest(cid="c0"))
    assert again.messages[-1][1].HasField("track_published")


def test_oversized_metadata_is_refused_and_changes_nothing() -> None:
    from pysfu.rtc.room import MAX_METADATA_BYTES

    room = Room(name="r", created_at=0.0)
    perm = models.ParticipantPermission(can_update_metadata=True, can_publish=True)
    a, _ = room.join(identity="a", now=0, metadata="small", permission=perm)
    version = room.participants[a.sid].version
    big = "x" * (MAX_METADATA_BYTES + 1)
    for req in (
        rtc.UpdateParticipantMetadata(metadata=big, request_id=1),
        rtc.UpdateParticipantMetadata(name=big, request_id=2),
        rtc.UpdateParticipantMetadata(attributes={"k": big}, request_id=3),
    ):
        fx = room.update_own_metadata(a.sid, req)
        reply = fx.messages[-1][1].request_response
        assert reply.reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED
        assert reply.request_id == req.request_id
    p = room.participants[a.sid]
    assert p.metadata == "small" and not p.attributes and p.version == version


def _updates_to(fx: Effects, sid: str) -> list[list[str]]:
    return [
        [i.identity for i in m.update.participants]
        for to, m in fx.messages
        if to == sid and m.HasField("update")
    ]


def test_subscriber_only_changes_are_batched_and_publishers_are_not() -> None:
    room = Room(name="r", created_at=0.0)
    a, _ = room.join(identity="a", now=0)
    # b and c only subscribe: a hears of them at the next flush, both in one update.
    b, fx_b = room.join(identity="b", now=0)
    c, fx_c = room.join(identity="c", now=0)
    assert _updates_to(fx_b, a.sid) == [] and _updates_to(fx_c, a.sid) == []
    flushed = room.flush_updates()
    assert _updates_to(flushed, a.sid) == [["b", "c"]]
    # b saw c only at the flush; c saw a and b in its JoinResponse already.
    assert _updates_to(flushed, b.sid) == [["c"]]
    assert _updates_to(flushed, c.sid) == []
    assert room.flush_updates().messages == []
    # A track going live is news for everyone at once.
    room.add_track(b.sid, rtc.AddTrackRequest(cid="t", type=models.TrackType.AUDIO))
    _, live = room.track_live(b.sid, cid="t")
    assert _updates_to(live, a.sid) == [["b"]] and _updates_to(live, c.sid) == [["b"]]
