"""Prometheus ``/metrics`` (``prometheus_port`` in livekit-server's YAML), with
livekit's series names where pysfu has the same quantity.

Every value is read when Prometheus scrapes, from what the server already keeps (the
rooms, the engine's counters, the webhook sender's statistics, the process and the
engine thread's CPU): no counter is incremented on the packet path, and a scrape
costs one ``engine.stats()`` round trip. Each server has its own registry, so several
servers in one process (tests) do not share series.

Series (``node_id`` label on each, as livekit's ``ConstLabels``)::

    livekit_room_total                      gauge    rooms open
    livekit_participant_total               gauge    participants in them
    livekit_track_published_total{kind}     gauge    live published tracks
    livekit_track_subscribed_total{kind}    gauge    subscriptions
    livekit_packet_total{direction}         counter  UDP datagrams in/out
    livekit_packet_bytes{direction}         counter  their bytes
    livekit_pysfu_rtp_total{kind}           counter  RTP received / forwarded / dropped
    livekit_nack_total{direction}           counter  RTCP NACKs from subscribers
                                                     (incoming) / to publishers (outgoing)
    livekit_pli_total{direction}            counter  PLIs, the same way
    livekit_fir_total{direction}            counter  FIRs, the same way
    livekit_packet_loss_total{direction}    counter  media packets lost from publishers
                                                     (incoming) / to subscribers
    livekit_pysfu_keyframe_requests_total   counter  keyframes the forwarder asked for
    livekit_webhook_total{state}            counter  webhook deliveries queued / delivered
                                                     / failed / dropped
    livekit_pysfu_engine_cpu_seconds_total{thread}   the media engine thread's CPU
    livekit_session_start_time_ms           histogram  from a join's WebSocket upgrade
                                                     to its first message (JoinResponse)
    process_*                               the process collector (CPU, memory, fds)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ..rtc.room import Room

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ENGINE_THREAD_NAME = "pysfu-media"
"""Prefix of the engine threads' names (rust/engine/src/lib.rs adds ``-<shard>``)."""


class MetricsSource(Protocol):
    """What the collector reads; :class:`pysfu.server.Server` provides it."""

    @property
    def node_id(self) -> str: ...

    def metric_rooms(self) -> list[Room]: ...

    def engine_stats(self) -> dict[str, int]:
        """The media engine's counters (empty before it starts)."""
        ...

    def webhook_stats(self) -> dict[str, int]:
        """queued, delivered, failed, dropped (empty when webhooks are off)."""
        ...


