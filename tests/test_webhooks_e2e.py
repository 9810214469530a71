"""Webhooks from a running server to a real HTTP endpoint, each one verified the way a
LiveKit backend verifies them: ``livekit.api.WebhookReceiver``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
import pytest
from livekit import api
from livekit.protocol import models, rtc
from livekit.protocol.webhook import WebhookEvent

from pysfu.config import Config
from pysfu.rtc.lifecycle import ParticipantEvent

from .conftest import API_KEY, API_SECRET, RunningServer, make_config, start_server, stop_server
from .test_twirp import joined, lkapi, publish

TIMEOUT_S = 5.0


@attrs.frozen
class Delivery:
    content_type: str
    authorization: str
    body: str


class Receiver:
    """A webhook endpoint in its own thread (so it answers whatever the test's event
    loop is doing), recording every POST."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            content_type=self.headers.get("Content-Type", ""),
                            authorization=self.headers.get("Authorization", ""),
                            body=body.decode(),
                        )
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def events(self) -> list[WebhookEvent]:
        """Every event received so far, verified (signature, body hash, headers)."""
        verify = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
        with self._lock:
            deliveries = list(self.deliveries)
        out = []
        for d in deliveries:
            assert d.content_type == "application/webhook+json"
            assert not d.authorization.lower().startswith("bearer")
            out.append(verify.receive(d.body, d.authorization))
        return out

    def wait_for(
        self, event: str, predicate: Callable[[WebhookEvent], bool] = lambda e: True
    ) -> WebhookEvent:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for ev in self.events():
                if ev.event == event and predicate(ev):
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"no {event} webhook; got {[e.event for e in self.events()]}")

    async def await_event(
        self, event: str, predicate: Callable[[WebhookEvent], bool] = lambda e: True
    ) -> WebhookEvent:
        return await asyncio.to_thread(self.wait_for, event, predicate)

    def for_room(self, name: str) -> list[str]:
        return [e.event for e in self.events() if e.room.name == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def server_config(receiver: Receiver) -> Config:
    """Overrides conftest's: the ``server`` fixture posts webhooks to ``receiver``."""
    return make_config(webhook_api_key=API_KEY, webhook_urls=(receiver.url,))


def _connect_media(server: RunningServer, room_name: str, identity: str) -> None:
    """Pretend the participant's media transport connected (ICE + DTLS): it is ACTIVE."""
    manager = server.server.manager

    def connected() -> None:
        room = manager.require_room(room_name)
        p = room.participant_by_identity(identity)
        assert p is not None
        manager.apply(room, room.transition(p.sid, ParticipantEvent.TRANSPORT_CONNECTED))

    server.call(connected)


@pytest.mark.asyncio
async def test_room_started_and_finished(server: RunningServer, receiver: Receiver) -> None:
    async with lkapi(server) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="hooks", metadata="md"))
        started = await receiver.await_event("room_started")
        assert started.room.sid == room.sid and started.room.name == "hooks"
        assert started.room.metadata == "md"
        assert started.id.startswith("EV_")
        assert abs(started.created_at - time.time()) < 60
        await lk.room.delete_room(api.DeleteRoomRequest(room="hooks"))
        finished = await receiver.await_event("room_finished")
        assert finished.room.sid == room.sid
        assert finished.id != started.id
    assert receiver.for_room("hooks") == ["room_started", "room_finished"]


@pytest.mark.asyncio
async def test_participant_that_never_connects_media_is_aborted(
    server: RunningServer, receiver: Receiver
) -> None:
    async with joined(server, "alice") as (_, join):
        await receiver.await_event("room_started")
    aborted = await receiver.await_event("participant_connection_aborted")
    assert aborted.participant.identity == "alice"
    assert aborted.participant.sid == join.participant.sid
    assert aborted.room.name == "room1"
    assert "participant_joined" not in receiver.for_room("room1")
    assert "participant_left" not in receiver.for_room("room1")


@pytest.mark.asyncio
async def test_participant_joined_track_published_and_left(
    server: RunningServer, receiver: Receiver
) -> None:
    async with joined(server, "alice") as (alice, join):
        _connect_media(server, "room1", "alice")
        joined_ev = await receiver.await_event("participant_joined")
        assert joined_ev.participant.sid == join.participant.sid
        assert joined_ev.participant.state == models.ParticipantInfo.State.ACTIVE
        assert joined_ev.room.num_participants == 1

        track = await publish(server, alice, "alice")
        published = await receiver.await_event("track_published")
        assert published.track.sid == track.sid
        assert published.track.source == models.TrackSource.MICROPHONE
        assert published.participant.identity == "alice"
        assert [t.sid for t in published.participant.tracks] == [track.sid]

        await alice.send(
            rtc.SignalRequest(
                leave=rtc.LeaveRequest(
                    reason=models.DisconnectReason.CLIENT_INITIATED,
                    action=rtc.LeaveRequest.Action.DISCONNECT,
                )
            )
        )
        left = await receiver.await_event("participant_left")
        assert left.participant.sid == join.participant.sid
        assert left.participant.disconnect_reason == models.DisconnectReason.CLIENT_INITIATED
        unpublished = await receiver.await_event("track_unpublished")
        assert unpublished.track.sid == track.sid
    assert receiver.for_room("room1") == [
        "room_started",
        "participant_joined",
        "track_published",
        "track_unpublished",
        "participant_left",
    ]


@pytest.mark.asyncio
async def test_removed_participant_and_deleted_room(
    server: RunningServer, receiver: Receiver
) -> None:
    async with lkapi(server) as lk, joined(server, "alice"), joined(server, "bob"):
        _connect_media(server, "room1", "bob")
        await receiver.await_event("participant_joined")
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room="room1", identity="alice")
        )
        aborted = await receiver.await_event("participant_connection_aborted")
        assert aborted.participant.identity == "alice"
        assert aborted.participant.disconnect_reason == models.DisconnectReason.PARTICIPANT_REMOVED
        await lk.room.delete_room(api.DeleteRoomRequest(room="room1"))
        left = await receiver.await_event("participant_left")
        assert left.participant.identity == "bob"
        assert left.participant.disconnect_reason == models.DisconnectReason.ROOM_DELETED
        finished = await receiver.await_event("room_finished")
        assert finished.room.num_participants == 0
    assert receiver.for_room("room1")[-1] == "room_finished"


def test_graceful_shutdown_still_delivers_room_finished(receiver: Receiver) -> None:
    running = start_server(make_config(webhook_api_key=API_KEY, webhook_urls=(receiver.url,)))
    try:
        running.call(running.server.create_room, "short-lived")
        receiver.wait_for("room_started")
    finally:
        stop_server(running)
    finished = receiver.wait_for("room_finished")
    assert finished.room.name == "short-lived"
