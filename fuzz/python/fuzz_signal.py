"""Fuzz the signaling path: raw WebSocket frames and SignalRequest sequences from
several participants, through the server's join choreography and signal connections
(``pysfu.testing.join``: decode, handle, writer, liveness, resume) and
``RoomManager`` into live rooms, with a mock clock and a recording media plane.

One input is a small program of operations (join, raw frame, structured request,
text/oversized frame, socket close, stalled reader, media facts, admin changes, time
passing). After every operation the harness checks:

- ``Room.check_invariants()`` for every live room (one participant per identity, no
  subscription to an unpublished track, bound only when live/allowed/desired);
- the media plane is never told to bind twice or unbind what is not bound;
- each client's first message is ``join``, nothing follows a ``leave``, and the
  ``version`` of every ParticipantInfo a client sees grows strictly;
- every participant in a room has a live session, and no error was logged;

and at the end, once all sockets are closed, that no session, participant or binding
is left behind (no leak). Run: ``python fuzz/python/fuzz_signal.py fuzz/corpus/signal``.
"""

from __future__ import annotations

import sys

from _common import Provider, capture_errors, instrumented, run, run_trio

with instrumented("pysfu"):
    import trio
    import trio.testing
    from livekit.protocol import models, rtc

    import pysfu.runtime.sessions
    from pysfu import testing
    from pysfu.auth import Claims, VideoGrant
    from pysfu.rtc.effects import Binding, DataDelivery, LayerChoice, Mute
    from pysfu.rtc.lifecycle import ParticipantEvent
    from pysfu.rtc.room import Room
    from pysfu.runtime.manager import JoinParams, ResumeRefused, RoomManager
    from pysfu.runtime.sessions import ParticipantSession
    from pysfu.signal.connection import MAX_FRAME_BYTES

ERRORS = capture_errors()

# A small outbox makes the "participant too slow, removed" path reachable in a few
# operations; the logic does not depend on the size.
pysfu.runtime.sessions.OUTBOX_CAPACITY = 8

MAX_OPS = 48
IDENTITIES = ["ann", "ben", "cat", "dan"]
CIDS = ["c0", "c1", "c2", "c3"]
ROOMS = ["r0", "r1"]
Reason = models.DisconnectReason


class ClientError(AssertionError):
    pass


