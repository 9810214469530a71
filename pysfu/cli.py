"""The ``pysfu`` command: ``pysfu serve`` (livekit-server's flags) and ``pysfu token``."""

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysfu", description="LiveKit-compatible SFU")
    parser.add_argument("--version", action="version", version=f"pysfu {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--dev", action="store_true", help="dev mode: key devkey/secret, 127.0.0.1")
    serve.add_argument("--bind", action="append", help="address to bind (repeatable)")
    serve.add_argument("--port", type=int, help="HTTP/WebSocket port (default 7880)")
    serve.add_argument("--udp-port", type=int, help="media UDP port (default 7882)")
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
    return parser


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
    try:
        config, warnings = load_config(
            config_file=args.config,
            dev=args.dev,
            bind=args.bind,
            port=args.port,
            udp_port=args.udp_port,
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
        await server.aclose()


if __name__ == "__main__":
    sys.exit(main())
