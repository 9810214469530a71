from __future__ import annotations

import base64
import contextlib
import datetime
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit import api
from livekit.protocol import models, room

from pysfu.auth import (
    AuthError,
    Claims,
    VideoGrant,
    bearer_from_header,
    mint_token,
    verify_token,
)
from pysfu.errors import PysfuError

KEY = "APIkey123"
SECRET = "a-secret-that-is-at-least-32-characters-long"
KEYS = {KEY: SECRET}
NOW = 1_700_000_000.0


def _raw(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def _payload(**extra: Any) -> dict[str, Any]:
    return {"iss": KEY, "sub": "alice", "nbf": int(NOW), "exp": int(NOW) + 600, **extra}


# --- round trip ---------------------------------------------------------------------


def test_mint_verify_round_trip() -> None:
    token = mint_token(
        KEY,
        SECRET,
        identity="alice",
        room="r1",
        name="Alice",
        metadata="{}",
        attributes={"a": "b"},
        kind="agent",
        now=NOW,
        ttl_s=60,
    )
    claims = verify_token(token, KEYS, now=NOW + 1)
    assert claims.api_key == KEY
    assert claims.identity == "alice"
    assert claims.name == "Alice"
    assert claims.metadata == "{}"
    assert claims.attributes == {"a": "b"}
    assert claims.kind == "agent"
    assert claims.participant_kind() == models.ParticipantInfo.Kind.AGENT
    assert claims.video.room_join and claims.video.room == "r1"
    assert claims.expires_at == NOW + 60


def test_mint_preserves_false_defaults_true_rights() -> None:
    grant = VideoGrant(
        room_join=True, can_publish=False, can_subscribe=False, can_publish_data=False
    )
    token = mint_token(KEY, SECRET, identity="bob", room="r", grant=grant, now=NOW)
    video = jwt.decode(token, options={"verify_signature": False})["video"]
    assert video["canPublish"] is False
    assert video["canSubscribe"] is False
    assert video["canPublishData"] is False
    claims = verify_token(token, KEYS, now=NOW)
    assert claims.video == grant.__class__(
        room_join=True,
        room="r",
        can_publish=False,
        can_subscribe=False,
        can_publish_data=False,
    )


@given(
    st.builds(
        VideoGrant,
        room_join=st.booleans(),
        room=st.text(max_size=10),
        room_create=st.booleans(),
        room_list=st.booleans(),
        room_admin=st.booleans(),
        room_record=st.booleans(),
        can_publish=st.booleans(),
        can_subscribe=st.booleans(),
        can_publish_data=st.booleans(),
        can_publish_sources=st.lists(
            st.sampled_from(["camera", "microphone", "screen_share", "screen_share_audio"]),
            unique=True,
        ).map(tuple),
        can_update_own_metadata=st.booleans(),
        hidden=st.booleans(),
        recorder=st.booleans(),
        agent=st.booleans(),
    )
)
def test_any_grant_round_trips(grant: VideoGrant) -> None:
    token = mint_token(KEY, SECRET, identity="x", grant=grant, now=NOW)
    assert verify_token(token, KEYS, now=NOW).video == grant


def test_no_room_no_grant_gives_default_video() -> None:
    token = mint_token(KEY, SECRET, identity="", sha256="abc=", now=NOW)
    assert "video" not in jwt.decode(token, options={"verify_signature": False})
    claims = verify_token(token, KEYS, now=NOW)
    assert claims.video == VideoGrant()
    assert claims.identity == ""
    assert claims.sha256 == "abc="


def test_mint_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        mint_token(KEY, SECRET, identity="a", kind="robot")


# --- defaults and parsing -----------------------------------------------------------


def test_absent_publish_rights_default_true_and_unknown_keys_ignored() -> None:
    token = _raw(
        _payload(
            video={
                "roomJoin": True,
                "room": "r",
                "destinationRoom": "x",
                "canSubscribeMetrics": True,
                "ingressAdmin": True,
            }
        )
    )
    claims = verify_token(token, KEYS, now=NOW)
    assert claims.video.can_publish and claims.video.can_subscribe
    assert claims.video.can_publish_data
    assert not claims.video.can_update_own_metadata
    assert claims.kind == "standard"
    assert claims.participant_kind() == models.ParticipantInfo.Kind.STANDARD
    assert claims.attributes == {}
    assert claims.room_config is None


def test_missing_sub_is_empty_identity() -> None:
    payload = _payload(video={"roomList": True})
    del payload["sub"]
    assert verify_token(_raw(payload), KEYS, now=NOW).identity == ""


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("standard", models.ParticipantInfo.Kind.STANDARD),
        ("agent", models.ParticipantInfo.Kind.AGENT),
        ("sip", models.ParticipantInfo.Kind.SIP),
        ("egress", models.ParticipantInfo.Kind.EGRESS),
        ("ingress", models.ParticipantInfo.Kind.INGRESS),
        ("connector", models.ParticipantInfo.Kind.CONNECTOR),
        ("bridge", models.ParticipantInfo.Kind.BRIDGE),
        ("something_new", models.ParticipantInfo.Kind.STANDARD),
    ],
)
def test_participant_kind(kind: str, value: int) -> None:
    claims = verify_token(_raw(_payload(kind=kind)), KEYS, now=NOW)
    assert claims.participant_kind() == value


