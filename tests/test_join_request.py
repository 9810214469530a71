"""Issue 13: /rtc/v1's join_request decoding (pysfu.signal.join_request): what the SDKs
send decodes; gzip bombs, truncated gzip, truncated protobuf and junk are refused with a
message, never an exception of another kind or unbounded memory."""

from __future__ import annotations

import base64
import zlib

import pytest
from livekit.protocol import models, rtc

from pysfu.signal.join_request import (
    MAX_JOIN_REQUEST_BYTES,
    JoinRequestError,
    decode_join_request,
    encode_join_request,
)

REQUEST = rtc.JoinRequest(
    client_info=models.ClientInfo(sdk=models.ClientInfo.JS, version="2.15.0", protocol=16),
    connection_settings=rtc.ConnectionSettings(auto_subscribe=False),
    metadata="hello",
    publisher_offer=rtc.SessionDescription(type="offer", sdp="v=0\r\n", id=3),
)


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _query(body: bytes, compression: int) -> str:
    wrapped = rtc.WrappedJoinRequest(compression=compression, join_request=body)  # type: ignore[arg-type]
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


@pytest.mark.parametrize("gzip", [True, False])
def test_what_the_sdks_send_decodes(gzip: bool) -> None:
    assert decode_join_request(encode_join_request(REQUEST, gzip=gzip)) == REQUEST
    # Without its padding too.
    text = encode_join_request(REQUEST, gzip=gzip)
    assert decode_join_request(text.rstrip("=")) == REQUEST


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = _gzip(b"\x00" * (64 * MAX_JOIN_REQUEST_BYTES))
    assert len(bomb) < 100_000
    with pytest.raises(JoinRequestError, match="too large"):
        decode_join_request(_query(bomb, rtc.WrappedJoinRequest.GZIP))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "required"),
        ("!!!not base64!!!", "base64"),
        (base64.urlsafe_b64encode(b"\xff\xff\xff").decode(), "wrapped"),
        (_query(_gzip(REQUEST.SerializeToString())[:20], 1), "decompressed"),
        (_query(b"not gzip at all", 1), "decompressed"),
        (_query(REQUEST.SerializeToString()[:-3], 0), "unmarshal join request"),
        (_query(_gzip(REQUEST.SerializeToString()[:-3]), 1), "unmarshal join request"),
        (_query(b"", 7), "compression"),
        ("A" * 200_000, "too large"),
    ],
)
def test_bad_join_requests_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(JoinRequestError, match=message):
        decode_join_request(text)
