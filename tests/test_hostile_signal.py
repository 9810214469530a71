"""Hostile signaling and data must not hurt other participants (issue: forged
transcriptions, hidden identities, log amplification, pathological JSON, unbounded
names). Official Python SDK where the defect shows there; the raw wire client where
the request is one no SDK would send."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest
import trio
from livekit import rtc as lk
from livekit.protocol import rtc

from .conftest import RunningServer
from .sdk_helpers import connected
from .signal_client import SignalClient, connect

# ---- data: who said it ---------------------------------------------------------------------


def _transcription(identity: str, text: str, track_sid: str = "TR_mic") -> lk.Transcription:
    segment = lk.TranscriptionSegment(
        id=secrets.token_hex(4), text=text, start_time=0, end_time=0, language="en", final=True
    )
    return lk.Transcription(participant_identity=identity, track_sid=track_sid, segments=[segment])


@pytest.mark.asyncio
async def test_forged_transcription_never_reaches_others_as_the_victims(
    server: RunningServer,
) -> None:
    async with (
        connected(server, "victim") as (_, _),
        connected(server, "forger") as (forger, _),
        connected(server, "agent", kind="agent") as (agent, _),
        connected(server, "listener") as (_, listener_w),
    ):
        await forger.local_participant.publish_transcription(_transcription("victim", "forged"))
        # A track id that is no track sid aborts every Python SDK that receives it.
        await agent.local_participant.publish_transcription(_transcription("victim", "x", ""))
        await forger.local_participant.publish_transcription(_transcription("forger", "mine"))
        # The agents framework transcribes users: an agent may speak for others.
        await agent.local_participant.publish_transcription(_transcription("victim", "agent"))
        texts: list[tuple[str, str]] = []
        for expected in ("mine", "agent"):
            segments, part, _ = await listener_w.wait_for(
                "transcription_received", lambda s, p, pub, e=expected: s[0].text == e
            )
            texts.append((segments[0].text, part.identity))
        assert texts == [("mine", "forger"), ("agent", "victim")]
        seen = [a[0][0].text for n, a in listener_w.seen if n == "transcription_received"]
        assert "forged" not in seen and "x" not in seen


@pytest.mark.asyncio
async def test_hidden_senders_identity_is_blank_at_receivers(server: RunningServer) -> None:
    async with (
        connected(server, "ghost", hidden=True) as (ghost, _),
        connected(server, "bob") as (bob, _),
    ):
        callers: asyncio.Queue[str] = asyncio.Queue()

        @bob.local_participant.register_rpc_method("who")
        async def who(data: lk.RpcInvocationData) -> str:
            await callers.put(data.caller_identity)
            return "ok"

        # The reply cannot find a caller without an identity; the call itself arrives.
        task = asyncio.create_task(
            ghost.local_participant.perform_rpc(
                destination_identity="bob", method="who", payload="", response_timeout=2
            )
        )
        caller = await asyncio.wait_for(callers.get(), 10)
        assert caller == ""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- signaling: bounded work per request -----------------------------------------------------


async def _ping_rtts(client: SignalClient, stop: trio.Event, out: list[float]) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        await client.send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=int(sent * 1000))))
        await client.expect("pong_resp", timeout=10)
        out.append(time.monotonic() - sent)
        await trio.sleep(0.05)


@pytest.mark.trio
async def test_huge_subscription_request_stalls_nobody_and_logs_little(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pysfu")
    sids = [f"TR_{secrets.token_hex(6)}" for _ in range(30_000)]
    flood = rtc.SignalRequest(subscription=rtc.UpdateSubscription(track_sids=sids, subscribe=True))
    assert len(flood.SerializeToString()) < 1 << 20  # under the frame limit
    async with (
        connect(server.url, server.token_for("attacker", "a")) as ws_a,
        connect(server.url, server.token_for("bystander", "b")) as ws_b,
    ):
        attacker, bystander = SignalClient(ws_a), SignalClient(ws_b)
        await attacker.expect("join")
        await bystander.expect("join")
        before = sum(len(r.getMessage()) for r in caplog.records)
        rtts: list[float] = []
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ping_rtts, bystander, stop, rtts)
            for _ in range(20):
                await attacker.send(flood)
            await attacker.send(rtc.SignalRequest(ping=1))
            await attacker.expect("pong", timeout=30)
            stop.set()
        logged = sum(len(r.getMessage()) for r in caplog.records) - before
        assert max(rtts) < 0.5, f"bystander's signal round trips up to {max(rtts):.3f} s"
        assert logged < 1_000_000, f"{logged} bytes logged"
        # The attacker was answered in bounded measure and is still there.
        errors = [m for m in await attacker.drain() if m.HasField("subscription_response")]
        assert 0 < len(errors) <= 20 * 16
        room = await server.acall(server.server.room, "a")
        assert room is not None and room.participant_by_identity("attacker") is not None


@pytest.mark.trio
@pytest.mark.parametrize(
    "candidate_init",
    ["[" * 2000 + "]" * 2000, '{"candidate":' * 1500 + "1" + "}" * 1500, "[" * 200_000],
    ids=["nested-array", "nested-object", "oversized"],
)
async def test_pathological_trickle_json_is_ignored_without_a_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture, candidate_init: str
) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        trickle = rtc.TrickleRequest(
            candidateInit=candidate_init, target=rtc.SignalTarget.PUBLISHER
        )
        await alice.send(rtc.SignalRequest(trickle=trickle))
        await alice.send(rtc.SignalRequest(ping=1))
        await alice.expect("pong")
        room = await server.acall(server.server.room, "room1")
        assert room.participant_by_identity("alice") is not None
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.trio
async def test_oversized_track_name_is_refused(server: RunningServer) -> None:
    async with connect(server.url, server.token_for("alice")) as ws:
        alice = SignalClient(ws)
        await alice.expect("join")
        add = rtc.AddTrackRequest(cid="mic", name="n" * 900_000, type=0)
        await alice.send(rtc.SignalRequest(add_track=add))
        refusal = (await alice.expect("request_response")).request_response
        assert refusal.reason == rtc.RequestResponse.Reason.LIMIT_EXCEEDED
        room = await server.acall(server.server.room, "room1")
        assert not room.participant_by_identity("alice").publications
