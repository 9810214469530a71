"""Server configuration in livekit-server's conventions.

The same YAML file, flags and environment variables a livekit-server deployment uses
configure pysfu, so an existing ``livekit.yaml`` keeps working:

.. code-block:: yaml

    port: 7880
    bind_addresses: ["0.0.0.0"]
    rtc:
      udp_port: 7882
      tcp_port: 7881                   # ICE over TCP; 0 = any free port
      workers: 0                       # media engine threads; 0 = one per core
      node_ip: 203.0.113.7             # else: every usable interface address
      interfaces: {includes: [eth0]}   # or excludes; by interface name
      ips: {excludes: [10.0.0.0/8]}    # or includes; CIDR prefixes
      use_external_ip: false           # true: add the address STUN reports
      stun_servers: ["stun.example.com:3478"]
    keys: {APIkey: a-secret-of-at-least-32-characters}
    room: {empty_timeout: 300, departure_timeout: 20}
    webhook: {api_key: APIkey, urls: ["https://example.com/hook"]}
    logging: {level: info}

Sources, weakest first: built-in defaults, the YAML (``--config`` file, else
``--config-body``, else ``$LIVEKIT_CONFIG``), then flags. ``--keys`` (or
``$LIVEKIT_KEYS``) replaces the file's keys; both use YAML ``"key: secret"`` lines.
``--dev`` supplies the well-known ``devkey: secret`` pair when no keys are given and
binds to loopback unless told otherwise.

``redis:`` makes the node one of a cluster sharing that Redis (``node_selector:``
places rooms); ``prometheus_port`` serves ``/metrics``.

Keys livekit-server knows but pysfu does not implement (``turn.tls_port``...) are
reported as warnings and ignored, so a production file loads; a
value of the wrong shape is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import reprlib
import stat
from collections.abc import Mapping
from typing import Any

import attrs
import yaml  # type: ignore[import-untyped,unused-ignore]

from pysfu.errors import PysfuError

__all__ = ["Config", "ConfigError", "load_config"]

DEFAULT_PORT = 7880
"""HTTP/WebSocket signalling port, livekit-server's default."""
DEFAULT_UDP_PORT = 7882
"""Single UDP port for all WebRTC media, livekit-server's default in dev mode."""
DEFAULT_TCP_PORT = 7881
"""ICE-over-TCP port (passive host candidates), livekit-server's ``rtc.tcp_port``."""
DEFAULT_SHARD_SPREAD_AFTER = 32
"""Participants of one room on one engine shard before it spreads over the others."""
DEFAULT_TURN_UDP_PORT = 3478
"""The embedded TURN server's UDP port, livekit-server's ``turn.udp_port`` default."""
DEFAULT_STUN_SERVERS = ("stun.l.google.com:19302", "global.stun.twilio.com:3478")
"""Asked for the external address when ``rtc.use_external_ip`` names no servers."""
DEFAULT_EMPTY_TIMEOUT_S = 300.0
"""A room nobody ever joined closes after this long."""
DEFAULT_DEPARTURE_TIMEOUT_S = 20.0
"""A room closes this long after its last participant leaves."""
DEV_KEYS: Mapping[str, str] = {"devkey": "secret"}
"""The key pair every LiveKit example uses with ``--dev``."""
MIN_SECRET_LEN = 32
"""Shorter HMAC secrets are guessable; livekit-server logs an error for them."""
LOG_LEVELS = frozenset({"debug", "info", "warn", "warning", "error"})

NO_KEYS_MESSAGE = (
    "no API keys configured: pass --keys, set LIVEKIT_KEYS, use a config file, or --dev"
)

