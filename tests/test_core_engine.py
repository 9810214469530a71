"""Smoke tests of the compiled media engine (``pysfu._core``)."""

from __future__ import annotations

import select
import time

import pytest

from pysfu import _core


@pytest.fixture
def engine() -> _core.MediaEngine:
    e = _core.MediaEngine(bind_ip="127.0.0.1", udp_port=0)
    yield e
    e.close()


def test_binds_ephemeral_port(engine: _core.MediaEngine) -> None:
    assert engine.udp_port > 0
    assert isinstance(engine.wake_fd(), int)


def test_subscriber_offer_has_data_channels_and_candidate(engine: _core.MediaEngine) -> None:
    engine.add_peer("PA_1/pub", subscriber=False)
    engine.add_peer("PA_1/sub", subscriber=True)
    offer = engine.create_offer("PA_1/sub")
    assert "m=application" in offer
    assert "a=ice-lite" in offer
    assert f"127.0.0.1 {engine.udp_port} typ host" in offer
    cands = engine.local_candidates("PA_1/sub")
    assert cands and cands[0].startswith("candidate:")
    # Nothing changed: the same offer again.
    assert engine.create_offer("PA_1/sub") == offer


def test_drain_events_never_blocks(engine: _core.MediaEngine) -> None:
    start = time.monotonic()
    assert engine.drain_events() == []
    assert time.monotonic() - start < 0.5
    readable, _, _ = select.select([engine.wake_fd()], [], [], 0)
    assert readable == []


def test_errors_are_media_errors(engine: _core.MediaEngine) -> None:
    engine.add_peer("p", subscriber=False)
    with pytest.raises(_core.MediaError):
        engine.add_peer("p", subscriber=False)
    with pytest.raises(_core.MediaError):
        engine.create_offer("nope")
    with pytest.raises(_core.MediaError):
        engine.create_offer("p")  # publisher peers do not offer
    with pytest.raises(_core.MediaError):
        engine.accept_offer("p", "garbage")
    with pytest.raises(_core.MediaError):
        engine.add_remote_candidate("p", "not a candidate")
    with pytest.raises(_core.MediaError):
        engine.subscribe(subscriber="p", track_id="TR_x", stream_id="PA|TR_x")
    with pytest.raises(_core.MediaError):
        engine.send_data("p", reliable=True, payload=b"x")
    with pytest.raises(_core.MediaError):
        engine.set_muted("TR_unknown", True)
    engine.remove_peer("p")
    engine.remove_peer("p")  # idempotent


def test_stats_and_close() -> None:
    e = _core.MediaEngine(udp_port=0)
    stats = e.stats()
    assert stats["peers"] == 0
    assert {"packets_in", "packets_out", "rtp_forwarded"} <= stats.keys()
    e.close()
    e.close()
    with pytest.raises(_core.MediaError):
        e.add_peer("x", subscriber=True)


def test_context_manager() -> None:
    with _core.MediaEngine(udp_port=0) as e:
        e.add_peer("x", subscriber=True)
