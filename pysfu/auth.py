"""Access tokens: the HS256 JWTs LiveKit clients and server SDKs present.

A token names its API key in ``iss``; the server looks up the secret by that key and
checks the signature, ``exp`` (required) and ``nbf`` with a leeway for clock skew. The
claims follow livekit/protocol's ``auth`` package: camelCase JSON, a ``video`` grant
whose ``canPublish``/``canSubscribe``/``canPublishData`` default to true when absent,
and a top-level ``kind``, ``attributes``, ``sha256`` (webhooks) and ``roomConfig``.

Only HS256 is accepted: a token asking for ``none`` or an asymmetric algorithm is
refused before its signature is looked at, so a key can never be confused for another
algorithm's.

:func:`verify_token` and :func:`mint_token` are pure: time comes in as ``now`` (unix
seconds) when a caller wants to control it, and nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import jwt
from livekit.protocol import models

from pysfu.errors import PysfuError

__all__ = [
    "AuthError",
    "Claims",
    "VideoGrant",
    "bearer_from_header",
    "mint_token",
    "verify_token",
]

ALGORITHM = "HS256"
DEFAULT_TTL_S = 6 * 3600.0
"""Token lifetime when the minter does not say: the same six hours as the LiveKit SDKs."""
DEFAULT_LEEWAY_S = 60.0
"""Clock skew tolerated on ``exp``/``nbf``: one minute, as livekit/protocol."""

PARTICIPANT_KINDS: Mapping[str, models.ParticipantInfo.Kind] = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
    "connector": models.ParticipantInfo.Kind.CONNECTOR,
    "bridge": models.ParticipantInfo.Kind.BRIDGE,
}
"""Token ``kind`` strings to ``ParticipantInfo.Kind`` values."""

TRACK_SOURCES: Mapping[str, models.TrackSource] = {
    "camera": models.TrackSource.CAMERA,
    "microphone": models.TrackSource.MICROPHONE,
    "screen_share": models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models.TrackSource.SCREEN_SHARE_AUDIO,
}
"""``canPublishSources`` strings to ``TrackSource`` values."""


@contextlib.contextmanager
def _short_secrets_allowed() -> Iterator[None]:
    # LiveKit's own dev key pair is `devkey: secret`; PyJWT would warn on every call.
    # The config loader warns once per short secret instead, as livekit-server does.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)
        yield


class AuthError(PysfuError):
    """A token was missing, malformed, unsigned by a known key, or out of its validity.

    The message is safe to return to the client (it never contains a secret).
    """


@attrs.frozen
class VideoGrant:
    """The ``video`` claim: what the holder may do with rooms and media."""

    room_join: bool = False
    """May join the room named by :attr:`room`."""
    room: str = ""
    """The room the join/admin rights apply to; empty for server-wide tokens."""
    room_create: bool = False
    """May create and delete rooms through the server API."""
    room_list: bool = False
    """May list rooms through the server API."""
    room_admin: bool = False
    """May administer participants and tracks of :attr:`room` through the server API."""
    room_record: bool = False
    """May use the egress (recording) API."""
    can_publish: bool = True
    """May publish tracks; true when the token does not say."""
    can_subscribe: bool = True
    """May subscribe to others' tracks; true when the token does not say."""
    can_publish_data: bool = True
    """May send data packets; true when the token does not say."""
    can_publish_sources: tuple[str, ...] = ()
    """Sources the holder may publish (``"camera"``, ``"microphone"``...); empty = any."""
    can_update_own_metadata: bool = False
    """May change its own name, metadata and attributes from the client."""
    hidden: bool = False
    """Invisible to other participants (bots)."""
    recorder: bool = False
    """Marks a recorder participant (deprecated upstream, still carried)."""
    agent: bool = False
    """Marks an agent participant."""


