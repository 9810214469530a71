"""The ``/rtc/v1`` ``join_request`` query parameter: base64url of a
``WrappedJoinRequest`` (``compression`` NONE or GZIP, ``join_request`` bytes) holding a
``JoinRequest``, as livekit-server 1.13 reads it.

Bounds, so that a URL cannot make the server allocate or spin: the decoded wrapper is
at most ``MAX_WRAPPED_BYTES`` (a URL is at most hypercorn's header limit anyway), and
gzip output is read incrementally and refused past ``MAX_JOIN_REQUEST_BYTES`` (a gzip
bomb inflates a few kilobytes to gigabytes). Anything malformed is a
:class:`JoinRequestError` whose message is safe to send back (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import zlib

from google.protobuf.message import DecodeError
from livekit.protocol import rtc

__all__ = [
    "MAX_JOIN_REQUEST_BYTES",
    "JoinRequestError",
    "decode_join_request",
    "encode_join_request",
]

MAX_WRAPPED_BYTES = 64 * 1024
MAX_JOIN_REQUEST_BYTES = 1 << 20
"""A JoinRequest with a publisher offer is a few kilobytes; the reference's gzip
limit is of the same order (its uncompressed limit is Go's 1 MiB header limit)."""


class JoinRequestError(ValueError):
    """The join_request parameter cannot be used (HTTP 400)."""


def _unb64(text: str) -> bytes:
    # The SDKs send URL-safe base64 with padding; be lenient about missing padding
    # and about the standard alphabet (which '+' would have been turned into ' ').
    cleaned = text.strip().replace(" ", "+")
    if len(cleaned) > MAX_WRAPPED_BYTES * 4 // 3 + 4:
        raise JoinRequestError("join request too large")
    try:
        return base64.b64decode(
            cleaned.replace("-", "+").replace("_", "/") + "=" * (-len(cleaned) % 4),
            validate=True,
        )
    except (binascii.Error, ValueError):
        raise JoinRequestError("cannot base64 decode wrapped join request") from None


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_JOIN_REQUEST_BYTES + 1)
    except zlib.error:
        raise JoinRequestError("cannot read decompressed join request") from None
    if len(out) > MAX_JOIN_REQUEST_BYTES or inflater.unconsumed_tail:
        raise JoinRequestError("join request too large")
    if not inflater.eof:
        raise JoinRequestError("cannot read decompressed join request (truncated gzip)")
    return out


def decode_join_request(text: str) -> rtc.JoinRequest:
    """The JoinRequest in a ``join_request`` query value."""
    if not text:
        raise JoinRequestError("join_request is required")
    raw = _unb64(text)
    wrapped = rtc.WrappedJoinRequest()
    try:
        wrapped.ParseFromString(raw)
    except (DecodeError, RecursionError):
        raise JoinRequestError("cannot unmarshal wrapped join request") from None
    body = wrapped.join_request
    if wrapped.compression == rtc.WrappedJoinRequest.GZIP:
        body = _gunzip(body)
    elif wrapped.compression != rtc.WrappedJoinRequest.NONE:
        raise JoinRequestError(f"unknown join request compression {wrapped.compression}")
    if len(body) > MAX_JOIN_REQUEST_BYTES:
        raise JoinRequestError("join request too large")
    request = rtc.JoinRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError):
        raise JoinRequestError("cannot unmarshal join request") from None
    return request


def encode_join_request(request: rtc.JoinRequest, *, gzip: bool = True) -> str:
    """The query value an SDK sends (tests and the load generator)."""
    body = request.SerializeToString()
    wrapped = rtc.WrappedJoinRequest(join_request=body)
    if gzip:
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        wrapped.join_request = compressor.compress(body) + compressor.flush()
        wrapped.compression = rtc.WrappedJoinRequest.GZIP
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()