# What pysfu reads from the YAML; anything else is warned about and ignored.
_SUPPORTED: Mapping[str, frozenset[str] | None] = {
    "port": None,
    "bind_addresses": None,
    "keys": None,
    "key_file": None,
    "log_level": None,
    "development": None,
    "rtc": frozenset(
        {
            "udp_port",
            "tcp_port",
            "node_ip",
            "interfaces",
            "ips",
            "use_external_ip",
            "stun_servers",
            "congestion_control",
            "workers",
            "audio_nack",
        }
    ),
    "room": frozenset(
        {"empty_timeout", "departure_timeout", "auto_create", "enable_remote_unmute"}
    ),
    "webhook": frozenset({"api_key", "urls"}),
    "turn": frozenset({"enabled", "udp_port", "domain"}),
    "logging": frozenset({"level"}),
    "prometheus_port": None,
    "redis": frozenset(
        {
            "address",
            "username",
            "password",
            "db",
            "use_tls",
            "sentinel_master_name",
            "sentinel_username",
            "sentinel_password",
            "sentinel_addresses",
            "cluster_addresses",
        }
    ),
    "node_selector": frozenset({"kind", "sort_by", "cpu_load_limit", "sysload_limit"}),
}


# Keys that restrict what clients may do: ignoring one would leave a server more open
# than its operator wrote, so pysfu refuses to start rather than warn.
_SECURITY: Mapping[str, frozenset[str] | None] = {
    "limit": None,
    "room": frozenset({"max_participants", "enabled_codecs"}),
    "rtc": frozenset({"allow_tcp_fallback"}),
    "signal_relay": None,
}


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 80


def _show(value: object) -> str:
    """A bounded repr for error messages: YAML aliases turn a few hundred bytes into a
    structure whose full repr is gigabytes ("billion laughs")."""
    return _REPR.repr(value)


class ConfigError(PysfuError):
    """The configuration cannot be used; the message names the offending key."""


@attrs.frozen
class RedisConfig:
    """The ``redis:`` section, as livekit-server's: with it, nodes sharing one Redis
    form a cluster (pysfu.runtime.cluster); without it pysfu is a single node."""

    address: str = "127.0.0.1:6379"
    username: str = ""
    password: str = ""
    db: int = 0
    use_tls: bool = False
    sentinel_master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = ""
    sentinel_addresses: tuple[str, ...] = ()
    cluster_addresses: tuple[str, ...] = ()


NODE_SELECTOR_KINDS = frozenset({"any", "cpuload", "sysload"})
NODE_SORT_BY = frozenset({"random", "cpuload", "sysload", "rooms", "clients", "tracks"})


@attrs.frozen
class NodeSelectorConfig:
    """``node_selector:`` as livekit-server's: ``kind`` filters the live nodes (``any``;
    ``cpuload``/``sysload``: under the limit), ``sort_by`` picks among them."""

    kind: str = "any"
    sort_by: str = "random"
    cpu_load_limit: float = 0.9
    sysload_limit: float = 0.9


