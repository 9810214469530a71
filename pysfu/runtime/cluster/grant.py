"""Node-to-node trust: a node that relays a client's signal connection or forwards a
server-API call proves it is one of the cluster with a :class:`RelayGrant` signed by
an API secret every node has. The receiving node then serves the request itself
rather than routing it again (a client cannot forge the header to pick a node).

Header value: ``base64url(RelayGrant) "." base64url(HMAC-SHA256(grant bytes))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from google.protobuf.message import DecodeError

from .cluster_pb2 import RelayGrant

HEADER = "x-pysfu-relay"
GRANT_TTL_S = 60.0
MAX_HEADER_BYTES = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cluster_key(keys: Mapping[str, str]) -> tuple[str, str]:
    """The key pair grants are signed with: the first API key in sorted order (every
    node of a cluster is configured with the same keys)."""
    api_key = sorted(keys)[0]
    return api_key, keys[api_key]


def sign(keys: Mapping[str, str], from_node: str, to_node: str) -> str:
    api_key, secret = cluster_key(keys)
    grant = RelayGrant(
        from_node=from_node,
        to_node=to_node,
        api_key=api_key,
        expires_at_ms=int((time.time() + GRANT_TTL_S) * 1000),
    ).SerializeToString()
    mac = hmac.new(secret.encode(), grant, hashlib.sha256).digest()
    return f"{_b64(grant)}.{_b64(mac)}"


def verify(keys: Mapping[str, str], value: str, node_id: str) -> RelayGrant | None:
    """The grant if ``value`` is a valid, unexpired grant addressed to ``node_id``."""
    if len(value) > MAX_HEADER_BYTES or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    try:
        raw, tag = _unb64(body), _unb64(mac)
        grant = RelayGrant()
        grant.ParseFromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        return None
    secret = keys.get(grant.api_key)
    if secret is None:
        return None
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        return None
    if grant.to_node != node_id or grant.expires_at_ms < time.time() * 1000:
        return None
    return grant
