"""Write the seed corpora under ``fuzz/corpus/<target>/`` (checked in; re-run after a
harness changes how it reads its input): ``python fuzz/python/make_seeds.py``.

The signal seeds are small programs in the byte encoding ``fuzz_signal.Harness``
reads (one byte per choice, two for wide integers): scenarios that reach publishing,
subscribing, slow readers, timeouts and admin changes, which random bytes alone find
slowly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib

from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import room as room_api

CORPUS = pathlib.Path(__file__).resolve().parent.parent / "corpus"

# SignalRequest oneof indices, in descriptor order (see Harness.request).
OFFER, ANSWER, TRICKLE, ADD_TRACK, MUTE, SUBSCRIPTION, TRACK_SETTING, LEAVE = range(8)
UPDATE_LAYERS, PING, UPDATE_METADATA, PING_REQ = 8, 12, 13, 14
MIC, CAMERA = 2, 1


class Program:
    """Bytes for fuzz_signal, built op by op."""

    def __init__(self) -> None:
        self.b = bytearray()

    def u8(self, *values: int) -> Program:
        self.b += bytes(values)
        return self

    def u16(self, value: int) -> Program:
        return self.u8(value >> 8 & 0xFF, value & 0xFF)

    def text(self, s: bytes = b"") -> Program:
        return self.u8(len(s)).raw(s)

    def raw(self, s: bytes) -> Program:
        self.b += s
        return self

    # ---- operations (op number, then the client index, then the op's own choices) --------

    def join(self, identity: int, room: int = 0, flags: int = 0) -> Program:
        return self.u8(0, identity, room, flags)

    def req(self, client: int, kind: int) -> Program:
        return self.u8(1, client, kind)

    def add_track(self, client: int, cid: int, source: int = MIC, kind: int = 0) -> Program:
        self.req(client, ADD_TRACK).u8(0)  # no layers
        self.text().u8(cid)  # cid: pick from CIDS (the text is the 5th choice)
        self.text()  # name
        return self.u8(kind, source, 0).u16(640).u16(480)

    def live(self, client: int, cid: int) -> Program:
        return self.u8(11, client, 1, cid).text()

    def connected(self, client: int) -> Program:
        return self.u8(11, client, 0)

    def track(self, index: int) -> Program:
        return self.u8(0, index)  # pick_track: an existing track

    def subscribe(self, client: int, track: int, on: bool) -> Program:
        self.req(client, SUBSCRIPTION).u8(int(on), 1).track(track)
        return self.u8(0)  # no participant_tracks

    def unknown_subscribe(self, client: int) -> Program:
        return self.req(client, SUBSCRIPTION).u8(1, 1, 255, 1).u8(0)

    def mute(self, client: int, track: int, muted: bool) -> Program:
        return self.req(client, MUTE).track(track).u8(int(muted))

    def metadata(self, client: int, name: bytes = b"x") -> Program:
        self.req(client, UPDATE_METADATA).u16(7).text(name).text(b"md").u8(1)
        return self.text().u8(1).text().u8(0)  # attributes {"a": "x"}

    def offer(self, client: int, kind: int = OFFER) -> Program:
        return self.req(client, kind).text(b"v=0\r\n").u16(1)

    def trickle(self, client: int) -> Program:
        cand = b'{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0"}'[:64]
        return self.req(client, TRICKLE).text(cand).u8(0, 0)

    def leave(self, client: int) -> Program:
        return self.req(client, LEAVE).u8(1, 0)

    def ping(self, client: int) -> Program:
        return self.req(client, PING).u16(1234)

    def ping_req(self, client: int) -> Program:
        return self.req(client, PING_REQ).u16(1).u16(2)

    def other(self, client: int, kind: int) -> Program:
        return self.req(client, kind)

    def raw_frame(self, client: int, frame: bytes) -> Program:
        return self.u8(6, client).text(frame)

    def text_frame(self, client: int) -> Program:
        return self.u8(8, client, 0).text(b"hello")

    def oversized(self, client: int) -> Program:
        return self.u8(8, client, 1)

    def flood(self, client: int, n: int = 16) -> Program:
        return self.u8(8, client, 2, n)

    def hang_up(self, client: int) -> Program:
        return self.u8(9, client)

    def stall(self, client: int, on: bool = True) -> Program:
        return self.u8(10, client, int(on))

    def permission(self, client: int, bits: int) -> Program:
        return self.u8(12, client, 0, bits)

    def remove(self, client: int) -> Program:
        return self.u8(12, client, 1)

    def delete_room(self, client: int) -> Program:
        return self.u8(12, client, 2)

    def room_metadata(self, client: int) -> Program:
        return self.u8(12, client, 3).text(b"rm")

    def unpublish(self, client: int, track: int) -> Program:
        return self.u8(12, client, 4).track(track)

    def data(self, client: int, to: int | None = None) -> Program:
        self.u8(13, client).text(b"hi")
        return (self.u8(1, to) if to is not None else self.u8(0)).u8(1)

    def wait(self, client: int, which: int) -> Program:
        """which: 0.5 s, 2 s, 16 s (ping timeout), 61 s (join failure), 400 s."""
        return self.u8(14, client, which)


def signal_seeds() -> dict[str, bytes]:
    def publish_pair() -> Program:
        return Program().join(0).join(1).add_track(0, 0).live(0, 0)

    seeds = {
        "join": Program().join(0),
        "publish_subscribe": publish_pair()
        .connected(1)
        .mute(0, 0, True)
        .mute(0, 0, False)
        .subscribe(1, 0, False)
        .subscribe(1, 0, True)
        .unpublish(0, 0)
        .leave(1),
        "selective": Program()
        .join(0)
        .join(1, 0, 64)
        .add_track(0, 1, CAMERA, 1)
        .live(0, 1)
        .subscribe(1, 0, True)
        .unknown_subscribe(1)
        .permission(1, 0)
        .permission(1, 7),
        "duplicate_identity": publish_pair().join(0).join(0, 1).add_track(2, 2).live(2, 2),
        "metadata": Program().join(0, 0, 8).join(1).metadata(0).metadata(1).room_metadata(0),
        "slow_reader": publish_pair()
        .stall(1)
        .metadata(0)
        .flood(1)
        .metadata(0)
        .metadata(0)
        .metadata(0)
        .add_track(0, 1)
        .live(0, 1)
        .add_track(0, 2)
        .live(0, 2),
        "timeouts": Program()
        .join(0)
        .join(1)
        .ping(1)
        .wait(0, 0)
        .wait(0, 2)
        .ping_req(1)
        .wait(0, 3)
        .join(2, 1)
        .wait(0, 4),
        "garbage": Program()
        .join(0)
        .raw_frame(0, b"\x0a\x05\x12\x03abc")
        .text_frame(0)
        .oversized(0)
        .raw_frame(0, b"\xff\xff\xff\xff")
        .raw_frame(0, b"\x08")
        .raw_frame(0, b"\x12\x00")
        .raw_frame(0, b"\x0a\xff\x01")
        .text_frame(0)
        .text_frame(0)
        .text_frame(0)
        .text_frame(0)
        .text_frame(0)
        .text_frame(0)
        .text_frame(0)
        .ping(0),
        "negotiation": Program()
        .join(0)
        .offer(0)
        .offer(0, ANSWER)
        .trickle(0)
        .connected(0)
        .other(0, UPDATE_LAYERS)
        .other(0, 9)
        .other(0, 10)
        .other(0, 11)
        .other(0, 15)
        .other(0, 16)
        .other(0, 17)
        .other(0, 18)
        .other(0, 19)
        .other(0, 20)
        .other(0, 21)
        .other(0, TRACK_SETTING),
        "admin": publish_pair()
        .join(2)
        .permission(1, 1)
        .remove(0)
        .join(0)
        .delete_room(1)
        .join(3)
        .add_track(4, 3)
        .live(4, 3),
        "data": Program()
        .join(0)
        .join(1)
        .join(2, 0, 4)
        .data(0)
        .data(0, 1)
        .data(2)
        .hang_up(0)
        .data(1),
        "hidden": Program().join(0, 0, 16).join(1).add_track(0, 0).live(0, 0).metadata(0).leave(0),
        "sources": Program()
        .join(0, 0, 32)
        .add_track(0, 0, 3)
        .add_track(0, 1, CAMERA)
        .join(1, 0, 1)
        .add_track(1, 0),
        "two_rooms": Program()
        .join(0, 0)
        .join(1, 1)
        .join(0, 1)
        .add_track(2, 0)
        .live(2, 0)
        .hang_up(1)
        .wait(0, 4),
    }
    return {name: bytes(p.b) for name, p in seeds.items()}


def jwt_seeds() -> dict[str, bytes]:
    """fuzz_jwt: mode byte, then a payload (JSON text) to sign, or a raw token."""
    import jwt

    from pysfu.auth import VideoGrant, mint_token

    def signed(payload: dict[str, object]) -> bytes:
        return b"\x01" + json.dumps(payload).encode()

    now = 1_700_000_000
    base = {"iss": "key", "sub": "alice", "nbf": now - 10, "exp": now + 3600}
    full = {
        **base,
        "name": "Alice",
        "metadata": "m",
        "attributes": {"a": "b"},
        "kind": "agent",
        "sha256": "x",
        "roomConfig": {"name": "r"},
        "video": {
            "roomJoin": True,
            "room": "r",
            "roomCreate": True,
            "roomList": True,
            "roomAdmin": True,
            "canPublish": False,
            "canSubscribe": True,
            "canPublishData": False,
            "canPublishSources": ["camera", "microphone", "bogus"],
            "canUpdateOwnMetadata": True,
            "hidden": True,
            "recorder": True,
            "agent": True,
        },
    }
    minted = mint_token("key", "k" * 32, identity="bob", grant=VideoGrant(room="r"), now=now)
    unsigned = jwt.encode(base, key=None, algorithm="none")
    return {
        "minimal": signed(base),
        "full_grant": signed(full),
        "expired": signed({**base, "exp": now - 3600}),
        "not_yet": signed({**base, "nbf": now + 3600}),
        "no_exp": signed({"iss": "key", "sub": "x"}),
        "bad_types": signed({**base, "video": {"roomJoin": "yes", "room": 3}}),
        "float_exp": signed({**base, "exp": now + 0.5}),
        "raw_minted": b"\x00" + minted.encode(),
        "raw_none_alg": b"\x00" + unsigned.encode(),
        "raw_garbage": b"\x00a.b.c",
        "header": b"\x02" + json.dumps({"alg": "HS512", "typ": "JWT"}).encode(),
    }


def twirp_seeds() -> dict[str, bytes]:
    """fuzz_twirp: method byte, token byte, encoding byte, then the body."""
    methods = [
        ("CreateRoom", room_api.CreateRoomRequest(name="r0", empty_timeout=10, metadata="m")),
        ("ListRooms", room_api.ListRoomsRequest(names=["r0"])),
        ("DeleteRoom", room_api.DeleteRoomRequest(room="r0")),
        ("ListParticipants", room_api.ListParticipantsRequest(room="r0")),
        ("GetParticipant", room_api.RoomParticipantIdentity(room="r0", identity="ann")),
        ("RemoveParticipant", room_api.RoomParticipantIdentity(room="r0", identity="ben")),
        (
            "MutePublishedTrack",
            room_api.MuteRoomTrackRequest(
                room="r0", identity="ann", track_sid="TR_000000000004", muted=True
            ),
        ),
        (
            "UpdateParticipant",
            room_api.UpdateParticipantRequest(
                room="r0",
                identity="ben",
                metadata="x",
                attributes={"a": "", "b": "c"},
                permission=models.ParticipantPermission(can_subscribe=False),
            ),
        ),
        (
            "UpdateSubscriptions",
            room_api.UpdateSubscriptionsRequest(
                room="r0", identity="ben", track_sids=["TR_000000000004"], subscribe=False
            ),
        ),
        (
            "SendData",
            room_api.SendDataRequest(
                room="r0", data=b"hi", destination_identities=["ann"], topic="t"
            ),
        ),
        ("UpdateRoomMetadata", room_api.UpdateRoomMetadataRequest(room="r0", metadata="m")),
    ]

    def request(method: int, body: bytes, token: int = 0, encoding: int = 0) -> bytes:
        size = min(len(body), 4095)
        return bytes([method, token, encoding, size >> 8, size & 0xFF]) + body[:size]

    seeds: dict[str, bytes] = {}
    everything = b""
    for index, (name, msg) in enumerate(methods):
        proto = request(index, msg.SerializeToString())
        as_json = json_format.MessageToJson(msg, preserving_proto_field_name=True)
        seeds[f"{name}_proto"] = proto
        seeds[f"{name}_json"] = request(index, as_json.encode(), encoding=1)
        if name != "DeleteRoom":
            everything += proto
    seeds["all_methods"] = everything + seeds["DeleteRoom_proto"]
    seeds["unknown_method"] = request(11, b"")
    seeds["bad_token"] = request(3, b"", token=4) + request(1, b"", token=3)
    seeds["other_room"] = request(0, methods[0][1].SerializeToString(), token=1) + request(
        3, methods[3][1].SerializeToString(), token=1
    )
    seeds["bad_json"] = request(0, b'{"name": [1, {"x": null}]', encoding=1)
    seeds["bad_type"] = request(1, b"{}", encoding=2)
    return seeds


def config_seeds() -> dict[str, bytes]:
    full = """\