def test_permission_from_grant() -> None:
    token = _raw(
        _payload(
            video={
                "roomJoin": True,
                "room": "r",
                "canPublish": True,
                "canSubscribe": False,
                "canPublishData": False,
                "canPublishSources": ["camera", "screen_share", "hologram"],
                "canUpdateOwnMetadata": True,
                "hidden": True,
                "recorder": True,
                "agent": True,
            }
        )
    )
    perm = verify_token(token, KEYS, now=NOW).permission()
    assert isinstance(perm, models.ParticipantPermission)
    assert perm.can_publish and not perm.can_subscribe and not perm.can_publish_data
    assert list(perm.can_publish_sources) == [
        models.TrackSource.CAMERA,
        models.TrackSource.SCREEN_SHARE,
    ]
    assert perm.can_update_metadata and perm.hidden and perm.recorder and perm.agent


def test_default_permission_allows_publish() -> None:
    perm = verify_token(
        _raw(_payload(video={"roomJoin": True, "room": "r"})), KEYS, now=NOW
    ).permission()
    assert perm.can_publish and perm.can_subscribe and perm.can_publish_data
    assert not perm.can_update_metadata and not perm.hidden
    assert list(perm.can_publish_sources) == []


@pytest.mark.parametrize(
    "extra",
    [
        {"video": "yes"},
        {"video": {"canPublish": "true"}},
        {"video": {"room": 3}},
        {"video": {"canPublishSources": "camera"}},
        {"attributes": {"a": 1}},
        {"attributes": ["a"]},
        {"name": 5},
        {"roomConfig": "x"},
    ],
)
def test_malformed_claims_rejected(extra: dict[str, Any]) -> None:
    with pytest.raises(AuthError, match="malformed"):
        verify_token(_raw(_payload(**extra)), KEYS, now=NOW)


# --- rejection ----------------------------------------------------------------------


def test_auth_error_is_pysfu_error() -> None:
    assert issubclass(AuthError, PysfuError)


def test_expired() -> None:
    token = _raw(_payload())
    verify_token(token, KEYS, now=NOW + 600 + 59)  # inside leeway
    with pytest.raises(AuthError, match="token expired"):
        verify_token(token, KEYS, now=NOW + 600 + 61)
    with pytest.raises(AuthError, match="token expired"):
        verify_token(token, KEYS, now=NOW + 601, leeway_s=0)


def test_not_before() -> None:
    token = _raw(_payload())
    verify_token(token, KEYS, now=NOW - 59)
    with pytest.raises(AuthError, match="not yet valid"):
        verify_token(token, KEYS, now=NOW - 61)


def test_exp_required() -> None:
    payload = _payload()
    del payload["exp"]
    with pytest.raises(AuthError, match="exp"):
        verify_token(_raw(payload), KEYS, now=NOW)


def test_exp_must_be_number() -> None:
    with pytest.raises(AuthError, match="exp"):
        verify_token(_raw(_payload(exp="soon")), KEYS, now=NOW)


def test_unknown_key() -> None:
    with pytest.raises(AuthError, match="unknown API key"):
        verify_token(_raw(_payload(iss="other")), KEYS, now=NOW)


def test_missing_issuer() -> None:
    payload = _payload()
    del payload["iss"]
    with pytest.raises(AuthError, match="issuer"):
        verify_token(_raw(payload), KEYS, now=NOW)


def test_wrong_secret() -> None:
    token = _raw(_payload(), secret="another-secret-that-is-also-32-chars-long!")
    with pytest.raises(AuthError, match="invalid signature"):
        verify_token(token, KEYS, now=NOW)


def test_tampered_payload() -> None:
    header, _, sig = _raw(_payload()).split(".")
    forged = (
        base64.urlsafe_b64encode(json.dumps(_payload(video={"roomAdmin": True})).encode())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(AuthError, match="invalid signature"):
        verify_token(f"{header}.{forged}.{sig}", KEYS, now=NOW)


def test_alg_none_rejected() -> None:
    token = jwt.encode(_payload(), "", algorithm="none")
    with pytest.raises(AuthError, match="algorithm"):
        verify_token(token, KEYS, now=NOW)


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_other_hmac_alg_rejected() -> None:
    with pytest.raises(AuthError, match="algorithm"):
        verify_token(_raw(_payload(), alg="HS512"), KEYS, now=NOW)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "....", "Bearer x.y.z"])