class PysfuCollector(Collector):
    """Reads a :class:`MetricsSource` at scrape time."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        node = self.source.node_id
        labels = ["node_id"]
        rooms = self.source.metric_rooms()
        participants = sum(len(r.participants) for r in rooms)
        published: dict[str, int] = {"audio": 0, "video": 0}
        subscribed: dict[str, int] = {"audio": 0, "video": 0}
        for room in rooms:
            kinds: dict[str, str] = {}
            for p in room.participants.values():
                for pub in p.publications.values():
                    kinds[pub.sid] = kind = _kind(pub.info.type)
                    if pub.live:
                        published[kind] = published.get(kind, 0) + 1
            for (_, track_sid), sub in room.subscriptions.items():
                if sub.bound and track_sid in kinds:
                    kind = kinds[track_sid]
                    subscribed[kind] = subscribed.get(kind, 0) + 1
        yield _gauge("livekit_room_total", "Rooms open on this node", node, len(rooms))
        yield _gauge("livekit_participant_total", "Participants on this node", node, participants)
        for name, counts, help_text in (
            ("livekit_track_published_total", published, "Published tracks"),
            ("livekit_track_subscribed_total", subscribed, "Track subscriptions"),
        ):
            family = GaugeMetricFamily(name, help_text, labels=[*labels, "kind"])
            for kind, count in sorted(counts.items()):
                family.add_metric([node, kind], count)
            yield family

        stats = self.source.engine_stats()
        packets = CounterMetricFamily(
            "livekit_packet", "UDP datagrams", labels=[*labels, "direction"], unit=""
        )
        packet_bytes = CounterMetricFamily(
            "livekit_packet_bytes", "UDP bytes", labels=[*labels, "direction"]
        )
        for direction, suffix in (("incoming", "in"), ("outgoing", "out")):
            packets.add_metric([node, direction], stats.get(f"packets_{suffix}", 0))
            packet_bytes.add_metric([node, direction], stats.get(f"bytes_{suffix}", 0))
        yield packets
        yield packet_bytes
        rtp = CounterMetricFamily("livekit_pysfu_rtp", "RTP packets", labels=[*labels, "kind"])
        for kind in ("in", "forwarded", "dropped"):
            rtp.add_metric([node, kind], stats.get(f"rtp_{kind}", 0))
        yield rtp
        for name, what in (("nack", "NACKs"), ("pli", "PLIs"), ("fir", "FIRs")):
            feedback = CounterMetricFamily(
                f"livekit_{name}",
                f"RTCP {what} received from subscribers (incoming) or sent to publishers",
                labels=[*labels, "direction"],
            )
            feedback.add_metric([node, "incoming"], stats.get(f"{name}s_in", 0))
            feedback.add_metric([node, "outgoing"], stats.get(f"{name}s_out", 0))
            yield feedback
        lost = CounterMetricFamily(
            "livekit_packet_loss",
            "Media packets lost from publishers (incoming, estimated from the loss fraction"
            " of the server's receiver reports) or to subscribers (outgoing, as reported)",
            labels=[*labels, "direction"],
        )
        lost.add_metric([node, "incoming"], stats.get("packets_lost_in", 0))
        lost.add_metric([node, "outgoing"], stats.get("packets_lost_out", 0))
        yield lost
        keyframes = CounterMetricFamily(
            "livekit_pysfu_keyframe_requests",
            "Keyframe requests the forwarder asked publishers for",
            labels=labels,
        )
        keyframes.add_metric([node], stats.get("keyframe_requests", 0))
        yield keyframes

        hooks = self.source.webhook_stats()
        webhooks = CounterMetricFamily(
            "livekit_webhook", "Webhook deliveries", labels=[*labels, "state"]
        )
        for state in ("queued", "delivered", "failed", "dropped"):
            webhooks.add_metric([node, state], hooks.get(state, 0))
        yield webhooks

        cpu = CounterMetricFamily(
            "livekit_pysfu_engine_cpu_seconds",
            "CPU time of the media engine threads",
            labels=[*labels, "thread"],
        )
        for tid, seconds in _engine_thread_cpu():
            cpu.add_metric([node, tid], seconds)
        yield cpu


def _kind(track_type: int) -> str:
    return "video" if track_type == 1 else "audio" if track_type == 0 else "data"


def _gauge(name: str, help_text: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["node_id"])
    family.add_metric([node], value)
    return family


def _engine_thread_cpu() -> list[tuple[str, float]]:
    """(thread id, CPU seconds) of each engine thread of this process (Linux /proc)."""
    found: list[tuple[str, float]] = []
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
                # One thread per shard: pysfu-media-0, pysfu-media-1, ...
                if not f.read().strip().startswith(ENGINE_THREAD_NAME):
                    continue
            with open(f"/proc/self/task/{tid}/stat", encoding="utf-8") as f:
                # Fields after the parenthesised name; utime and stime are 14 and 15.
                fields = f.read().rpartition(")")[2].split()
            found.append((tid, (int(fields[11]) + int(fields[12])) / tick))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
    return found


JOIN_BUCKETS_MS = (25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


def make_registry(source: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PysfuCollector(source))
    ProcessCollector(registry=registry)
    return registry


class JoinLatency:
    """ASGI middleware timing each join (``/rtc`` without ``reconnect=1``, ``/rtc/v1``) from the
    WebSocket upgrade request to the first message sent back, the JoinResponse (or
    the refusal); relayed joins are timed end to end on the node the client dialled."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        registry: CollectorRegistry,
        node_id: str,
    ) -> None:
        self.app = app
        self.histogram = Histogram(
            "livekit_session_start_time_ms",
            "Join latency: WebSocket upgrade to the first signal message, ms",
            labelnames=["node_id"],
            buckets=JOIN_BUCKETS_MS,
            registry=registry,
        ).labels(node_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"")
        if (
            scope["type"] != "websocket"
            # /rtc/v1 (single PeerConnection) joins too; its resumes say so inside
            # join_request and are timed as joins.
            or scope["path"].rstrip("/") not in ("/rtc", "/rtc/v1")
            or b"reconnect=1" in query
        ):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        timed = False

        async def timed_send(msg: dict[str, Any]) -> None:
            nonlocal timed
            if not timed and msg["type"] in ("websocket.send", "websocket.close"):
                timed = True
                self.histogram.observe((time.monotonic() - started) * 1000)
            await send(msg)

        await self.app(scope, receive, timed_send)


class MetricsApp:
    """The ASGI app on ``prometheus_port``: ``GET /metrics``, 404 for anything else."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            status, body, ctype = 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
        else:
            status, body, ctype = 404, b"not found", "text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