_GRANT_BOOL_FIELDS: Mapping[str, str] = {
    "roomJoin": "room_join",
    "roomCreate": "room_create",
    "roomList": "room_list",
    "roomAdmin": "room_admin",
    "roomRecord": "room_record",
    "canPublish": "can_publish",
    "canSubscribe": "can_subscribe",
    "canPublishData": "can_publish_data",
    "canUpdateOwnMetadata": "can_update_own_metadata",
    "hidden": "hidden",
    "recorder": "recorder",
    "agent": "agent",
}
# Absent means "allowed" for these three, so a minted token states them explicitly:
# omitting a False would silently grant the right.
_GRANT_DEFAULT_TRUE = frozenset({"can_publish", "can_subscribe", "can_publish_data"})


@attrs.frozen
class Claims:
    """A verified token's contents."""

    api_key: str
    """The key that signed the token (``iss``)."""
    identity: str
    """The participant identity (``sub``); empty for server-API tokens."""
    video: VideoGrant
    """The ``video`` grant; all defaults when the token carries none."""
    expires_at: float
    """``exp`` as unix seconds."""
    name: str = ""
    """Display name."""
    metadata: str = ""
    """Opaque participant metadata."""
    attributes: Mapping[str, str] = attrs.field(factory=dict)
    """Participant attributes."""
    kind: str = "standard"
    """Participant kind, lowercase as in the token (``standard``, ``agent``, ``sip``...)."""
    sha256: str = ""
    """Base64 SHA-256 of a webhook body this token vouches for; empty otherwise."""
    room_config: dict[str, Any] | None = None
    """The raw ``roomConfig`` JSON object (protojson of ``RoomConfiguration``), if any."""

    def participant_kind(self) -> models.ParticipantInfo.Kind:
        """The ``ParticipantInfo.Kind`` value; an unknown kind counts as standard."""
        return PARTICIPANT_KINDS.get(self.kind, models.ParticipantInfo.Kind.STANDARD)

    def permission(self) -> models.ParticipantPermission:
        """The ``ParticipantPermission`` this token starts a participant with."""
        grant = self.video
        return models.ParticipantPermission(
            can_publish=grant.can_publish,
            can_subscribe=grant.can_subscribe,
            can_publish_data=grant.can_publish_data,
            # Unknown source names are dropped rather than refused, like the reference
            # server: a newer SDK's source must not lock a participant out.
            can_publish_sources=[
                TRACK_SOURCES[s] for s in grant.can_publish_sources if s in TRACK_SOURCES
            ],
            hidden=grant.hidden,
            recorder=grant.recorder,
            can_update_metadata=grant.can_update_own_metadata,
            agent=grant.agent,
        )


