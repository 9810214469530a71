"""Regressions from fuzzing (docs/fuzzing.md): every input in ``fuzz/corpus`` replayed
through its harness in-process (no atheris needed), and one readable test per bug the
fuzzers found, each stating what used to happen."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import pathlib
import sys
from collections.abc import Iterator

import pytest
from livekit.protocol import rtc

from pysfu.auth import AuthError, verify_token
from pysfu.config import ConfigError, load_config

from .conftest import RunningServer
from .fuzz_targets import FUZZ, TARGETS
from .signal_client import SignalClient, connect


def _corpus() -> Iterator[tuple[str, pathlib.Path]]:
    for target in TARGETS:
        for path in sorted((FUZZ / "corpus" / target).iterdir()):
            yield target, path


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[str, object]]:
    sys.path.insert(0, str(FUZZ / "python"))
    try:
        yield {t: importlib.import_module(f"fuzz_{t}") for t in TARGETS}
    finally:
        sys.path.remove(str(FUZZ / "python"))


@pytest.mark.parametrize(
    ("target", "path"), list(_corpus()), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_corpus_input_replays_cleanly(
    harnesses: dict[str, object], target: str, path: pathlib.Path
) -> None:
    harnesses[target].test_one_input(path.read_bytes())  # type: ignore[attr-defined]


# ---- access tokens ------------------------------------------------------------------------

KEYS = {"key": "k" * 32}
NOW = 1_700_000_000


def _signed(payload: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    mac = hmac.new(KEYS["key"].encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(mac)}"


@pytest.mark.parametrize("exp", ["1e999", "-1e999", "NaN", "Infinity", "1" + "0" * 400])
def test_token_with_non_finite_exp_is_refused(exp: str) -> None:
    # fuzz_jwt: exp 34e00007200 parsed as inf, so `now > exp + leeway` never held and the
    # token never expired; NaN likewise; a 400-digit int raised OverflowError instead.
    token = _signed(f'{{"iss":"key","sub":"a","exp":{exp}}}')
    with pytest.raises(AuthError, match="exp is not a number"):
        verify_token(token, KEYS, now=NOW)


@pytest.mark.parametrize("nbf", ["-1e999", "NaN", "-" + "9" * 400])
def test_token_with_non_finite_nbf_is_refused(nbf: str) -> None:
    token = _signed(f'{{"iss":"key","sub":"a","exp":{NOW + 60},"nbf":{nbf}}}')
    with pytest.raises(AuthError, match="nbf is not a number"):
        verify_token(token, KEYS, now=NOW)


def test_deeply_nested_token_payload_is_an_auth_error() -> None:
    token = _signed("[" * 5000)
    with pytest.raises(AuthError, match="malformed"):
        verify_token(token, KEYS, now=NOW)


# ---- configuration ----------------------------------------------------------------------


def _load(body: str) -> None:
    load_config(config_body=body, env={})


@pytest.mark.parametrize("port", ["\u00b2", "\u0663\u00b9"])
def test_unicode_digit_udp_port_is_a_config_error(port: str) -> None:
    # fuzz_config: "²".isdigit() is true, so int("²") raised ValueError out of load_config.
    with pytest.raises(ConfigError, match=r"rtc\.udp_port"):
        _load(f'keys: {{a: b}}\nrtc: {{udp_port: "{port}"}}\n')


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_room_timeout_is_a_config_error(value: str) -> None:
    # fuzz_config: .inf loaded, then every Room.info() raised OverflowError (int(inf)),
    # so no participant could ever join.
    with pytest.raises(ConfigError, match=r"room\.empty_timeout"):
        _load(f"keys: {{a: b}}\nroom: {{empty_timeout: {value}}}\n")


@pytest.mark.parametrize(
    "body", ["keys: " + "[" * 3000, "[" * 3000, "keys: {a: b}\nrtc: " + "{a: " * 2000]
)
def test_deeply_nested_config_is_a_config_error(body: str) -> None:
    # fuzz_config: PyYAML recursed past the interpreter's limit: RecursionError.
    with pytest.raises(ConfigError, match="nested too deeply"):
        _load(body)


def test_deeply_nested_keys_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="could not parse keys"):
        load_config(keys_flag="[" * 3000, env={})


def test_alias_bomb_in_config_gives_a_short_error() -> None:
    # Nine levels of nine aliases: a few hundred bytes that repr to ~1e9 items. The
    # error message used the full repr and never finished (or ran out of memory).
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    prev = "a"
    for i in range(9):
        lines.append(f"l{i}: &l{i} [{','.join([f'*{prev}'] * 9)}]")
        prev = f"l{i}"
    lines += [f"room: *{prev}", "keys: {a: b}"]
    with pytest.raises(ConfigError, match="room: expected a mapping") as info:
        _load("\n".join(lines))
    assert len(str(info.value)) < 2000


# ---- signaling front door ---------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("protocol", ["\u00b2", "9" * 5000, "-1", "16x"])
async def test_odd_protocol_query_still_joins(server: RunningServer, protocol: str) -> None:
    # fuzz_http: protocol=%C2%B2 passed isdigit() and int() raised ValueError in the
    # WebSocket handler, so the connection died without a JoinResponse; 5000 digits
    # exceeded int()'s digit limit the same way.
    async with connect(server.url, server.token_for("alice"), protocol=protocol) as ws:
        client = SignalClient(ws)
        join = await client.expect("join")
        assert join.join.participant.identity == "alice"
        await client.send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1)))
        assert (await client.expect("pong_resp")).pong_resp.last_ping_timestamp == 1


def test_corpus_is_not_empty() -> None:
    counts = {t: len(list((FUZZ / "corpus" / t).iterdir())) for t in TARGETS}
    assert all(counts.values()), counts


# ---- room state through signaling sessions ------------------------------------------------------


@pytest.mark.trio
async def test_duplicate_identity_unbinds_before_unpublishing(
    harnesses: dict[str, object],
) -> None:
    # fuzz_signal: a second "ann" joined while ben was subscribed to the first ann's live
    # track. The session deferred *all* of the join's bindings (meant for the joiner's
    # own subscriptions) until after the rest of its effects, so the media plane was
    # told the old track was unpublished while ben's subscription to it was still bound.
    import trio.testing

    from pysfu import testing
    from pysfu.runtime.manager import RoomManager

    fs = harnesses["signal"]
    manager = RoomManager()
    media = fs.RecordingMedia()  # type: ignore[attr-defined]
    manager.media = media

    async def join(nursery: trio.Nursery, identity: str) -> str:
        transport = fs.FakeTransport(identity)  # type: ignore[attr-defined]
        claims = testing.claims_for(identity, "r")
        session = await nursery.start(testing.join, manager, claims, transport)
        return str(session.sid)

    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        room = manager.create_room("r")
        first_ann = await join(nursery, "ann")
        await join(nursery, "ben")
        await trio.testing.wait_all_tasks_blocked()
        manager.apply(room, room.add_track(first_ann, rtc.AddTrackRequest(cid="c")))
        _, fx = room.track_live(first_ann, cid="c")
        manager.apply(room, fx)
        assert len(media.bound) == 1  # ben forwards ann's track
        await join(nursery, "ann")  # raised AssertionError in tracks_unpublished
        await trio.testing.wait_all_tasks_blocked()
        assert first_ann not in room.participants and not media.bound
        room.check_invariants()
        nursery.cancel_scope.cancel()
