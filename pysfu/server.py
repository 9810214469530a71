"""The embeddable server: configuration in, a running LiveKit-compatible SFU out.

Embedding (the CLI does exactly this)::

    config, warnings = load_config(dev=True, ...)
    server = Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)      # listening once this returns
        ...                                    # server.rooms, server.events(), ...
        await server.aclose()                  # graceful: participants are told why

Resource handling: ``serve`` owns every task it starts (HTTP listener, room
lifetimes, webhook sender); none outlives it. Cancelling ``serve`` from outside stops
at once without telling participants; ``aclose`` first closes every room with
SERVER_SHUTDOWN, lets the LeaveRequests flush, then stops listening.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve as hypercorn_serve
from livekit.protocol import agent_dispatch, models, rtc, webhook

from . import _core
from .api import _hypercorn_fix
from .api.cluster import ClusterRoutes
from .api.http import App
from .api.metrics import JoinLatency, MetricsApp, make_registry
from .config import Config
from .demo import demo_routes
from .media import addresses, stun, turn
from .media.bridge import EngineMediaPlane
from .rtc.dispatch import Worker
from .rtc.room import Room, ServerIdentity
from .runtime.agents import AgentRuntime
from .runtime.cluster.node import ClusterNode, new_node_id
from .runtime.manager import RoomDefaults, RoomManager, RoomPolicy
from .runtime.ports import NullWebhookSink, WebhookSink
from .runtime.sessions import RESUME_WINDOW_S
from .runtime.webhooks import WebhookSender
from .signal.connection import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

VERSION = "1.9.0"
"""Server version announced to clients: SDKs gate features (RPC) on >= 1.8.0."""

SHUTDOWN_FLUSH_S = 2.0
"""How long a graceful shutdown waits for participants to receive their LeaveRequest."""

WEBHOOK_FLUSH_S = 5.0
"""How long a graceful shutdown waits for queued webhooks to be delivered."""


WEBSOCKET_PING_INTERVAL_S = 10.0
"""The reference server pings every signal WebSocket this often."""

STALLED_PEER_ABORT_S = 30.0
"""A TCP peer that accepts no data for this long is aborted by the kernel
(TCP_USER_TIMEOUT, Linux). Hypercorn's trio server shields every socket write from
cancellation, so without it a client that stops reading pins its connection, its
session and the server's shutdown forever; well past the 15 s signal ping timeout."""


class _HypercornConfig(HypercornConfig):
    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            # Accepted connections inherit the listener's user timeout.
            if hasattr(socket, "TCP_USER_TIMEOUT") and sock.type == socket.SOCK_STREAM:
                timeout_ms = int(STALLED_PEER_ABORT_S * 1000)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        return sockets


