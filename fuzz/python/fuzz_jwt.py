"""Fuzz access-token parsing and grant checks: ``verify_token`` on raw strings and on
correctly signed tokens whose header or payload JSON comes from the fuzzer, then the
join and server-API grant checks on whatever it accepts.

Findings: any exception other than ``AuthError``/``SignalRejected``/``TwirpError``; a
token accepted despite a wrong key, a non-HS256 header, an expired ``exp`` or a future
``nbf``; claims that disagree with the JSON they came from (a grant that appears
without ``true`` in the token). Run:
``python fuzz/python/fuzz_jwt.py fuzz/corpus/jwt``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import sys
from typing import Any

from _common import capture_errors, instrumented, run

with instrumented("pysfu", "jwt"):
    from pysfu.api.http import App, SignalRejected
    from pysfu.api.twirp import TwirpError, TwirpService
    from pysfu.auth import TRACK_SOURCES, AuthError, Claims, verify_token
    from pysfu.runtime.manager import RoomManager

ERRORS = capture_errors()

NOW = 1_700_000_000.0
LEEWAY_S = 60.0
KEYS = {"key": "k" * 32, "short": "s"}
HEADER = b'{"alg":"HS256","typ":"JWT"}'
PAYLOAD = b'{"iss":"key","sub":"alice","exp":1700003600,"video":{"roomJoin":true,"room":"r"}}'

_manager = RoomManager()
_app = App(_manager, KEYS)
_twirp = TwirpService(_manager, KEYS)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: bytes, payload: bytes, secret: str) -> str:
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def check_claims(claims: Claims, header: bytes | None, payload: bytes | None) -> None:
    """What must hold of any token verify_token accepts."""
    assert isinstance(claims.identity, str) and isinstance(claims.api_key, str)
    assert claims.api_key in KEYS
    assert math.isfinite(claims.expires_at), "accepted a token with a non-finite exp"
    assert claims.expires_at + LEEWAY_S >= NOW, "accepted an expired token"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in claims.attributes.items())
    perm = claims.permission()
    assert all(s in TRACK_SOURCES.values() for s in perm.can_publish_sources)
    claims.participant_kind()
    if header is not None:
        parsed = _json(header)
        assert isinstance(parsed, dict) and parsed.get("alg") == "HS256", "non-HS256 accepted"
    if payload is not None:
        body = _json(payload)
        assert isinstance(body, dict)
        nbf = body.get("nbf")
        if nbf is not None:
            assert nbf - LEEWAY_S <= NOW, "accepted a token before its nbf"
        video = body.get("video") or {}
        for json_name, value in (
            ("roomJoin", claims.video.room_join),
            ("roomAdmin", claims.video.room_admin),
            ("roomCreate", claims.video.room_create),
            ("roomList", claims.video.room_list),
            ("canUpdateOwnMetadata", claims.video.can_update_own_metadata),
            ("hidden", claims.video.hidden),
        ):
            assert value == (video.get(json_name) is True), f"grant {json_name} misread"
        for json_name, value in (
            ("canPublish", claims.video.can_publish),
            ("canSubscribe", claims.video.can_subscribe),
            ("canPublishData", claims.video.can_publish_data),
        ):
            assert value == (video.get(json_name) is not False), f"grant {json_name} misread"


def check_grants(token: str, claims: Claims) -> None:
    """The join check (/rtc) and the server-API room-admin check on the same token."""
    scope = {"query_string": b"access_token=" + token.encode(), "headers": []}
    try:
        joined, _ = _app._authorize_join(scope)
    except SignalRejected as exc:
        assert exc.status in (401, 403)
    else:
        assert joined.video.room_join and joined.video.room and joined.identity
    for room in ("r", "other", ""):
        try:
            _twirp._admin(claims, room)
        except TwirpError as exc:
            assert exc.code in ("invalid_argument", "permission_denied", "unauthenticated")
        else:
            assert claims.video.room_admin and claims.video.room == room != ""


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    header: bytes | None = None
    payload: bytes | None = None
    if mode == 0:  # anything at all where a token goes
        token = rest.decode("utf-8", "replace")
    elif mode == 1:  # a correctly signed token whose payload is the fuzzer's
        payload = rest
        token = sign(HEADER, payload, KEYS["key"])
    elif mode == 2:  # a correctly signed token whose header is the fuzzer's
        header, payload = rest, PAYLOAD
        token = sign(header, payload, KEYS["key"])
    else:  # the fuzzer's payload signed with a key the server does not have
        token = sign(HEADER, rest, "not-the-secret-" * 3)
    try:
        claims = verify_token(token, KEYS, now=NOW, leeway_s=LEEWAY_S)
    except AuthError as exc:
        # The message may echo what the token said, never a secret it did not contain.
        echoed = KEYS["key"] in token or KEYS["key"].encode() in rest
        assert echoed or KEYS["key"] not in str(exc), "secret in an error message"
    else:
        assert mode != 3, "accepted a token signed with an unknown secret"
        check_claims(claims, header if mode == 2 else HEADER if mode else None, payload)
        check_grants(token, claims)
    ERRORS.check()


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