@attrs.frozen
class Config:
    """A complete, validated server configuration."""

    keys: Mapping[str, str]
    """API key -> secret; never empty."""
    dev: bool = False
    """Development mode: placeholder keys allowed, loopback binding by default."""
    bind_addresses: tuple[str, ...] = ("0.0.0.0",)
    """IP addresses the HTTP and UDP listeners bind to."""
    port: int = DEFAULT_PORT
    """HTTP/WebSocket port (0 = any free port)."""
    udp_port: int = DEFAULT_UDP_PORT
    """The one UDP port WebRTC media is muxed on (0 = any free port)."""
    empty_timeout_s: float = DEFAULT_EMPTY_TIMEOUT_S
    """Seconds a room that nobody has joined stays open."""
    departure_timeout_s: float = DEFAULT_DEPARTURE_TIMEOUT_S
    """Seconds a room stays open after its last participant left."""
    webhook_api_key: str | None = None
    """Key whose secret signs webhooks; present in :attr:`keys` when URLs are set."""
    webhook_urls: tuple[str, ...] = ()
    """Endpoints every webhook event is POSTed to."""
    log_level: str = "info"
    """``debug``, ``info``, ``warn`` or ``error``."""
    node_ip: str | None = None
    """The one IP advertised in ICE candidates; None: the bind address, or every usable
    interface address when bound to a wildcard (see :mod:`pysfu.media.addresses`)."""
    tcp_port: int | None = DEFAULT_TCP_PORT
    """ICE-over-TCP port (0 = any free port, None = UDP only)."""
    interfaces_include: tuple[str, ...] = ()
    """``rtc.interfaces.includes``: only these interfaces' addresses are advertised."""
    interfaces_exclude: tuple[str, ...] = ()
    """``rtc.interfaces.excludes``: these interfaces' addresses are not."""
    ips_include: tuple[str, ...] = ()
    """``rtc.ips.includes``: only addresses in these CIDR prefixes are advertised."""
    ips_exclude: tuple[str, ...] = ()
    """``rtc.ips.excludes``: addresses in these prefixes are not."""
    use_external_ip: bool = False
    """``rtc.use_external_ip``: ask STUN servers for the public address and advertise it
    first."""
    stun_servers: tuple[str, ...] = DEFAULT_STUN_SERVERS
    """``rtc.stun_servers`` as ``host:port``, asked when :attr:`use_external_ip`."""
    turn_enabled: bool = False
    """``turn.enabled``: the embedded TURN server (UDP) and ``ice_servers`` for it."""
    turn_udp_port: int = DEFAULT_TURN_UDP_PORT
    """``turn.udp_port`` (0 = any free port)."""
    turn_domain: str | None = None
    """``turn.domain``: the host in the ``turn:`` URL (default: the primary media IP)."""
    auto_create: bool = True
    """``room.auto_create``: a join may create the room its token names."""
    enable_remote_unmute: bool = False
    """``room.enable_remote_unmute``: the server API may unmute a participant's track."""
    prometheus_port: int | None = None
    """``prometheus_port``: serve Prometheus ``/metrics`` on this port (0 = any free)."""
    redis: RedisConfig | None = None
    """``redis:``: join the cluster of nodes sharing this Redis; None: a single node."""
    node_selector: NodeSelectorConfig = NodeSelectorConfig()
    """``node_selector:``: how a new room picks its node (cluster mode only)."""
    shard_spread_after: int = DEFAULT_SHARD_SPREAD_AFTER
    """Participants of a room kept on one engine shard before it spreads over the
    others (``pysfu.media.placement``). Not a YAML key: embedders and tests set it."""
    workers: int = 0
    """``rtc.workers`` (pysfu's own key; ``--workers``): media engine threads, each a
    shard with its share of the peers behind the one UDP port; 0 = one per CPU core."""
    congestion_control: bool = True
    """``rtc.congestion_control`` (``.enabled``): estimate each subscriber's bandwidth
    and choose its simulcast layers within it, as the reference does by default (it
    costs CPU per forwarded packet: str0m paces each subscriber; docs/performance.md)."""
    allow_pause: bool = False
    """``rtc.congestion_control.allow_pause``: pause a subscriber's video whose lowest
    layer does not fit its estimate (StreamStateUpdate PAUSED) instead of keeping
    that layer; off, as the reference."""
    audio_nack: bool = True
    """``rtc.audio_nack``: negotiate NACK for Opus, NACK audio lost from publishers
    and resend audio subscribers lost, as the reference. Costs engine CPU on every
    forwarded packet (str0m copies each for the NACK lists; docs/performance.md)."""

    @property
    def webhook_secret(self) -> str | None:
        """The secret webhooks are signed with, or None when webhooks are off."""
        if not self.webhook_urls or self.webhook_api_key is None:
            return None
        return self.keys.get(self.webhook_api_key)