def _bind_string(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Server:
    """A pysfu server. Start it with ``await nursery.start(server.serve)``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.webhooks: WebhookSink
        if config.webhook_urls and config.webhook_api_key:
            self.webhooks = WebhookSender(
                urls=config.webhook_urls,
                api_key=config.webhook_api_key,
                api_secret=config.keys[config.webhook_api_key],
            )
        else:
            self.webhooks = NullWebhookSink()
        self.manager = RoomManager(
            defaults=RoomDefaults(
                empty_timeout_s=config.empty_timeout_s,
                departure_timeout_s=config.departure_timeout_s,
            ),
            server=ServerIdentity(version=VERSION, node_id=new_node_id())
            if config.redis is not None
            else ServerIdentity(version=VERSION),
            webhooks=self.webhooks,
            keys=config.keys,
            policy=RoomPolicy(
                auto_create=config.auto_create,
                enable_remote_unmute=config.enable_remote_unmute,
            ),
        )
        self.agents = AgentRuntime(self.manager, config.keys, server_version=VERSION)
        """Agent workers, dispatches and jobs (see the agent methods below)."""
        self.manager.room_created_hooks.append(self.agents.room_created)
        self._metrics_source = _MetricsSource(self)
        self.cluster: ClusterNode | None = None
        """This node's membership of the cluster sharing ``config.redis``."""
        routes = None
        if config.redis is not None:
            self.cluster = ClusterNode(
                config.redis,
                self.manager,
                node_id=self.manager.server.node_id,
                version=VERSION,
                selector=config.node_selector,
                engine_stats=self._metrics_source.engine_stats,
            )
            routes = ClusterRoutes(self.cluster, config.keys)
        # --dev also serves the demo page and its token endpoint at /demo/ (see README).
        self.app = App(
            self.manager,
            config.keys,
            extra_routes=demo_routes(config.keys) if config.dev else None,
            agents=self.agents,
            cluster=routes,
        )
        self.port: int = config.port
        """The HTTP/WebSocket port actually bound (differs from config when 0)."""
        self.udp_port: int = config.udp_port
        """The media UDP port actually bound (differs from config when 0)."""
        self.tcp_port: int | None = config.tcp_port
        """The ICE-TCP port actually bound (None: UDP only)."""
        self.advertised: list[tuple[str, str, int]] = []
        """Host candidates while serving, as ``("udp" | "tcp", ip, port)``."""
        self.turn: turn.TurnServer | None = None
        """The embedded TURN server while serving (``turn.enabled``)."""
        self.media: EngineMediaPlane | None = None
        """The engine's media plane while serving."""
        self.metrics_port: int | None = config.prometheus_port
        """The Prometheus port actually bound (None: metrics off)."""
        self.metrics_registry = make_registry(self._metrics_source)
        self._stop = trio.Event()
        self._stopped = trio.Event()

    @property
    def node_id(self) -> str:
        return self.manager.server.node_id

    @property
    def http_url(self) -> str:
        host = self.config.bind_addresses[0] if self.config.bind_addresses else "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{_bind_string(host, self.port)}"

    @property
    def url(self) -> str:
        """The URL clients connect to (``ws://host:port``)."""
        return "ws" + self.http_url[len("http") :]

    async def serve(
        self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or :meth:`aclose`; ``task_status.started`` once listening."""
        _hypercorn_fix.install()
        hconfig = _HypercornConfig()
        hconfig.bind = [_bind_string(a, self.config.port) for a in self.config.bind_addresses]
        hconfig.websocket_max_message_size = MAX_FRAME_BYTES
        # WebSocket pings keep every client's connection checked, including those
        # that send no signal-level pings (server-sdk-go); a peer that stops acking
        # is cut by TCP_USER_TIMEOUT and its session waits for a resume.
        hconfig.websocket_ping_interval = WEBSOCKET_PING_INTERVAL_S
        hconfig.graceful_timeout = 1.0
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("pysfu.http")
        bind_ip = self.config.bind_addresses[0] if self.config.bind_addresses else "0.0.0.0"
        bind_ip = bind_ip or "0.0.0.0"
        choice = await self._choose_addresses(bind_ip)
        engine = _core.MediaEngine(
            bind_ip=bind_ip,
            udp_port=self.config.udp_port,
            advertise_ips=list(choice.ips),
            tcp_port=self.config.tcp_port,
            # A frozen client's peers must outlive its resume window: its session
            # waits that long, and its media comes back on thaw without new peers.
            ice_disconnected_grace=RESUME_WINDOW_S + 5.0,
            bandwidth_estimation=self.config.congestion_control,
            allow_pause=self.config.allow_pause,
            workers=self.config.workers,
            audio_nack=self.config.audio_nack,
        )
        log.info("media engine: %d worker thread(s) on UDP port %d", engine.shards, engine.udp_port)
        self.udp_port = engine.udp_port
        self.tcp_port = engine.tcp_port
        self.advertised = engine.advertised()
        _log_choice(choice, self.advertised)
        self.app.media_loopback_only = choice.loopback_only
        self.media = EngineMediaPlane(
            self.manager, engine, spread_after=self.config.shard_spread_after
        )
        self.manager.media = self.media
        async with trio.open_nursery() as nursery:
            if self.config.turn_enabled:
                await self._start_turn(nursery, bind_ip, _bindable(choice.ips, bind_ip))
            await nursery.start(self.media.run)
            await nursery.start(self.manager.run)
            await nursery.start(self.agents.run)
            if isinstance(self.webhooks, WebhookSender):
                await nursery.start(self.webhooks.run)
            binds: list[str] = await nursery.start(
                partial(
                    hypercorn_serve,
                    cast(Any, JoinLatency(self.app, self.metrics_registry, self.node_id)),
                    hconfig,
                    shutdown_trigger=self._stop.wait,
                )
            )
            port = urlsplit(binds[0]).port if binds else None
            if port is not None:
                self.port = port
            if self.config.prometheus_port is not None:
                await self._serve_metrics(nursery, hconfig)
            if self.cluster is not None:
                # Other nodes reach this one where clients send media: rtc.node_ip.
                host = self.config.node_ip or choice.ips[0]
                await nursery.start(self.cluster.run, f"http://{_bind_string(host, self.port)}")
            log.info("pysfu %s listening on %s", VERSION, ", ".join(binds))
            if self.config.dev:
                log.info("dev mode: demo page at %s/demo/", self.http_url)
            task_status.started(self)
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self._stopped.set()

    async def _start_turn(self, nursery: trio.Nursery, bind_ip: str, relay_ip: str) -> None:
        """The embedded TURN server; JoinResponse and ReconnectResponse carry it with
        credentials derived from the first API secret (see media/turn.py)."""
        secret = next(iter(self.config.keys.values()))
        media_ips = frozenset(ip for _, ip, _ in self.advertised)
        server = turn.TurnServer(
            [secret], bind_ip, self.config.turn_udp_port, relay_ip, allowed_peers=media_ips
        )
        port: int = await nursery.start(server.run)
        self.turn = server
        host = self.config.turn_domain or relay_ip
        url = f"turn:{_bind_string(host, port)}?transport=udp"

        def ice_servers(identity: str) -> list[rtc.ICEServer]:
            username, password = turn.credentials(secret, identity)
            return [rtc.ICEServer(urls=[url], username=username, credential=password)]

        self.manager.ice_servers = ice_servers
        log.info("media: TURN (UDP) on %s, relaying from %s", _bind_string(bind_ip, port), relay_ip)

    async def _choose_addresses(self, bind_ip: str) -> addresses.Choice:
        external = None
        if self.config.use_external_ip:
            # As the reference: a server told to find its public address and unable
            # to does not start advertising a private one.
            external, asked = await stun.discover(self.config.stun_servers)
            log.info("media: STUN server %s sees this host as %s", asked, external)
        return addresses.choose(
            bind_ip=bind_ip,
            node_ip=self.config.node_ip,
            interfaces=[
                addresses.InterfaceAddress(name, ip, up, loopback)
                for name, ip, up, loopback in _core.interface_addresses()
            ],
            interfaces_include=self.config.interfaces_include,
            interfaces_exclude=self.config.interfaces_exclude,
            ips_include=self.config.ips_include,
            ips_exclude=self.config.ips_exclude,
            external_ip=external,
        )

    async def _serve_metrics(self, nursery: trio.Nursery, main: HypercornConfig) -> None:
        """Prometheus /metrics on its own port, as livekit-server's prometheus_port."""
        mconfig = _HypercornConfig()
        port = self.config.prometheus_port or 0
        mconfig.bind = [_bind_string(a, port) for a in self.config.bind_addresses]
        mconfig.accesslog = None
        mconfig.errorlog = main.errorlog
        mconfig.graceful_timeout = 0.5
        binds: list[str] = await nursery.start(
            partial(
                hypercorn_serve,
                cast(Any, MetricsApp(self.metrics_registry)),
                mconfig,
                shutdown_trigger=self._stop.wait,
            )
        )
        self.metrics_port = urlsplit(binds[0]).port if binds else None

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new rooms (the cluster places them elsewhere at once) and wait
        up to ``timeout_s`` for the rooms here to finish. Rooms still open then move:
        their placements are released and their participants told to reconnect
        (MIGRATION), which the SDKs do in full, to the room re-created on another
        node. :meth:`aclose` follows."""
        if self.cluster is None:
            return
        self.cluster.drain()
        if not self.manager.rooms:
            return
        log.info("draining: no new rooms; waiting for %d to finish", len(self.manager.rooms))
        with trio.move_on_after(timeout_s), self.manager.events() as events:
            async for _ in events:
                if not self.manager.rooms:
                    return
        if self.manager.rooms:
            log.info("draining: moving %d rooms to other nodes", len(self.manager.rooms))
            await self.cluster.release_all()
            self.manager.close_all(models.DisconnectReason.MIGRATION)
            with trio.move_on_after(SHUTDOWN_FLUSH_S):
                await self.manager.sessions_closed()

    async def aclose(self) -> None:
        """Graceful shutdown: every participant gets LeaveRequest SERVER_SHUTDOWN."""
        self.manager.close_all(models.DisconnectReason.SERVER_SHUTDOWN)
        with trio.move_on_after(SHUTDOWN_FLUSH_S):
            await self.manager.sessions_closed()
        await self._flush_webhooks()
        if self.app.cluster is not None:
            await self.app.cluster.aclose()
        self._stop.set()
        await self._stopped.wait()

    async def _flush_webhooks(self) -> None:
        """Let the webhook sender finish what is queued (room_finished and
        participant_left from the shutdown itself) before its task is cancelled."""
        if not isinstance(self.webhooks, WebhookSender):
            return
        with trio.move_on_after(WEBHOOK_FLUSH_S):
            while True:
                stats = self.webhooks.statistics()
                if stats.delivered + stats.failed >= stats.queued:
                    return
                await trio.sleep(0.02)

    # ---- observing and driving rooms from Python --------------------------------------------

    @property
    def rooms(self) -> list[Room]:
        """Live rooms. Treat them as read-only; change them through the methods below
        or the Twirp API so that participants are told."""
        return self.manager.rooms

    def room(self, name: str) -> Room | None:
        return self.manager.room(name)

    @contextmanager
    def events(self) -> Iterator[trio.MemoryReceiveChannel[webhook.WebhookEvent]]:
        """Room events as ``WebhookEvent`` values (room_started, participant_joined, ...)::

        with server.events() as events:
            async for event in events: ...

        Agent dispatch shows here as ``WebhookEvent`` values too, with their ``job``
        field set (job, dispatch, worker, agent identity, status): ``agent_job_assigned``,
        ``agent_job_migrated``, ``agent_job_ended``. They only occur where agent workers
        are registered; consumers that pick events by name are unaffected, and the type
        of the stream is unchanged.
        """
        with self.manager.events() as receive:
            yield receive

    def create_room(self, name: str, **options: float | int | str) -> Room:
        """As Twirp CreateRoom: options ``empty_timeout_s``, ``departure_timeout_s``,
        ``max_participants``, ``metadata``."""
        return self.manager.create_room(name, **options)  # type: ignore[arg-type]

    def delete_room(self, name: str) -> None:
        self.manager.delete_room(name)

    def remove_participant(self, room: str, identity: str) -> None:
        r, sid = self.manager.participant(room, identity)
        self.manager.remove(r, sid, models.DisconnectReason.PARTICIPANT_REMOVED)

    # ---- agents -----------------------------------------------------------------------------

    def agent_workers(self) -> list[Worker]:
        """Registered agent workers: ``id``, ``agent_name``, ``job_type``, ``status``,
        ``load``, ``jobs`` (read-only)."""
        return self.agents.workers()

    def create_dispatch(
        self,
        room: str,
        agent_name: str,
        *,
        metadata: str = "",
        attributes: dict[str, str] | None = None,
    ) -> agent_dispatch.AgentDispatch:
        """As Twirp CreateDispatch: send ``agent_name`` to ``room`` (created if needed)."""
        return self.agents.create_dispatch(
            room, agent_name, metadata=metadata, attributes=attributes
        )

    def delete_dispatch(self, room: str, dispatch_id: str) -> agent_dispatch.AgentDispatch:
        """As Twirp DeleteDispatch: the dispatch's agents are told to leave."""
        return self.agents.delete_dispatch(room, dispatch_id)

    def list_dispatches(self, room: str) -> list[agent_dispatch.AgentDispatch]:
        """As Twirp ListDispatch: the room's dispatches with their jobs' states."""
        return self.agents.list_dispatches(room)


def _log_choice(choice: addresses.Choice, advertised: list[tuple[str, str, int]]) -> None:
    shown = ", ".join(f"{proto} {_bind_string(ip, port)}" for proto, ip, port in advertised)
    why = "; ".join(n for n in choice.notes if not n.startswith("warning: "))
    log.info("media: advertising %s (%s)", shown, why)
    for note in choice.notes:
        if note.startswith("warning: "):
            log.warning("media: %s", note.removeprefix("warning: "))


def _bindable(ips: tuple[str, ...], fallback: str) -> str:
    """The first advertised address this host can bind (an address STUN reported is
    the NAT's, not ours), for TURN relay sockets."""
    for ip in ips:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((ip, 0))
            except OSError:
                continue
            return ip
    return fallback


class _MetricsSource:
    """What /metrics reads from a server (pysfu.api.metrics.MetricsSource)."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def node_id(self) -> str:
        return self._server.manager.server.node_id

    def metric_rooms(self) -> list[Room]:
        return self._server.manager.rooms

    def engine_stats(self) -> dict[str, int]:
        media = self._server.media
        if media is None:
            return {}
        try:
            return media.engine.stats()
        except _core.MediaError:
            return {}  # the engine is closing

    def webhook_stats(self) -> dict[str, int]:
        hooks = self._server.webhooks
        if not isinstance(hooks, WebhookSender):
            return {}
        stats = hooks.statistics()
        return {
            "queued": stats.queued,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "dropped": stats.dropped,
        }