def bearer_from_header(value: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <jwt>`` header value, or None.

    The scheme is matched case-insensitively (RFC 7235); any other scheme, or an empty
    token, gives None.
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def verify_token(
    token: str,
    keys: Mapping[str, str],
    *,
    now: float | None = None,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> Claims:
    """Check ``token`` against the API ``keys`` (key -> secret) and return its claims.

    Raises :class:`AuthError` when the token is not a well-formed HS256 JWT, its
    ``iss`` is not in ``keys``, the signature does not match, ``exp`` is missing or
    past, ``nbf`` is in the future, or a claim has the wrong type. ``now`` defaults to
    the wall clock; ``leeway_s`` widens both ends of the validity window.
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(f"malformed token: {exc}") from None
    except RecursionError:  # json.loads on deeply nested arrays, before any signature check
        raise AuthError("malformed token: JSON nested too deeply") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise AuthError(f"unsupported token algorithm {alg!r}: only {ALGORITHM} is accepted")
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise AuthError("token has no issuer (API key)")
    secret = keys.get(api_key)
    if secret is None:
        raise AuthError(f"unknown API key {api_key!r}")
    try:
        # Time checks are ours (below) so that `now` is honoured; PyJWT only checks
        # the signature here.
        with _short_secrets_allowed():
            payload = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
    except jwt.InvalidSignatureError:
        raise AuthError("invalid signature") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"malformed token: {exc}") from None

    now = time.time() if now is None else now
    exp = payload.get("exp")
    if exp is None:
        raise AuthError("token has no expiry (exp)")
    if not _is_number(exp):
        raise AuthError("malformed token: exp is not a number")
    if now > exp + leeway_s:
        raise AuthError("token expired")
    nbf = payload.get("nbf")
    if nbf is not None:
        if not _is_number(nbf):
            raise AuthError("malformed token: nbf is not a number")
        if now < nbf - leeway_s:
            raise AuthError("token not yet valid (nbf)")
    return _claims_from_payload(api_key, payload, float(exp))


def mint_token(
    api_key: str,
    secret: str,
    *,
    identity: str,
    room: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    name: str = "",
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
    kind: str = "standard",
    grant: VideoGrant | None = None,
    room_config: Mapping[str, Any] | None = None,
    sha256: str = "",
    now: float | None = None,
) -> str:
    """Sign a token that :func:`verify_token` and the LiveKit SDKs accept.

    Without ``grant``, a ``room`` gives a join grant for that room and no ``room`` gives
    no ``video`` claim at all (enough for a webhook signature). With both, ``room``
    replaces the grant's room. ``nbf`` is ``now`` and ``exp`` is ``now + ttl_s``.
    """
    if kind not in PARTICIPANT_KINDS:
        raise ValueError(f"unknown participant kind {kind!r}")
    if grant is None and room is not None:
        grant = VideoGrant(room_join=True, room=room)
    elif grant is not None and room is not None:
        grant = attrs.evolve(grant, room=room)
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "nbf": int(issued),
        # Rounded up so a short ttl never yields a token that is already expired.
        "exp": int(issued + ttl_s + 0.999),
    }
    if name:
        payload["name"] = name
    if metadata:
        payload["metadata"] = metadata
    if attributes:
        payload["attributes"] = dict(attributes)
    if kind != "standard":
        payload["kind"] = kind
    if sha256:
        payload["sha256"] = sha256
    if room_config is not None:
        payload["roomConfig"] = dict(room_config)
    if grant is not None:
        payload["video"] = _grant_to_json(grant)
    with _short_secrets_allowed():
        return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _is_number(value: object) -> bool:
    # Finite only: JSON admits 1e999 (inf), NaN and ints too large for a float, and
    # `now > exp + leeway` would then never expire the token or raise OverflowError.
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _grant_to_json(grant: VideoGrant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for json_name, field in _GRANT_BOOL_FIELDS.items():
        value = getattr(grant, field)
        if value or field in _GRANT_DEFAULT_TRUE:
            out[json_name] = value
    if grant.room:
        out["room"] = grant.room
    if grant.can_publish_sources:
        out["canPublishSources"] = list(grant.can_publish_sources)
    return out


def _grant_from_json(raw: object) -> VideoGrant:
    if raw is None:
        return VideoGrant()
    if not isinstance(raw, dict):
        raise AuthError("malformed token: video grant is not an object")
    values: dict[str, Any] = {}
    for json_name, field in _GRANT_BOOL_FIELDS.items():
        value = raw.get(json_name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise AuthError(f"malformed token: video.{json_name} is not a boolean")
        values[field] = value
    room = raw.get("room", "")
    if not isinstance(room, str):
        raise AuthError("malformed token: video.room is not a string")
    values["room"] = room
    sources = raw.get("canPublishSources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise AuthError("malformed token: video.canPublishSources is not a list of strings")
    values["can_publish_sources"] = tuple(sources)
    # Other keys (destinationRoom, canSubscribeMetrics, ingressAdmin...) are ignored:
    # SDKs add grants faster than a server needs them.
    return VideoGrant(**values)


def _string_claim(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AuthError(f"malformed token: {key} is not a string")
    return value


def _claims_from_payload(api_key: str, payload: Mapping[str, Any], exp: float) -> Claims:
    attributes = payload.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise AuthError("malformed token: attributes is not a map of strings")
    room_config = payload.get("roomConfig")
    if room_config is not None and not isinstance(room_config, dict):
        raise AuthError("malformed token: roomConfig is not an object")
    kind = _string_claim(payload, "kind").lower() or "standard"
    return Claims(
        api_key=api_key,
        identity=_string_claim(payload, "sub"),
        name=_string_claim(payload, "name"),
        metadata=_string_claim(payload, "metadata"),
        attributes=dict(attributes),
        kind=kind,
        video=_grant_from_json(payload.get("video")),
        sha256=_string_claim(payload, "sha256"),
        room_config=room_config,
        expires_at=exp,
    )