def load_config(
    *,
    config_file: str | None = None,
    config_body: str | None = None,
    dev: bool = False,
    bind: list[str] | None = None,
    port: int | None = None,
    udp_port: int | None = None,
    tcp_port: int | None = None,
    workers: int | None = None,
    keys_flag: str | None = None,
    node_ip: str | None = None,
    env: Mapping[str, str],
) -> tuple[Config, list[str]]:
    """Merge defaults, YAML, environment and flags into a :class:`Config`.

    Flag arguments are None (or False) when the flag was not given. ``env`` is the
    process environment (passed in so tests control it); ``LIVEKIT_CONFIG`` and
    ``LIVEKIT_KEYS`` are read from it. Returns the config and human-readable warnings
    (ignored keys, weak secrets, a loopback-only advertised address) for the caller to
    log. Raises :class:`ConfigError` for unreadable or malformed input, for a missing
    key set outside dev mode, and for webhooks whose signing key is not configured.
    """
    warnings: list[str] = []
    raw = _read_yaml(config_file, config_body, env)
    _warn_unsupported(raw, warnings)

    rtc = _section(raw, "rtc")
    room = _section(raw, "room")
    webhook = _section(raw, "webhook")
    logging_ = _section(raw, "logging")

    file_dev = _bool(raw.get("development"), "development")
    dev = dev or file_dev

    keys: dict[str, str] = {}
    if raw.get("keys") is not None:
        keys.update(_keys_mapping(raw["keys"], "keys"))
    if raw.get("key_file") is not None:
        keys.update(_read_key_file(_str(raw["key_file"], "key_file")))
    flag_keys = keys_flag if keys_flag is not None else env.get("LIVEKIT_KEYS") or None
    if flag_keys is not None:
        keys = _parse_keys_flag(flag_keys)
    if not keys:
        if not dev:
            raise ConfigError(NO_KEYS_MESSAGE)
        keys = dict(DEV_KEYS)
    if not dev:
        for key, secret in sorted(keys.items()):
            if len(secret) < MIN_SECRET_LEN:
                warnings.append(
                    f"secret for API key {key!r} is shorter than {MIN_SECRET_LEN} "
                    "characters; use a longer random secret"
                )

    if bind:
        bind_addresses = tuple(_ip(a, "--bind") for a in bind)
    elif raw.get("bind_addresses"):
        bind_addresses = _bind_addresses(raw["bind_addresses"])
    else:
        # Dev keys are public knowledge: never expose them beyond this machine unless
        # asked to.
        bind_addresses = ("127.0.0.1",) if dev else ("0.0.0.0",)

    final_port = _port(port if port is not None else raw.get("port", DEFAULT_PORT), "port")
    final_udp = _udp_port(
        udp_port if udp_port is not None else rtc.get("udp_port", DEFAULT_UDP_PORT)
    )
    final_tcp = _port(
        tcp_port if tcp_port is not None else rtc.get("tcp_port", DEFAULT_TCP_PORT), "rtc.tcp_port"
    )
    interfaces = _include_exclude(rtc.get("interfaces"), "rtc.interfaces", _name)
    ips = _include_exclude(rtc.get("ips"), "rtc.ips", _cidr)
    use_external_ip = _bool(rtc.get("use_external_ip", False), "rtc.use_external_ip")
    turn = _section(raw, "turn")
    turn_enabled = _bool(turn.get("enabled", False), "turn.enabled")
    turn_udp_port = _port(turn.get("udp_port", DEFAULT_TURN_UDP_PORT), "turn.udp_port")
    turn_domain = _str(turn["domain"], "turn.domain") if turn.get("domain") else None
    stun_servers: tuple[str, ...] = DEFAULT_STUN_SERVERS
    if rtc.get("stun_servers") is not None:
        stun_servers = _stun_servers(rtc["stun_servers"])

    advertised: str | None
    if node_ip is not None:
        advertised = _ip(node_ip, "--node-ip")
    elif rtc.get("node_ip") is not None:
        advertised = _ip(_str(rtc["node_ip"], "rtc.node_ip"), "rtc.node_ip")
    else:
        # A wildcard bind advertises the interfaces' addresses, chosen at start-up.
        advertised = _default_node_ip(bind_addresses)
        if not dev and advertised is not None and ipaddress.ip_address(advertised).is_loopback:
            warnings.append(
                f"rtc.node_ip not set: advertising {advertised}, reachable only from "
                "this machine; set rtc.node_ip to the address clients can reach"
            )

    empty_timeout = _seconds(
        room.get("empty_timeout", DEFAULT_EMPTY_TIMEOUT_S), "room.empty_timeout"
    )
    departure_timeout = _seconds(
        room.get("departure_timeout", DEFAULT_DEPARTURE_TIMEOUT_S), "room.departure_timeout"
    )

    auto_create = _bool(room.get("auto_create", True), "room.auto_create")
    congestion_control, allow_pause = _congestion_control(rtc.get("congestion_control"), warnings)
    final_workers = _workers(workers if workers is not None else rtc.get("workers", 0))
    audio_nack = _bool(rtc.get("audio_nack", True), "rtc.audio_nack")
    enable_remote_unmute = _bool(
        room.get("enable_remote_unmute", False), "room.enable_remote_unmute"
    )

    webhook_urls = _urls(webhook.get("urls"), "webhook.urls")
    webhook_api_key = None
    if webhook.get("api_key") is not None:
        webhook_api_key = _str(webhook["api_key"], "webhook.api_key")
    if webhook_urls:
        if not webhook_api_key:
            raise ConfigError("webhook.api_key is required when webhook.urls is set")
        if webhook_api_key not in keys:
            raise ConfigError(
                f"webhook.api_key {webhook_api_key!r} is not one of the configured API keys"
            )

    level_raw = logging_.get("level", raw.get("log_level"))
    if level_raw is None:
        log_level = "debug" if dev else "info"
    else:
        key = "logging.level" if "level" in logging_ else "log_level"
        log_level = _str(level_raw, key).lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"{key}: unknown level {_show(level_raw)} (expected debug, info, warn or error)"
            )

    prometheus_port = None
    if raw.get("prometheus_port") is not None:
        prometheus_port = _port(raw["prometheus_port"], "prometheus_port")

    config = Config(
        keys=keys,
        dev=dev,
        bind_addresses=bind_addresses,
        port=final_port,
        udp_port=final_udp,
        empty_timeout_s=empty_timeout,
        departure_timeout_s=departure_timeout,
        webhook_api_key=webhook_api_key,
        webhook_urls=webhook_urls,
        log_level=log_level,
        node_ip=advertised,
        tcp_port=final_tcp,
        interfaces_include=interfaces[0],
        interfaces_exclude=interfaces[1],
        ips_include=ips[0],
        ips_exclude=ips[1],
        use_external_ip=use_external_ip,
        stun_servers=stun_servers,
        turn_enabled=turn_enabled,
        turn_udp_port=turn_udp_port,
        turn_domain=turn_domain,
        auto_create=auto_create,
        enable_remote_unmute=enable_remote_unmute,
        prometheus_port=prometheus_port,
        redis=_redis(raw),
        node_selector=_node_selector(_section(raw, "node_selector")),
        congestion_control=congestion_control,
        allow_pause=allow_pause,
        workers=final_workers,
        audio_nack=audio_nack,
    )
    return config, warnings


