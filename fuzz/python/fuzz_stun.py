"""Fuzz the STUN binding-response parser (``rtc.use_external_ip`` discovery reads
whatever comes back from a STUN server's address).

Findings: any exception but ``StunError``; an accepted answer whose transaction id is
not ours; an address that does not round-trip through ``ipaddress``. Run:
``python fuzz/python/fuzz_stun.py fuzz/corpus/stun``.
"""

from __future__ import annotations

import ipaddress
import sys

from _common import instrumented, run

with instrumented("pysfu"):
    from pysfu.media.stun import StunError, parse_binding_response

TXID = bytes(range(12))


def test_one_input(data: bytes) -> None:
    # Half the inputs get our transaction id spliced in, to reach the attribute walk.
    if data[:1] == b"\x01" and len(data) >= 21:
        data = data[1:9] + TXID + data[21:]
    try:
        ip, port = parse_binding_response(data, TXID)
    except StunError:
        return
    assert data[8:20] == TXID, "accepted someone else's transaction"
    assert str(ipaddress.ip_address(ip)) == ip and 0 <= port <= 65535


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
