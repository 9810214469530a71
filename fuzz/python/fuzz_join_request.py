"""Fuzz ``/rtc/v1``'s ``join_request`` decoding: base64url text, the WrappedJoinRequest
protobuf, gzip (bombs, truncated and corrupt streams) and the JoinRequest inside.

Modes by the first byte: the rest as the query text itself; as WrappedJoinRequest
bytes (base64 applied here); as a JoinRequest body sent uncompressed; as data gzipped
here (so the fuzzer explores the JoinRequest parser behind gzip); as a raw gzip stream
(truncations and corruptions of real gzip). Findings: any exception but
``JoinRequestError``; an accepted request whose decompressed size exceeds the bound.
Run: ``python fuzz/python/fuzz_join_request.py fuzz/corpus/join_request``.
"""

from __future__ import annotations

import base64
import sys
import zlib

from _common import instrumented, run

with instrumented("pysfu"):
    from livekit.protocol import rtc

    from pysfu.signal.join_request import (
        MAX_JOIN_REQUEST_BYTES,
        JoinRequestError,
        decode_join_request,
    )


def _wrap(body: bytes, compression: int) -> str:
    wrapped = rtc.WrappedJoinRequest(compression=compression, join_request=body)  # type: ignore[arg-type]
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        text = rest.decode("latin-1")
    elif mode == 1:
        text = base64.urlsafe_b64encode(rest).decode()
    elif mode == 2:
        text = _wrap(rest, rtc.WrappedJoinRequest.NONE)
    elif mode == 3:
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        text = _wrap(compressor.compress(rest) + compressor.flush(), rtc.WrappedJoinRequest.GZIP)
    else:
        text = _wrap(rest, rtc.WrappedJoinRequest.GZIP)
    try:
        request = decode_join_request(text)
    except JoinRequestError:
        return
    assert isinstance(request, rtc.JoinRequest)
    assert request.ByteSize() <= MAX_JOIN_REQUEST_BYTES, "accepted a request beyond the bound"


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
