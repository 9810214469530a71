"""The ``pysfu`` command: ``pysfu serve`` (livekit-server's flags), ``pysfu token`` and
``pysfu loadtest``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from .auth import VideoGrant, mint_token
from .config import Config, ConfigError, load_config
from .server import VERSION, Server

log = logging.getLogger("pysfu")

DRAIN_TIMEOUT_S = 6 * 3600.0
"""Longest a draining node waits for its rooms to finish before closing them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysfu", description="LiveKit-compatible SFU")
    parser.add_argument("--version", action="version", version=f"pysfu {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--dev", action="store_true", help="dev mode: key devkey/secret, 127.0.0.1")
    serve.add_argument("--bind", action="append", help="address to bind (repeatable)")
    serve.add_argument("--port", type=int, help="HTTP/WebSocket port (default 7880)")
    serve.add_argument("--udp-port", type=int, help="media UDP port (default 7882)")
    serve.add_argument("--tcp-port", type=int, help="ICE-over-TCP port (default 7881)")
    serve.add_argument(
        "--workers",
        type=int,
        help="media engine threads (rtc.workers; default 0 = one per CPU core)",
    )
    serve.add_argument("--node-ip", help="IP address advertised to clients for media")
    serve.add_argument("--keys", help='API keys, "KEY: SECRET" (also env LIVEKIT_KEYS)')
    serve.add_argument("--config", help="YAML config file in livekit-server's layout")

    token = sub.add_parser("token", help="mint an access token for a client")
    token.add_argument("--api-key", default="devkey")
    token.add_argument("--api-secret", default="secret")
    token.add_argument("--identity", required=True)
    token.add_argument("--room", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--valid-for", type=float, default=6 * 3600, help="seconds")
    token.add_argument("--admin", action="store_true", help="also grant roomAdmin")

    _add_loadtest_parser(sub)
    return parser


def _add_loadtest_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = sub.add_parser(
        "loadtest",
        help="simulate publishers and subscribers against a LiveKit-compatible server",
        description="Join simulated participants (synthetic RTP, no encoding) to any"
        " LiveKit-compatible server and report join time, throughput, loss, forwarding"
        " latency and, with --server-pid, the server's CPU and memory. Exit status 1 if"
        " any participant failed to join.",
    )
    load.add_argument("--url", default="ws://127.0.0.1:7880", help="server URL (ws:// or wss://)")
    load.add_argument("--api-key", default="devkey")
    load.add_argument("--api-secret", default="secret")
    load.add_argument("--rooms", type=int, default=1, help="number of rooms (default 1)")
    load.add_argument("--publishers", type=int, default=1, help="publishers per room (default 1)")
    load.add_argument("--subscribers", type=int, default=0, help="subscribers per room")
    load.add_argument("--audio", action="store_true", help="publishers send audio")
    load.add_argument("--video", action="store_true", help="publishers send video")
    load.add_argument("--audio-kbps", type=int, default=32)
    load.add_argument("--video-kbps", type=int, default=1500)
    load.add_argument("--duration", type=float, default=30.0, help="measurement window, s")
    load.add_argument("--ramp-up", type=float, default=5.0, help="settling time after the joins, s")
    load.add_argument("--join-concurrency", type=int, default=10, help="joins in flight")
    load.add_argument("--join-rate", type=float, help="joins started per second")
    load.add_argument("--join-timeout", type=float, default=15.0, help="per participant, s")
    load.add_argument("--server-pid", type=int, help="local server process, for CPU/memory")
    load.add_argument("--local-ip", default="127.0.0.1", help="address media sockets bind")
    load.add_argument(
        "--json", metavar="FILE", help="also write every figure as JSON ('-': stdout)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        grant = VideoGrant(room_join=True, room=args.room, room_admin=args.admin)
        print(
            mint_token(
                args.api_key,
                args.api_secret,
                identity=args.identity,
                name=args.name,
                ttl_s=args.valid_for,
                grant=grant,
            )
        )
        return 0
    if args.command == "loadtest":
        return _loadtest(args)
    try:
        config, warnings = load_config(
            config_file=args.config,
            dev=args.dev,
            bind=args.bind,
            port=args.port,
            udp_port=args.udp_port,
            tcp_port=args.tcp_port,
            workers=args.workers,
            keys_flag=args.keys,
            node_ip=args.node_ip,
            env=os.environ,
        )
    except ConfigError as exc:
        print(f"pysfu: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for warning in warnings:
        log.warning("%s", warning)
    trio.run(_serve, config)
    return 0


async def _serve(config: Config) -> None:
    server = Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        if config.dev:
            log.info("dev mode: API key devkey, secret secret; %s", server.url)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
            if signum == signal.SIGTERM and server.cluster is not None:
                # As livekit-server: a clustered node drains on SIGTERM (no new rooms,
                # the current ones finish); a second signal stops it at once.
                async with trio.open_nursery() as drain:

                    async def interrupt() -> None:
                        async for _ in signals:
                            log.info("second signal: not waiting for rooms to finish")
                            break
                        drain.cancel_scope.cancel()

                    drain.start_soon(interrupt)
                    await server.drain(DRAIN_TIMEOUT_S)
                    drain.cancel_scope.cancel()
        await server.aclose()


def _loadtest(args: argparse.Namespace) -> int:
    # Imported on demand: `pysfu serve` needs neither the WebSocket client nor psutil.
    try:
        from .loadtest import LoadPlan, PlanError, ProbeError, format_table, run_loadtest, to_json
    except ImportError as exc:
        print(
            f"pysfu loadtest: missing dependency ({exc}); pip install {exc.name}", file=sys.stderr
        )
        return 2

    both = not (args.audio or args.video)  # neither flag: a camera-and-microphone publisher
    try:
        plan = LoadPlan(
            url=args.url,
            api_key=args.api_key,
            api_secret=args.api_secret,
            rooms=args.rooms,
            publishers=args.publishers,
            subscribers=args.subscribers,
            audio=args.audio or both,
            video=args.video or both,
            audio_kbps=args.audio_kbps,
            video_kbps=args.video_kbps,
            duration_s=args.duration,
            ramp_up_s=args.ramp_up,
            join_concurrency=args.join_concurrency,
            join_rate=args.join_rate,
            join_timeout_s=args.join_timeout,
            server_pid=args.server_pid,
            local_ip=args.local_ip,
        )
    except PlanError as exc:
        print(f"pysfu loadtest: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        report = trio.run(run_loadtest, plan)
    except ProbeError as exc:
        print(f"pysfu loadtest: {exc}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json == "-":
        print(to_json(report))
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(to_json(report) + "\n")
    if report.all_joined:
        return 0
    reason = report.failures[0].reason if report.failures else "unknown"
    print(
        f"pysfu loadtest: {report.failed} of {report.participants} participants failed"
        f" to join: {reason}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
