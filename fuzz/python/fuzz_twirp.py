"""Fuzz the Twirp server API: sequences of RoomService requests with protobuf and JSON
bodies from the fuzzer, under tokens with and without the needed grants, against a
running ``RoomManager`` holding a room with participants and a live track.

Findings: a 500 (an exception ``TwirpService`` had to catch), anything logged at ERROR,
an error body that is not Twirp JSON, a 200 for a token lacking the method's grant, or
a broken room invariant. Run: ``python fuzz/python/fuzz_twirp.py fuzz/corpus/twirp``.
"""

from __future__ import annotations

import json
import sys

from _common import Provider, capture_errors, instrumented, run, run_trio

with instrumented("pysfu", "google.protobuf"):
    import trio
    import trio.testing
    from livekit.protocol import rtc

    from pysfu.api.twirp import PREFIX, TwirpService
    from pysfu.auth import VideoGrant, mint_token
    from pysfu.runtime.manager import RoomManager

ERRORS = capture_errors()

KEY, SECRET = "key", "k" * 32
METHODS = [
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "ListParticipants",
    "GetParticipant",
    "RemoveParticipant",
    "MutePublishedTrack",
    "UpdateParticipant",
    "UpdateSubscriptions",
    "SendData",
    "UpdateRoomMetadata",
    "Nope",
]
ADMIN_METHODS = set(METHODS[3:11])


def _token(**grant: object) -> str:
    return mint_token(KEY, SECRET, identity="", grant=VideoGrant(**grant), ttl_s=30 * 86400)


TOKENS: list[tuple[str | None, VideoGrant | None]] = [
    (_token(room="r0", room_admin=True, room_create=True, room_list=True), None),
    (_token(room="other", room_admin=True, room_create=True, room_list=True), None),
    (_token(room="r0", room_join=True), None),
    (_token(), None),
    ("not.a.token", None),
    (None, None),
]
CONTENT_TYPES = ["application/protobuf", "application/json", "text/plain", "application/json; x"]


def allowed(method: str, token_index: int) -> bool:
    """Whether the token may call the method on room r0 at all."""
    if token_index == 0:
        return True
    if token_index == 1:
        return method in ("CreateRoom", "ListRooms", "DeleteRoom")
    return False


async def _serve(manager: RoomManager, *, task_status: trio.TaskStatus[None]) -> None:
    await manager.run(task_status=task_status)


def _populate(manager: RoomManager) -> None:
    room = manager.create_room("r0")
    ann, fx = room.join(identity="ann", now=0)
    manager.apply(room, fx)
    _ben, fx = room.join(identity="ben", now=0)
    manager.apply(room, fx)
    manager.apply(room, room.add_track(ann.sid, rtc.AddTrackRequest(cid="c0", name="mic")))
    _, fx = room.track_live(ann.sid, cid="c0")
    manager.apply(room, fx)
    manager.create_room("r1")


async def _main(data: bytes) -> None:
    fdp = Provider(data)
    manager = RoomManager()
    service = TwirpService(manager, {KEY: SECRET})
    async with trio.open_nursery() as nursery:
        await nursery.start(_serve, manager)
        _populate(manager)
        for _ in range(8):
            if not fdp.remaining():
                break
            method = fdp.pick(METHODS)
            token_index = fdp.int_in(0, len(TOKENS) - 1)
            token = TOKENS[token_index][0]
            content_type = fdp.pick(CONTENT_TYPES)
            body = fdp.take(fdp.int_in(0, 4095))
            headers = {"content-type": content_type}
            if token is not None:
                headers["authorization"] = f"Bearer {token}"
            status, reply_type, reply = await service.handle(PREFIX + method, headers, body)
            ERRORS.check()
            assert status != 500, f"internal error for {method}"
            if status != 200:
                err = json.loads(reply)
                assert set(err) == {"code", "msg"}, err
                assert reply_type == "application/json"
            else:
                assert allowed(method, token_index), f"{method} allowed without its grant"
                if reply_type == "application/json":
                    json.loads(reply)
            for room in manager.rooms:
                room.check_invariants()
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    ERRORS.check()


def test_one_input(data: bytes) -> None:
    run_trio(_main, data)


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