class FakeTransport(testing.MemoryTransport):
    """The client end of one WebSocket: frames in, decoded SignalResponses out, each
    checked as a client would see it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.versions: dict[str, int] = {}
        self.stalled = False
        self.left = False
        self.hung_up = False
        self.resumed = False

    async def send(self, data: bytes) -> None:
        if self.stalled and not self.closed:  # a slow reader that never reads
            await trio.sleep_forever()
        await super().send(data)

    def on_message(self, msg: rtc.SignalResponse) -> None:
        kind = msg.WhichOneof("message")
        first = "reconnect" if self.resumed else "join"
        if not self.received and kind not in (first, "leave"):
            raise ClientError(f"{self.name}: first message is {kind}, not {first}")
        if self.left:
            raise ClientError(f"{self.name}: {kind} after leave")
        if kind == "leave":
            self.left = True
        infos: list[models.ParticipantInfo] = []
        if kind == "update":
            infos = list(msg.update.participants)
        elif kind == "join":
            infos = [msg.join.participant, *msg.join.other_participants]
            if msg.join.ping_timeout <= 0 or msg.join.ping_interval <= 0:
                raise ClientError("zero ping interval/timeout")
        for info in infos:
            seen = self.versions.get(info.sid, 0)
            # A resume restates everyone at their current version once.
            if info.version < seen or (info.version == seen and not self.resumed):
                raise ClientError(f"{self.name}: version of {info.sid} did not grow")
            self.versions[info.sid] = info.version

    def send_frame(self, frame: bytes | str) -> None:
        if not self.hung_up:
            super().send_frame(frame)

    def hang_up(self) -> None:
        self.hung_up = True
        super().hang_up()


class RecordingMedia:
    """A MediaPlane that checks the bindings it is told about."""

    def __init__(self) -> None:
        self.bound: set[tuple[str, str]] = set()
        self.removed: set[str] = set()
        self.joined: set[str] = set()

    def participant_joined(self, room: Room, sid: str, *, single_pc: bool = False) -> None:
        self.joined.add(sid)

    def offer_initial(self, sid: str) -> None:
        assert sid in self.joined, "offer for a participant the media plane never saw"

    def publisher_offer(self, sid: str, offer: rtc.SessionDescription) -> None:
        pass

    def subscriber_answer(self, sid: str, answer: rtc.SessionDescription) -> None:
        pass

    def trickle(self, sid: str, trickle: rtc.TrickleRequest) -> None:
        pass

    connected = False

    def resumed(self, sid: str, *, ice_restart: bool) -> None:
        assert sid in self.joined, "resume of a participant the media plane never saw"

    def apply_mutes(self, mutes: list[Mute]) -> None:
        pass

    def apply_layers(self, layers: list[LayerChoice]) -> None:
        pass

    def apply_bindings(self, bindings: list[Binding]) -> None:
        for b in bindings:
            pair = (b.subscriber_sid, b.track_sid)
            # The real media plane drops bindings for participants it does not know.
            assert b.subscriber_sid in self.joined, f"binding before join: {pair}"
            if b.bind:
                assert pair not in self.bound, f"bound twice: {pair}"
                self.bound.add(pair)
            else:
                assert pair in self.bound, f"unbound what was not bound: {pair}"
                self.bound.discard(pair)

    def deliver_data(self, deliveries: list[DataDelivery]) -> None:
        pass

    def tracks_unpublished(self, track_sids: list[str]) -> None:
        # Subscriptions are unbound before the track is dropped from the media plane.
        for track_sid in track_sids:
            assert not any(t == track_sid for _, t in self.bound), f"{track_sid} still bound"

    def participant_removed(self, sid: str) -> None:
        self.removed.add(sid)


class Harness:
    def __init__(self, fdp: Provider, clock: trio.testing.MockClock) -> None:
        self.fdp = fdp
        self.clock = clock
        self.manager = RoomManager()
        self.media = RecordingMedia()
        self.manager.media = self.media
        self.clients: list[tuple[FakeTransport, ParticipantSession]] = []
        self.rooms_seen: list[Room] = []

    # ---- pools the fuzzer picks from ------------------------------------------------------

    def track_sids(self) -> list[str]:
        return [
            t
            for room in self.rooms_seen
            for p in room.participants.values()
            for t in p.publications
        ]

    def pick_track(self) -> str:
        fdp = self.fdp
        tracks = self.track_sids()
        if tracks and fdp.byte() < 224:
            return fdp.pick(tracks)
        return fdp.pick(["", "TR_000000000001", "TR_x", fdp.text(16)])

    def pick_client(self) -> tuple[FakeTransport, ParticipantSession] | None:
        return self.fdp.pick(self.clients)

    # ---- operations -------------------------------------------------------------------------

    async def join(self, nursery: trio.Nursery) -> None:
        fdp = self.fdp
        identity = fdp.pick(IDENTITIES)
        room_name = fdp.pick(ROOMS)
        flags = fdp.byte()
        grant = VideoGrant(
            room_join=True,
            room=room_name,
            can_publish=not flags & 1,
            can_subscribe=not flags & 2,
            can_publish_data=not flags & 4,
            can_update_own_metadata=bool(flags & 8),
            hidden=bool(flags & 16),
            can_publish_sources=("camera", "microphone") if flags & 32 else (),
        )
        claims = Claims(
            api_key="k",
            identity=identity,
            video=grant,
            expires_at=0,
            name=identity.upper(),
            attributes={"a": "1"},
        )
        params = JoinParams(auto_subscribe=not flags & 64, protocol=16)
        room = self.manager.create_room(room_name)
        if room not in self.rooms_seen:
            self.rooms_seen.append(room)
        transport = FakeTransport(f"{identity}#{len(self.clients)}")
        session = await nursery.start(testing.join, self.manager, claims, transport, params)
        self.clients.append((transport, session))

    async def resume(self, nursery: trio.Nursery, session: ParticipantSession) -> None:
        """A new connection for an existing session: its own token, another identity's
        token (must be refused), or a stale sid."""
        fdp = self.fdp
        identity = session.identity if fdp.bool() else fdp.pick(IDENTITIES)
        sid = fdp.pick([session.sid, "", "PA_stale"])
        claims = Claims(
            api_key="k",
            identity=identity,
            video=VideoGrant(room_join=True, room=session.room_name),
            expires_at=0,
        )
        transport = FakeTransport(f"{identity}~{len(self.clients)}")
        transport.resumed = True
        try:
            resumed = await nursery.start(testing.resume, self.manager, claims, sid, transport)
        except ResumeRefused:
            return
        # Only the session's own identity may continue it.
        assert resumed.identity == identity, "a resume took over another identity's session"
        self.clients.append((transport, resumed))

    def request(self, sid: str) -> rtc.SignalRequest:
        fdp = self.fdp
        kinds = [f.name for f in rtc.SignalRequest.DESCRIPTOR.oneofs_by_name["message"].fields]
        kind = fdp.pick(kinds)
        req = rtc.SignalRequest()
        if kind in ("offer", "answer"):
            desc = rtc.SessionDescription(type=kind, sdp=fdp.text(64), id=fdp.int_in(0, 1 << 16))
            getattr(req, kind).CopyFrom(desc)
        elif kind == "trickle":
            req.trickle.candidateInit = fdp.text(64)
            req.trickle.target = fdp.int_in(0, 2)
            req.trickle.final = fdp.bool()
        elif kind == "add_track":
            layers = [
                models.VideoLayer(quality=fdp.int_in(0, 3), width=fdp.int_in(0, 2000))
                for _ in range(fdp.int_in(0, 3))
            ]
            req.add_track.CopyFrom(
                rtc.AddTrackRequest(
                    cid=fdp.pick([*CIDS, fdp.text(8)]),
                    name=fdp.text(8),
                    type=fdp.int_in(0, 3),
                    source=fdp.int_in(0, 5),
                    muted=fdp.bool(),
                    width=fdp.int_in(0, 4000),
                    height=fdp.int_in(0, 4000),
                    layers=layers,
                )
            )
        elif kind == "mute":
            req.mute.sid = self.pick_track()
            req.mute.muted = fdp.bool()
        elif kind == "subscription":
            req.subscription.subscribe = fdp.bool()
            req.subscription.track_sids.extend(self.pick_track() for _ in range(fdp.int_in(0, 3)))
            for _ in range(fdp.int_in(0, 2)):
                pt = req.subscription.participant_tracks.add()
                pt.participant_sid = sid
                pt.track_sids.extend(self.pick_track() for _ in range(fdp.int_in(0, 2)))
        elif kind == "track_setting":
            req.track_setting.track_sids.append(self.pick_track())
            req.track_setting.disabled = fdp.bool()
            req.track_setting.quality = fdp.int_in(0, 3)
        elif kind == "update_audio_track":
            req.update_audio_track.track_sid = self.pick_track()
            req.update_audio_track.features.extend(
                fdp.int_in(0, 8) for _ in range(fdp.int_in(0, 4))
            )
        elif kind == "leave":
            req.leave.reason = fdp.int_in(0, 20)
            req.leave.action = fdp.int_in(0, 2)
        elif kind == "update_metadata":
            req.update_metadata.request_id = fdp.int_in(0, 1 << 16)
            req.update_metadata.name = fdp.text(8)
            req.update_metadata.metadata = fdp.text(16)
            for _ in range(fdp.int_in(0, 3)):
                req.update_metadata.attributes[fdp.pick(["a", "b", fdp.text(4)])] = fdp.pick(
                    ["", "x", fdp.text(4)]
                )
        elif kind == "ping":
            req.ping = fdp.int_in(-(1 << 15), 1 << 15)
        elif kind == "ping_req":
            req.ping_req.timestamp = fdp.int_in(0, 1 << 16)
            req.ping_req.rtt = fdp.int_in(0, 1 << 16)
        else:
            getattr(req, kind).SetInParent()
        return req

    async def step(self, nursery: trio.Nursery) -> None:
        fdp = self.fdp
        op = fdp.int_in(0, 16)
        if op == 0 or not self.clients:
            await self.join(nursery)
            return
        client = self.pick_client()
        assert client is not None
        transport, session = client
        if op == 16:
            await self.resume(nursery, session)
            return
        found = self.manager.room(session.room_name)
        if found is None:
            return  # its room closed; only the check at the end still concerns it
        room = found
        if op in (1, 2, 3, 4, 5):
            transport.send_frame(self.request(session.sid).SerializeToString())
        elif op == 6:  # raw bytes as a frame
            transport.send_frame(fdp.bytes(128))
        elif op == 7:  # a structured request with raw bytes appended (unknown fields, junk)
            frame = self.request(session.sid).SerializeToString() + fdp.bytes(16)
            transport.send_frame(frame)
        elif op == 8:
            choice = fdp.int_in(0, 2)
            if choice == 0:
                transport.send_frame(fdp.text(16))
            elif choice == 1:
                transport.send_frame(b"\x00" * (MAX_FRAME_BYTES + 1))
            else:
                for _ in range(fdp.int_in(0, 16)):
                    transport.send_frame(rtc.SignalRequest(ping=1).SerializeToString())
        elif op == 9:
            transport.hang_up()
        elif op == 10:
            transport.stalled = fdp.bool()
        elif op == 11:  # media facts from the media plane
            sid = session.sid
            if fdp.bool():
                _, fx = room.track_live(sid, cid=fdp.pick(CIDS), mid=fdp.text(2))
                self.manager.apply(room, fx)
            else:
                self.manager.apply(room, room.transition(sid, ParticipantEvent.TRANSPORT_CONNECTED))
        elif op == 12:  # server API changes (as Twirp performs them)
            sid = session.sid
            which = fdp.int_in(0, 4)
            if which == 0:
                bits = fdp.byte()
                perm = models.ParticipantPermission(
                    can_publish=bool(bits & 1),
                    can_subscribe=bool(bits & 2),
                    can_publish_data=bool(bits & 4),
                )
                self.manager.apply(room, room.update_participant(sid, permission=perm))
            elif which == 1:
                self.manager.apply(
                    room, room.remove(sid, Reason.PARTICIPANT_REMOVED, now=self.manager.now())
                )
            elif which == 2 and self.manager.room(room.name) is room:
                self.manager.delete_room(room.name)
            elif which == 3:
                self.manager.apply(room, room.set_metadata(fdp.text(8)))
            elif which == 4:
                self.manager.apply(room, room.unpublish(sid, self.pick_track()))
        elif op == 13:
            packet = models.DataPacket()
            packet.user.payload = fdp.bytes(8)
            packet.destination_identities.extend(
                fdp.pick(IDENTITIES) for _ in range(fdp.int_in(0, 2))
            )
            self.manager.apply(room, room.route_data(session.sid, packet, reliable=fdp.bool()))
        else:  # time passes: ping timeouts, join failure, room close deadlines
            dt = fdp.pick([0.5, 2.0, 16.0, 61.0, 400.0, 10.0])
            if dt == 10.0:  # with everyone pinging: only the join-failure timer runs out
                for other, _ in self.clients:
                    other.send_frame(rtc.SignalRequest(ping=1).SerializeToString())
                await trio.testing.wait_all_tasks_blocked()
            self.clock.jump(dt)

    # ---- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        ERRORS.check()
        for room in self.rooms_seen:
            room.check_invariants()
            for p in room.participants.values():
                assert self.manager.has_session(p.sid), f"{p.sid} in room without a session"
        expected = {
            (s.subscriber_sid, s.track_sid)
            for room in self.rooms_seen
            for s in room.subscriptions.values()
            if s.bound
        }
        assert self.media.bound == expected, "media plane and subscriptions disagree"

    def check_clean(self) -> None:
        for room in self.rooms_seen:
            assert not room.participants, "participant left behind"
            assert not room.subscriptions, "subscription left behind"
        for _, session in self.clients:
            if session.sid:
                assert not self.manager.has_session(session.sid), "session left behind"
        assert not self.media.bound, "binding left behind"


async def _main(data: bytes) -> None:
    fdp = Provider(data)
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    async with trio.open_nursery() as outer:
        await outer.start(_manager_run, harness := Harness(fdp, clock))
        async with trio.open_nursery() as sessions:
            for _ in range(MAX_OPS):
                if not fdp.remaining():
                    break
                await harness.step(sessions)
                await trio.testing.wait_all_tasks_blocked()
                harness.check()
            # Every client hangs up; every session must end and clean up after itself.
            for transport, _ in harness.clients:
                transport.stalled = False
                transport.hang_up()
            with trio.fail_after(30):  # mock clock: only advances when jumped
                await trio.testing.wait_all_tasks_blocked()
                # Participants with media wait out their resume window.
                clock.jump(pysfu.runtime.sessions.RESUME_WINDOW_S + 2)
                await trio.testing.wait_all_tasks_blocked()
                clock.jump(2)
                await trio.testing.wait_all_tasks_blocked()
        harness.check()
        harness.check_clean()
        outer.cancel_scope.cancel()
    ERRORS.check()


async def _manager_run(
    harness: Harness, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    await harness.manager.run(task_status=task_status)


def test_one_input(data: bytes) -> None:
    run_trio(_main, data)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