port: 7880
bind_addresses: ["127.0.0.1", "::1"]
development: false
rtc: {udp_port: "7882", node_ip: 203.0.113.7, tcp_port: 7881}
keys: {APIkey: a-secret-of-at-least-32-characters-long}
key_file: keys.yaml
room: {empty_timeout: 300, departure_timeout: 20.5}
webhook: {api_key: APIkey, urls: ["https://example.com/hook"]}
logging: {level: info}
redis: {address: localhost:6379}
"""
    seeds = {
        "full": full.encode(),
        "dev": b"development: true\nlog_level: debug\n",
        "keys_only": b"keys:\n  k: secret\n",
        "key_files": b"keys: {a: b}\nkey_file: world.yaml\n",
        "bad_key_file": b"key_file: bad.yaml\n",
        "range": b'keys: {a: b}\nrtc: {udp_port: "50000-60000"}\n',
        "anchors": b"keys: &k {a: b}\nroom: {empty_timeout: 1}\nx: *k\n",
        "not_mapping": b"- 1\n- 2\n",
        "numbers": b"keys: {a: 123}\nport: 99999\n",
        "inf_timeout": b"keys: {a: b}\nroom: {empty_timeout: .inf, departure_timeout: .nan}\n",
        "laughs": (
            b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
            + b"".join(
                f"l{i}: &l{i} [{','.join([f'*l{i - 1}' if i else '*a'] * 9)}]\n".encode()
                for i in range(9)
            )
            + b"room: *l8\nkeys: {a: b}\n"
        ),
        "deep": b"keys: " + b"[" * 400,
        "unicode_port": 'keys: {a: b}\nrtc: {udp_port: "\u00b2"}\n'.encode(),
    }
    # First byte: bit 0 = --dev, bit 1 = a NUL then --keys text follow the YAML.
    out = {name: b"\x00" + body for name, body in seeds.items()}
    out["dev_flag"] = b"\x01port: 0\n"
    out["flag_keys"] = b"\x02keys: {}\x00k: v\nk2: v2"
    out["flag_keys_bad"] = b"\x02\x00k:v"
    return out


def http_seeds() -> dict[str, bytes]:
    """fuzz_http: kind byte (0 websocket, 1 http GET, 2 http POST), path, query, headers."""
    wrapped = base64.urlsafe_b64encode(b"\x08\x01\x12\x00").decode()
    digest = hashlib.sha256(b"").hexdigest()[:8]
    return {
        "rtc": b"\x00/rtc\x00access_token=TOKEN&protocol=16&auto_subscribe=0\x00",
        "rtc_bearer": b"\x00/rtc\x00protocol=16\x00authorization: Bearer TOKEN",
        "rtc_reconnect": b"\x00/rtc\x00access_token=TOKEN&reconnect=1&sid=PA_x\x00",
        "rtc_v1": f"\x00/rtc/v1\x00access_token=TOKEN&join_request={wrapped}\x00".encode(),
        "validate": b"\x01/rtc/validate\x00access_token=TOKEN\x00",
        "v1_validate": b"\x01/rtc/v1/validate\x00access_token=TOKEN\x00",
        "health": b"\x01/\x00\x00",
        "twirp": b"\x02/twirp/livekit.RoomService/ListRooms\x00\x00"
        b"authorization: Bearer TOKEN\ncontent-type: application/json\x00{}",
        "unicode_protocol": b"\x00/rtc\x00access_token=TOKEN&protocol=%C2%B2\x00",
        "junk": f"\x01/{digest}\x00%zz=%%\x00x".encode(),
    }


def agent_seeds() -> dict[str, bytes]:
    """Programs for fuzz_agent (one byte per choice): the main loop's op bytes, then the
    frames a worker reads while the loop waits (see FuzzTransport.frame)."""
    open_room = [1, 0]  # op 1, room r0
    worker = [0, 3]  # op 0, budget 4 frames
    register = [2, 0, 0, 0]  # register JT_ROOM, unnamed, default permissions
    accept = [3, 1, 0, 0, 1, 0, 0]  # availability: first job, identity agent-a
    ping = [7, 0, 1]
    done = [5, 1, 0, 2, 0]  # update_job: first job, JS_SUCCESS
    jump = [7, 2]  # time passes 11 s
    lost = [3, 1, 0, 0, 1, 0, 0, 8, 1, 1, 0]  # accept, then migrate the job
    join_agent = [3, 0, 1, 1]  # op 3: r0, identity agent-a, kind AGENT
    dispatch = [5, 0, 1]  # op 5: r0, agent "bot"
    named = [2, 0, 1, 0]  # register JT_ROOM for "bot"
    return {
        "assign_and_finish": bytes(open_room + worker + register + accept + ping + done + jump),
        "orphan_and_migrate": bytes(
            open_room
            + worker
            + register
            + lost
            + join_agent
            + worker
            + register
            + [8, 1, 0]
            + jump
            + jump
        ),
        "named_dispatch": bytes(open_room + dispatch + worker + named + accept + [6, 0] + jump),
        "reregister_and_garbage": bytes(worker + register + register + [0, 5, 1, 2, 3, 4, 5]),
        "timeouts": bytes(open_room + worker + register + [6, 1, 0, 1] + jump + [7, 3] + jump),
    }


def main() -> None:
    for target, seeds in {
        "agent": agent_seeds(),
        "signal": signal_seeds(),
        "jwt": jwt_seeds(),
        "twirp": twirp_seeds(),
        "config": config_seeds(),
        "http": http_seeds(),
    }.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / f"seed_{name}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
