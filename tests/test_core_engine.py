"""Smoke tests of the compiled media engine (``pysfu._core``)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator

import pytest

from pysfu import _core


@pytest.fixture
def engine() -> Iterator[_core.MediaEngine]:
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


def _ice_credentials(sdp: str) -> tuple[str, str]:
    lines = sdp.splitlines()
    ufrag = next(line.split(":", 1)[1] for line in lines if line.startswith("a=ice-ufrag:"))
    pwd = next(line.split(":", 1)[1] for line in lines if line.startswith("a=ice-pwd:"))
    return ufrag, pwd


def _wait(what: str, cond: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_subscriber_ice_restart_keeps_media_flowing(engine: _core.MediaEngine) -> None:
    """A LoadGenerator client (full ICE, DTLS, SRTP over loopback) publishes audio to
    a subscriber client; the server restarts ICE on the subscriber peer mid-stream."""
    gen = _core.LoadGenerator()
    try:
        pub, sub = gen.add_peer(), gen.add_peer()
        engine.add_peer("PA_1/pub", subscriber=False)
        engine.add_peer("PA_2/sub", subscriber=True)
        # Before the first answer there is nothing to restart: a plain offer.
        first = engine.create_offer("PA_2/sub")
        assert engine.create_offer("PA_2/sub", ice_restart=True) == first
        engine.accept_answer("PA_2/sub", gen.accept_offer(sub, first))
        offer = gen.publisher_offer(pub, [("cid-audio", "audio", 32)])
        gen.accept_answer(pub, engine.accept_offer("PA_1/pub", offer))
        arrived: list[_core.TrackArrived] = []

        def track_arrived() -> bool:
            arrived.extend(e for e in engine.drain_events() if isinstance(e, _core.TrackArrived))
            return bool(arrived)

        _wait("the audio track", track_arrived)
        engine.publish_track(publisher="PA_1/pub", mid=arrived[0].mid, track_id="TR_a")
        engine.subscribe(subscriber="PA_2/sub", track_id="TR_a", stream_id="PA_1|TR_a")
        offer = engine.create_offer("PA_2/sub")
        answer = gen.accept_offer(sub, offer)
        engine.accept_answer("PA_2/sub", answer)
        _wait("audio at the subscriber", lambda: gen.peer_info(sub)["packets_received"] > 25)

        restart = engine.create_offer("PA_2/sub", ice_restart=True)
        assert _ice_credentials(restart)[0] != _ice_credentials(offer)[0]
        assert _ice_credentials(restart)[1] != _ice_credentials(offer)[1]
        # Unanswered and nothing else changed: asked again, the restart offer repeats.
        assert engine.create_offer("PA_2/sub") == restart
        restarted_answer = gen.accept_offer(sub, restart)
        assert _ice_credentials(restarted_answer)[0] != _ice_credentials(answer)[0]
        engine.accept_answer("PA_2/sub", restarted_answer)
        before = gen.peer_info(sub)["packets_received"]
        time.sleep(2)
        # Opus at 50 packets/s: most of two seconds' worth after the restart.
        assert gen.peer_info(sub)["packets_received"] - before >= 60
        assert not [e for e in engine.drain_events() if isinstance(e, _core.PeerClosed)]
        with pytest.raises(_core.MediaError):
            engine.create_offer("PA_1/pub", ice_restart=True)  # publishers restart by offering
    finally:
        gen.close()


def test_ice_disconnected_grace_is_an_engine_setting() -> None:
    with _core.MediaEngine(udp_port=0, ice_disconnected_grace=30.0) as e:
        e.add_peer("p", subscriber=True)
    with _core.MediaEngine(udp_port=0, ice_disconnected_grace=0) as e:
        assert e.stats()["peers"] == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ice_disconnected_grace"):
            _core.MediaEngine(udp_port=0, ice_disconnected_grace=bad)