def _redis(raw: Mapping[str, Any]) -> RedisConfig | None:
    section = _section(raw, "redis")
    if not section:
        return None
    strings = {
        k: _str(section[k], f"redis.{k}")
        for k in (
            "address",
            "username",
            "password",
            "sentinel_master_name",
            "sentinel_username",
            "sentinel_password",
        )
        if section.get(k) is not None
    }
    lists = {
        k: _address_list(section[k], f"redis.{k}")
        for k in ("sentinel_addresses", "cluster_addresses")
        if section.get(k) is not None
    }
    db = section.get("db", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ConfigError(f"redis.db: expected a database number >= 0, got {_show(db)}")
    for key in ("address", *lists):
        for address in lists.get(key, (strings.get("address", "127.0.0.1:6379"),)):
            _host_port(address, f"redis.{key}")
    config = RedisConfig(
        address=strings.get("address", "127.0.0.1:6379"),
        username=strings.get("username", ""),
        password=strings.get("password", ""),
        db=db,
        use_tls=_bool(section.get("use_tls"), "redis.use_tls"),
        sentinel_master_name=strings.get("sentinel_master_name", ""),
        sentinel_username=strings.get("sentinel_username", ""),
        sentinel_password=strings.get("sentinel_password", ""),
        sentinel_addresses=lists.get("sentinel_addresses", ()),
        cluster_addresses=lists.get("cluster_addresses", ()),
    )
    if config.sentinel_addresses and not config.sentinel_master_name:
        raise ConfigError("redis.sentinel_master_name is required with redis.sentinel_addresses")
    return config


def _address_list(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of host:port addresses, got {_show(value)}")
    return tuple(_str(v, key) for v in value)


def _host_port(address: str, key: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6), as livekit-server's redis addresses."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"{key}: expected host:port, got {_show(address)}")
    return host.strip("[]"), int(port)


def _node_selector(section: Mapping[str, Any]) -> NodeSelectorConfig:
    kind = _str(section.get("kind", "any"), "node_selector.kind").lower()
    if kind not in NODE_SELECTOR_KINDS:
        raise ConfigError(
            f"node_selector.kind: unknown {_show(kind)} (expected any, cpuload or sysload)"
        )
    sort_by = _str(section.get("sort_by", "random"), "node_selector.sort_by").lower()
    if sort_by not in NODE_SORT_BY:
        raise ConfigError(
            f"node_selector.sort_by: unknown {_show(sort_by)} "
            "(expected random, cpuload, sysload, rooms, clients or tracks)"
        )
    limits = {}
    for key in ("cpu_load_limit", "sysload_limit"):
        value = section.get(key, 0.9)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"node_selector.{key}: expected a number > 0, got {_show(value)}")
        limits[key] = float(value)
    return NodeSelectorConfig(kind=kind, sort_by=sort_by, **limits)


def _read_yaml(
    config_file: str | None, config_body: str | None, env: Mapping[str, str]
) -> dict[str, Any]:
    if config_file is not None:
        try:
            with open(config_file, encoding="utf-8") as f:
                body = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    elif config_body is not None:
        body = config_body
    else:
        body = env.get("LIVEKIT_CONFIG", "")
    if not body.strip():
        return {}
    try:
        loaded = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ConfigError(f"could not parse config: {exc}") from None
    except RecursionError:
        raise ConfigError("could not parse config: nested too deeply") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("could not parse config: the top level must be a mapping")
    return loaded


def _warn_unsupported(raw: Mapping[str, Any], warnings: list[str]) -> None:
    for key, value in raw.items():
        security = _SECURITY.get(key, frozenset())
        if key in _SECURITY and security is None:
            raise ConfigError(f"{key}: not supported by pysfu, and it restricts clients")
        if security and isinstance(value, dict):
            for child in value:
                if child in security:
                    raise ConfigError(
                        f"{key}.{child}: not supported by pysfu, and it restricts clients"
                    )
        if key not in _SUPPORTED:
            warnings.append(f"unsupported config key {key} ignored")
            continue
        children = _SUPPORTED[key]
        if children is not None and isinstance(value, dict):
            for child in value:
                if child not in children:
                    warnings.append(f"unsupported config key {key}.{child} ignored")


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {_show(value)}")
    return value


def _bool(value: object, key: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
    return value


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key}: expected a port number 0-65535, got {_show(value)}")
    return value


def _congestion_control(value: object, warnings: list[str]) -> tuple[bool, bool]:
    """``rtc.congestion_control``: livekit-server's mapping (``{enabled: true,
    allow_pause: false, ...}``; its tuning keys are ignored with a warning), or a
    plain bool. (enabled, allow_pause); on and not pausing when absent, as there."""
    key = "rtc.congestion_control"
    if value is None:
        return True, False
    if isinstance(value, dict):
        for child in value:
            if child not in ("enabled", "allow_pause"):
                warnings.append(f"unsupported config key {key}.{child} ignored")
        enabled = _bool(value.get("enabled", True), f"{key}.enabled")
        return enabled, _bool(value.get("allow_pause", False), f"{key}.allow_pause")
    return _bool(value, key), False


MAX_WORKERS = 256
"""More engine threads than this is a typo, not a machine."""


def _workers(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WORKERS:
        raise ConfigError(
            f"rtc.workers: expected 0 (one per core) to {MAX_WORKERS} threads, got {_show(value)}"
        )
    return value


def _udp_port(value: object) -> int:
    key = "rtc.udp_port"
    # livekit-server also takes the port as a string, and a "start-end" range there.
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+\s*-\s*\d+", text):
            raise ConfigError(f"{key}: port ranges are not supported, give one port")
        if not (text.isascii() and text.isdigit()):  # "²".isdigit() but int("²") fails
            raise ConfigError(f"{key}: expected a port number 0-65535, got {_show(value)}")
        value = int(text)
    return _port(value, key)


def _seconds(value: object, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)  # YAML .inf/.nan: rooms could not report their timeouts
        or value < 0
    ):
        raise ConfigError(f"{key}: expected a non-negative number of seconds, got {_show(value)}")
    return float(value)


def _ip(value: str, key: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigError(f"{key}: {_show(value)} is not an IP address") from None


def _bind_addresses(value: object) -> tuple[str, ...]:
    key = "bind_addresses"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of IP addresses, got {_show(value)}")
    return tuple(_ip(_str(v, key), key) for v in value)


def _default_node_ip(bind_addresses: tuple[str, ...]) -> str | None:
    first = ipaddress.ip_address(bind_addresses[0])
    return None if first.is_unspecified else str(first)


def _name(value: object, key: str) -> str:
    return _str(value, key).strip()


def _cidr(value: object, key: str) -> str:
    text = _str(value, key).strip()
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ConfigError(f"{key}: {_show(value)} is not an IP prefix (CIDR)") from None


def _include_exclude(value: object, key: str, item: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """livekit-server's ``{includes: [...], excludes: [...]}`` filter shape."""
    if value is None:
        return (), ()
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key}: expected {{includes: [...], excludes: [...]}}, got {_show(value)}"
        )
    unknown = set(value) - {"includes", "excludes"}
    if unknown:
        raise ConfigError(f"{key}: unknown keys {sorted(map(str, unknown))} (includes, excludes)")
    out: list[tuple[str, ...]] = []
    for part in ("includes", "excludes"):
        entries = value.get(part) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{key}.{part}: expected a list, got {_show(entries)}")
        out.append(tuple(item(e, f"{key}.{part}") for e in entries))
    return out[0], out[1]


def _stun_servers(value: object) -> tuple[str, ...]:
    key = "rtc.stun_servers"
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of host:port, got {_show(value)}")
    out = []
    for entry in value:
        text = _str(entry, key).strip()
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{key}: {_show(entry)} is not host:port")
        out.append(text)
    return tuple(out)


def _urls(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of URLs, got {_show(value)}")
    urls = []
    for url in value:
        url = _str(url, key)
        if not re.match(r"https?://[^/\s]+", url):
            raise ConfigError(f"{key}: {url!r} is not an http(s) URL")
        urls.append(url)
    return tuple(urls)


def _keys_mapping(value: object, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of API key to secret, got {_show(value)}")
    keys: dict[str, str] = {}
    for api_key, secret in value.items():
        if not isinstance(api_key, str) or not api_key:
            raise ConfigError(f"{key}: API key {_show(api_key)} must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            # YAML reads unquoted digits as numbers; say how to fix it rather than
            # dropping the key as livekit-server does.
            raise ConfigError(
                f"{key}: secret for API key {_show(api_key)} must be a non-empty string "
                "(quote it if it looks like a number)"
            )
        keys[api_key] = secret
    return keys


def _parse_keys_flag(text: str) -> dict[str, str]:
    message = 'could not parse keys: each line must be exactly "key: secret", including the space'
    try:
        loaded = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(message) from None
    if not isinstance(loaded, dict):
        raise ConfigError(message)
    return _keys_mapping(loaded, "keys")


def _read_key_file(path: str) -> dict[str, str]:
    path = os.path.expanduser(os.path.expandvars(path))
    try:
        mode = os.stat(path).st_mode
        # Same rule as livekit-server: secrets must not be world-accessible.
        if mode & (stat.S_IRWXO):
            raise ConfigError(f"key_file {path}: others' permissions must be 0 (chmod o-rwx)")
        with open(path, encoding="utf-8") as f:
            body = f.read()
    except OSError as exc:
        raise ConfigError(f"key_file: cannot read {path}: {exc}") from None
    try:
        loaded = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ConfigError(f"key_file {path}: could not parse: {exc}") from None
    except RecursionError:
        raise ConfigError(f"key_file {path}: could not parse: nested too deeply") from None
    return _keys_mapping(loaded if loaded is not None else {}, "key_file")
