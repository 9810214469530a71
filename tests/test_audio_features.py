"""Audio track features: what a publisher asks for reaches its subscribers, and the
publisher answer configures Opus (DTX, stereo) as the features say."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.protocol import models, rtc

from pysfu.media.sdp import configure_opus
from pysfu.rtc.room import Room

from .conftest import RunningServer
from .sdk_helpers import ToneSource, connected
from .signal_client import SignalClient, connect

Feature = models.AudioTrackFeature


@pytest.mark.asyncio
async def test_subscriber_sees_no_dtx_and_preconnect_buffer(server: RunningServer) -> None:
    tone = ToneSource()
    async with connected(server, "agent-user") as (user, _), connected(server, "agent") as (_, w):
        await tone.publish(user, dtx=False, preconnect_buffer=True)
        try:
            _, publication, _ = await w.wait_for("track_subscribed")
            features = set(publication.audio_features)
            assert {Feature.TF_NO_DTX, Feature.TF_PRECONNECT_BUFFER} <= features
        finally:
            await tone.aclose()


_FINGERPRINT = ":".join(["AB"] * 32)


def _audio_offer(cid: str) -> str:
    """A publisher offer with one Opus m-section sending track ``cid``."""
    lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS stream",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Qx7b",
        "a=ice-pwd:0123456789abcdefghijklmn",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {_FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=sendonly",
        f"a=msid:stream {cid}",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=ssrc:1001 cname:pysfu-test",
        f"a=ssrc:1001 msid:stream {cid}",
    ]
    return "\r\n".join(lines) + "\r\n"


def _opus_fmtp(sdp: str) -> set[str]:
    line = next(x for x in sdp.splitlines() if x.startswith("a=fmtp:111 "))
    return set(line.split(" ", 1)[1].split(";"))


@pytest.mark.trio
@pytest.mark.parametrize(
    ("request_fields", "usedtx", "stereo"),
    [
        ({}, True, False),
        ({"disable_dtx": True}, False, False),
        ({"stereo": True}, True, True),
        ({"audio_features": [Feature.TF_STEREO, Feature.TF_NO_DTX]}, False, True),
    ],
)
async def test_publisher_answer_sets_dtx_and_stereo_per_features(
    server: RunningServer, request_fields: dict[str, object], usedtx: bool, stereo: bool
) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        add = rtc.AddTrackRequest(
            cid="mic-1", name="mic", type=models.TrackType.AUDIO, **request_fields
        )
        await alice.send(rtc.SignalRequest(add_track=add))
        await alice.expect("track_published")
        offer = rtc.SessionDescription(type="offer", sdp=_audio_offer("mic-1"), id=1)
        await alice.send(rtc.SignalRequest(offer=offer))
        answer = (await alice.expect("answer")).answer
        params = _opus_fmtp(answer.sdp)
        assert ("usedtx=1" in params) is usedtx
        assert ("stereo=1" in params) is stereo
        assert "useinbandfec=1" in params


def _room_with_live_mic() -> tuple[Room, str, str, str]:
    room = Room(name="r", created_at=0.0)
    alice, _ = room.join(identity="alice", now=0.0)
    bob, _ = room.join(identity="bob", now=0.0)
    room.add_track(alice.sid, rtc.AddTrackRequest(cid="mic", type=models.TrackType.AUDIO))
    pub, _ = room.track_live(alice.sid, cid="mic", mid="0")
    assert pub is not None
    return room, alice.sid, bob.sid, pub.sid


def test_update_local_audio_track_changes_features_and_tells_others() -> None:
    room, alice, bob, track = _room_with_live_mic()
    features = [Feature.TF_STEREO, Feature.TF_NO_DTX, Feature.TF_STEREO]
    fx = room.update_audio_track(
        alice, rtc.UpdateLocalAudioTrack(track_sid=track, features=features)
    )
    info = room.participants[alice].publications[track].info
    assert list(info.audio_features) == [Feature.TF_STEREO, Feature.TF_NO_DTX]
    assert info.stereo and info.disable_dtx
    to_bob = [m for sid, m in fx.messages if sid == bob and m.HasField("update")]
    (update,) = to_bob
    (seen,) = [p for p in update.update.participants if p.sid == alice]
    assert list(seen.tracks[0].audio_features) == [Feature.TF_STEREO, Feature.TF_NO_DTX]
    # The same features again are no news; an unknown track is NOT_FOUND.
    assert (
        room.update_audio_track(
            alice, rtc.UpdateLocalAudioTrack(track_sid=track, features=features)
        ).messages
        == []
    )
    fx = room.update_audio_track(alice, rtc.UpdateLocalAudioTrack(track_sid="TR_nope"))
    ((sid, msg),) = fx.messages
    assert sid == alice
    assert msg.request_response.reason == rtc.RequestResponse.Reason.NOT_FOUND


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                    "m=video 9 UDP/TLS/RTP/SAVPF 96",
                    "a=mid:0",
                    "a=mid:1",
                    "a=rtpmap:111 opus/48000/2",
                    "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1",
                    "a=fmtp:111 ",
                    "a=fmtp:111 stereo=1;;;",
                ]
            ),
            st.text(max_size=40).filter(lambda x: "\n" not in x and "\r" not in x),
        ),
        max_size=20,
    ),
    dtx=st.booleans(),
    stereo=st.booleans(),
)
def test_opus_configuration_touches_only_opus_fmtp_lines(
    lines: list[str], dtx: bool, stereo: bool
) -> None:
    sdp = "\r\n".join(lines)
    out = configure_opus(sdp, {"0": (dtx, stereo), "1": (dtx, stereo)})
    before, after = sdp.split("\r\n"), out.split("\r\n")
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        if old != new:
            assert old.startswith("a=fmtp:111 ")
            params = new.split(" ", 1)[1].split(";")
            assert ("usedtx=1" in params) is dtx
            assert ("stereo=1" in params) is stereo
    assert configure_opus(out, {"0": (dtx, stereo), "1": (dtx, stereo)}) == out


def test_unknown_and_repeated_features_are_dropped() -> None:
    room = Room(name="r", created_at=0.0)
    alice, _ = room.join(identity="alice", now=0.0)
    features = [Feature.TF_NO_DTX, 99_999, Feature.TF_NO_DTX, *range(1000, 1000 + 10_000)]
    add = rtc.AddTrackRequest(cid="mic", type=models.TrackType.AUDIO, audio_features=features)
    room.add_track(alice.sid, add)
    (pub,) = room.participants[alice.sid].publications.values()
    assert list(pub.info.audio_features) == [Feature.TF_NO_DTX]
    update = rtc.UpdateLocalAudioTrack(track_sid=pub.sid, features=[7_777, Feature.TF_STEREO])
    room.update_audio_track(alice.sid, update)
    assert list(pub.info.audio_features) == [Feature.TF_STEREO]
