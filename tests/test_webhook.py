from __future__ import annotations

import functools
import json
import socket
import time

import attrs
import h11
import jwt
import pytest
import trio
from livekit import api
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from pysfu.runtime.ports import NullWebhookSink, WebhookSink
from pysfu.runtime.webhooks import CONTENT_TYPE, WebhookSender, encode_event

KEY = "APIwebhook"
SECRET = "webhook-secret-that-is-32-chars-or-more"
DEADLINE_S = 10.0


@attrs.frozen
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Endpoint:
    """A minimal HTTP/1.1 server that records requests and answers scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[Received] = []
        self.url = ""
        self._send, self._receive = trio.open_memory_channel[Received](100)

    async def next_request(self) -> Received:
        with trio.fail_after(DEADLINE_S):
            return await self._receive.receive()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed or PAUSED
                        return
                assert request is not None
                received = Received(
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in request.headers},
                    body=body,
                )
                self.requests.append(received)
                status = self.statuses.pop(0) if self.statuses else 200
                out = conn.send(h11.Response(status_code=status, headers=[("content-length", "2")]))
                out += conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                self._send.send_nowait(received)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()


async def start_endpoint(nursery: trio.Nursery, statuses: list[int] | None = None) -> Endpoint:
    endpoint = Endpoint(statuses)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, endpoint.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    endpoint.url = f"http://127.0.0.1:{port}/webhook"
    return endpoint


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there once the socket is closed.
    return f"http://127.0.0.1:{port}/gone"


def sender(urls: list[str], **kwargs: object) -> WebhookSender:
    kwargs.setdefault("backoff_s", 0.01)
    return WebhookSender(urls=urls, api_key=KEY, api_secret=SECRET, **kwargs)  # type: ignore[arg-type]


def room_started(name: str = "r1") -> WebhookEvent:
    return WebhookEvent(
        event="room_started",
        room=models.Room(sid="RM_abc", name=name, empty_timeout=300, creation_time=1700000000),
    )


def participant_joined() -> WebhookEvent:
    return WebhookEvent(
        event="participant_joined",
        room=models.Room(sid="RM_abc", name="r1"),
        participant=models.ParticipantInfo(
            sid="PA_xyz",
            identity="alice",
            state=models.ParticipantInfo.State.ACTIVE,
            kind=models.ParticipantInfo.Kind.STANDARD,
            permission=models.ParticipantPermission(can_publish=True, can_subscribe=True),
        ),
    )


async def wait_for(hooks: WebhookSender, **expected: int) -> None:
    """Wait until the sender has processed what the endpoint already saw."""
    with trio.fail_after(DEADLINE_S):
        while True:
            stats = attrs.asdict(hooks.statistics())
            if all(stats[k] == v for k, v in expected.items()):
                return
            await trio.sleep(0.01)


def verify(received: Received) -> WebhookEvent:
    receiver = api.WebhookReceiver(api.TokenVerifier(KEY, SECRET))
    return receiver.receive(received.body.decode(), received.headers["authorization"])


# --- delivery as livekit.api expects it ----------------------------------------------


@pytest.mark.trio
async def test_delivery_verified_by_livekit_webhook_receiver(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url])
    await nursery.start(hooks.run)
    before = int(time.time())
    hooks.send_nowait(room_started())
    hooks.send_nowait(participant_joined())

    first = await endpoint.next_request()
    second = await endpoint.next_request()
    assert first.method == "POST"
    assert first.target == "/webhook"
    assert first.headers["content-type"] == CONTENT_TYPE
    assert not first.headers["authorization"].lower().startswith("bearer")

    event = verify(first)
    assert event.event == "room_started"
    assert event.room.sid == "RM_abc" and event.room.name == "r1"
    assert event.room.empty_timeout == 300
    assert event.id.startswith("EV_") and len(event.id) > 3
    assert before <= event.created_at <= int(time.time())

    event2 = verify(second)
    assert event2.event == "participant_joined"
    assert event2.participant.identity == "alice"
    assert event2.participant.state == models.ParticipantInfo.State.ACTIVE
    assert event2.participant.permission.can_publish
    assert event2.id != event.id

    # protojson with camelCase names, as the reference server's protojson.Marshal.
    body = json.loads(first.body)
    assert "createdAt" in body and "emptyTimeout" in body["room"]
    await wait_for(hooks, delivered=2)


@pytest.mark.trio
async def test_token_claims(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url])
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    received = await endpoint.next_request()
    claims = jwt.decode(received.headers["authorization"], SECRET, algorithms=["HS256"])
    assert claims["iss"] == KEY
    assert claims["exp"] - time.time() == pytest.approx(300, abs=5)
    assert received.body == encode_event(verify(received))


@pytest.mark.trio
async def test_tampered_body_rejected_by_receiver(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url])
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    received = await endpoint.next_request()
    forged = attrs.evolve(received, body=received.body.replace(b"r1", b"r2"))
    with pytest.raises(Exception, match="hash mismatch"):
        verify(forged)


@pytest.mark.trio
async def test_every_url_gets_every_event(nursery: trio.Nursery) -> None:
    a = await start_endpoint(nursery)
    b = await start_endpoint(nursery)
    hooks = sender([a.url, b.url])
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    event_a = verify(await a.next_request())
    event_b = verify(await b.next_request())
    assert event_a == event_b


@pytest.mark.trio
async def test_existing_id_and_created_at_kept_and_caller_event_untouched(
    nursery: trio.Nursery,
) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url])
    await nursery.start(hooks.run)
    given = room_started()
    given.id = "EV_given"
    given.created_at = 1234
    hooks.send_nowait(given)
    bare = room_started()
    hooks.send_nowait(bare)
    assert bare.id == "" and bare.created_at == 0
    first = verify(await endpoint.next_request())
    assert (first.id, first.created_at) == ("EV_given", 1234)
    second = verify(await endpoint.next_request())
    assert second.id.startswith("EV_")


def test_created_at_from_clock() -> None:
    hooks = sender(["http://127.0.0.1:1/"], clock=lambda: 1_600_000_000.7)
    hooks.send_nowait(room_started())
    queued = hooks._targets[0].receive.receive_nowait()
    assert queued.created_at == 1_600_000_000


# --- failures and retries --------------------------------------------------------------


@pytest.mark.trio
async def test_failing_endpoint_is_retried_until_success(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery, statuses=[500, 503])
    hooks = sender([endpoint.url], max_attempts=3)
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    attempts = [await endpoint.next_request() for _ in range(3)]
    assert [verify(r).id for r in attempts] == [verify(attempts[0]).id] * 3
    await wait_for(hooks, delivered=1)
    stats = hooks.statistics()
    assert (stats.attempts, stats.delivered, stats.failed) == (3, 1, 0)


@pytest.mark.trio
async def test_attempts_are_bounded_and_failure_reported_later(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery, statuses=[500, 500, 500])
    hooks = sender([endpoint.url], max_attempts=3)
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    for _ in range(3):
        await endpoint.next_request()
    hooks.send_nowait(participant_joined())
    after = verify(await endpoint.next_request())
    assert after.event == "participant_joined"
    # The lost event is owed to the receiver, as livekit's num_dropped.
    assert after.num_dropped == 1
    await wait_for(hooks, delivered=1)
    stats = hooks.statistics()
    assert (stats.attempts, stats.delivered, stats.failed) == (4, 1, 1)
    assert len(endpoint.requests) == 4


@pytest.mark.trio
async def test_client_error_not_retried(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery, statuses=[400])
    hooks = sender([endpoint.url], max_attempts=3)
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    hooks.send_nowait(participant_joined())
    assert verify(await endpoint.next_request()).event == "room_started"
    assert verify(await endpoint.next_request()).event == "participant_joined"
    await wait_for(hooks, failed=1, delivered=1)
    assert len(endpoint.requests) == 2


@pytest.mark.trio
async def test_dead_url_does_not_hold_back_others(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([refused_url(), endpoint.url], max_attempts=2, backoff_s=5.0)
    await nursery.start(hooks.run)
    hooks.send_nowait(room_started())
    with trio.fail_after(2):  # far less than the dead URL's 5 s backoff
        assert verify(await endpoint.next_request()).event == "room_started"


@pytest.mark.trio
async def test_connection_errors_never_escape_run() -> None:
    hooks = sender([refused_url()], max_attempts=2)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(hooks.run)
            hooks.send_nowait(room_started())
            hooks.close()
    stats = hooks.statistics()
    assert (stats.attempts, stats.delivered, stats.failed) == (2, 0, 1)


# --- the queue -----------------------------------------------------------------------


@pytest.mark.trio
async def test_full_queue_drops_without_blocking(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url], queue_size=2)
    # Nothing drains yet: send_nowait is synchronous, so it must drop, not wait.
    for _ in range(5):
        hooks.send_nowait(room_started())
    stats = hooks.statistics()
    assert (stats.queued, stats.dropped) == (2, 3)

    await nursery.start(hooks.run)
    first = verify(await endpoint.next_request())
    second = verify(await endpoint.next_request())
    assert first.num_dropped == 3
    assert second.num_dropped == 0


@pytest.mark.trio
async def test_close_drains_then_run_returns(nursery: trio.Nursery) -> None:
    endpoint = await start_endpoint(nursery)
    hooks = sender([endpoint.url])
    for _ in range(3):
        hooks.send_nowait(room_started())
    hooks.close()
    hooks.send_nowait(room_started())  # after close: dropped, not raised
    with trio.fail_after(DEADLINE_S):
        await hooks.run()
    assert len(endpoint.requests) == 3
    stats = hooks.statistics()
    assert (stats.delivered, stats.dropped) == (3, 1)


def test_null_sink_and_protocol() -> None:
    sinks: list[WebhookSink] = [NullWebhookSink(), sender(["http://127.0.0.1:1/"])]
    for sink in sinks:
        sink.send_nowait(room_started())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        sender(["http://x/"], queue_size=0)
    with pytest.raises(ValueError, match="max_attempts"):
        sender(["http://x/"], max_attempts=0)