def test_garbage_rejected(garbage: str) -> None:
    with pytest.raises(AuthError):
        verify_token(garbage, KEYS, now=NOW)


@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_auth_error(text: str) -> None:
    with contextlib.suppress(AuthError):
        verify_token(text, KEYS, now=NOW)


def test_default_now_is_wall_clock() -> None:
    token = mint_token(KEY, SECRET, identity="a", room="r", ttl_s=60)
    assert verify_token(token, KEYS).expires_at > time.time()
    old = mint_token(KEY, SECRET, identity="a", room="r", ttl_s=1, now=time.time() - 3600)
    with pytest.raises(AuthError, match="expired"):
        verify_token(old, KEYS)


# --- bearer header ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Bearer ", None),
        ("Bearer", None),
        ("Basic abc", None),
        ("abc.def.ghi", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_from_header(value: str | None, expected: str | None) -> None:
    assert bearer_from_header(value) == expected


# --- interop with the official Python server SDK -----------------------------------


def test_livekit_api_token_verifies() -> None:
    config = room.RoomConfiguration(name="r1", empty_timeout=42, max_participants=7)
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("carol")
        .with_name("Carol")
        .with_metadata("meta")
        .with_attributes({"k": "v"})
        .with_kind("sip")
        .with_room_config(config)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room="r1",
                can_publish=False,
                can_publish_sources=["microphone"],
                can_update_own_metadata=True,
                hidden=True,
                can_subscribe_metrics=True,
                destination_room="r2",
            )
        )
        .to_jwt()
    )
    claims = verify_token(token, KEYS)
    assert claims.identity == "carol"
    assert claims.name == "Carol"
    assert claims.metadata == "meta"
    assert claims.attributes == {"k": "v"}
    assert claims.kind == "sip"
    assert claims.participant_kind() == models.ParticipantInfo.Kind.SIP
    assert claims.video == VideoGrant(
        room_join=True,
        room="r1",
        can_publish=False,
        can_subscribe=True,
        can_publish_data=True,
        can_publish_sources=("microphone",),
        can_update_own_metadata=True,
        hidden=True,
    )
    assert claims.room_config is not None
    assert claims.room_config["name"] == "r1"
    assert claims.room_config["emptyTimeout"] == 42
    assert claims.room_config["maxParticipants"] == 7


def test_livekit_api_server_token_with_empty_subject() -> None:
    token = (
        api.AccessToken(KEY, SECRET)
        .with_grants(api.VideoGrants(room_create=True, room_list=True))
        .to_jwt()
    )
    claims = verify_token(token, KEYS)
    assert claims.identity == ""
    assert claims.video.room_create and claims.video.room_list
    assert not claims.video.room_join


def test_token_verifier_accepts_minted_token() -> None:
    grant = VideoGrant(
        room_join=True, can_publish=False, can_publish_sources=("camera",), hidden=True, agent=True
    )
    token = mint_token(
        KEY,
        SECRET,
        identity="dave",
        room="r9",
        name="Dave",
        metadata="m",
        attributes={"x": "y"},
        kind="agent",
        grant=grant,
        room_config={"name": "r9", "departureTimeout": 5},
    )
    lk = api.TokenVerifier(KEY, SECRET).verify(token)
    assert lk.identity == "dave"
    assert lk.name == "Dave"
    assert lk.metadata == "m"
    assert lk.kind == "agent"
    assert lk.attributes == {"x": "y"}
    assert lk.video is not None
    assert lk.video.room_join and lk.video.room == "r9"
    assert lk.video.can_publish is False
    assert lk.video.can_subscribe is True
    assert lk.video.can_publish_sources == ["camera"]
    assert lk.video.hidden and lk.video.agent
    assert lk.room_config is not None
    assert lk.room_config.name == "r9" and lk.room_config.departure_timeout == 5


def test_token_verifier_rejects_expired_minted_token() -> None:
    old = time.time() - 3600
    token = mint_token(KEY, SECRET, identity="a", room="r", ttl_s=60, now=old)
    with pytest.raises(jwt.ExpiredSignatureError):
        api.TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(seconds=0)).verify(token)


def test_claims_is_frozen() -> None:
    claims = verify_token(_raw(_payload()), KEYS, now=NOW)
    assert isinstance(claims, Claims)
    with pytest.raises(AttributeError):
        claims.identity = "mallory"  # type: ignore[misc]


def test_short_dev_secret_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    token = mint_token("devkey", "secret", identity="a", room="r")
    assert verify_token(token, {"devkey": "secret"}).identity == "a"
    assert not [w for w in recwarn if "HMAC key" in str(w.message)]
