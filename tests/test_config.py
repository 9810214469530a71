from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pysfu.config import Config, ConfigError, load_config
from pysfu.errors import PysfuError

LONG = "s" * 32
LONG2 = "t" * 40


def _load(body: str | None = None, **kwargs: Any) -> tuple[Config, list[str]]:
    kwargs.setdefault("env", {})
    if body is not None:
        kwargs["config_body"] = textwrap.dedent(body)
    return load_config(**kwargs)


# --- defaults -------------------------------------------------------------------------


def test_dev_defaults() -> None:
    config, warnings = _load(dev=True)
    assert config.dev
    assert config.keys == {"devkey": "secret"}
    assert config.bind_addresses == ("127.0.0.1",)
    assert config.port == 7880
    assert config.udp_port == 7882
    assert config.empty_timeout_s == 300
    assert config.departure_timeout_s == 20
    assert config.webhook_urls == ()
    assert config.webhook_api_key is None
    assert config.webhook_secret is None
    assert config.node_ip == "127.0.0.1"
    assert config.log_level == "debug"
    # The short dev secret is expected in dev mode.
    assert warnings == []


def test_non_dev_defaults_bind_all() -> None:
    config, _ = _load(keys_flag=f"k: {LONG}")
    assert not config.dev
    assert config.keys == {"k": LONG}
    assert config.bind_addresses == ("0.0.0.0",)
    # Chosen from the interfaces at start-up (pysfu.media.addresses), not 127.0.0.1.
    assert config.node_ip is None
    assert config.tcp_port == 7881
    assert config.log_level == "info"


def test_no_keys_not_dev() -> None:
    with pytest.raises(ConfigError) as info:
        _load()
    assert str(info.value) == (
        "no API keys configured: pass --keys, set LIVEKIT_KEYS, use a config file, or --dev"
    )
    assert isinstance(info.value, PysfuError)


# --- the YAML layout ------------------------------------------------------------------

FULL = f"""
port: 7890
bind_addresses: ["10.0.0.5", "127.0.0.1"]
rtc:
  udp_port: 7999
  node_ip: 203.0.113.7
keys:
  APIa: {LONG}
  APIb: {LONG2}
room:
  empty_timeout: 60
  departure_timeout: 2.5
webhook:
  api_key: APIb
  urls:
    - http://127.0.0.1:9000/hook
    - https://example.com/lk
logging:
  level: WARN
"""


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "livekit.yaml"
    path.write_text(FULL)
    config, warnings = load_config(config_file=str(path), env={})
    assert config == Config(
        keys={"APIa": LONG, "APIb": LONG2},
        dev=False,
        bind_addresses=("10.0.0.5", "127.0.0.1"),
        port=7890,
        udp_port=7999,
        empty_timeout_s=60.0,
        departure_timeout_s=2.5,
        webhook_api_key="APIb",
        webhook_urls=("http://127.0.0.1:9000/hook", "https://example.com/lk"),
        log_level="warn",
        node_ip="203.0.113.7",
    )
    assert config.webhook_secret == LONG2
    assert warnings == []


def test_node_ip_defaults_to_first_specific_bind_address() -> None:
    config, warnings = _load(f"bind_addresses: [10.1.2.3]\nkeys: {{k: {LONG}}}\n")
    assert config.node_ip == "10.1.2.3"
    assert warnings == []


def test_livekit_config_env_body() -> None:
    config, _ = _load(env={"LIVEKIT_CONFIG": f"port: 9999\nkeys: {{k: {LONG}}}\n"})
    assert config.port == 9999
    assert config.keys == {"k": LONG}


def test_file_beats_body_beats_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 1111\n")
    env = {"LIVEKIT_CONFIG": "port: 3333\n"}
    config, _ = load_config(config_file=str(path), config_body="port: 2222\n", dev=True, env=env)
    assert config.port == 1111
    config, _ = load_config(config_body="port: 2222\n", dev=True, env=env)
    assert config.port == 2222
    config, _ = load_config(dev=True, env=env)
    assert config.port == 3333


def test_development_key_in_file() -> None:
    config, _ = _load("development: true\n")
    assert config.dev
    assert config.keys == {"devkey": "secret"}


def test_legacy_log_level() -> None:
    config, _ = _load("log_level: error\n", dev=True)
    assert config.log_level == "error"


# --- flags and environment override the file -----------------------------------------


def test_flags_override_file() -> None:
    config, _ = _load(
        FULL,
        bind=["0.0.0.0"],
        port=1234,
        udp_port=4321,
        keys_flag=f"APIb: {LONG}",
        node_ip="198.51.100.1",
    )
    assert config.bind_addresses == ("0.0.0.0",)
    assert config.port == 1234
    assert config.udp_port == 4321
    assert config.keys == {"APIb": LONG}
    assert config.node_ip == "198.51.100.1"


def test_livekit_keys_env() -> None:
    config, _ = _load(env={"LIVEKIT_KEYS": f"k1: {LONG}\nk2: {LONG2}"})
    assert config.keys == {"k1": LONG, "k2": LONG2}


def test_keys_flag_beats_env_and_file() -> None:
    config, _ = _load(
        f"keys: {{file: {LONG}}}\n",
        env={"LIVEKIT_KEYS": f"env: {LONG}"},
        keys_flag=f"flag: {LONG}",
    )
    assert config.keys == {"flag": LONG}
    config, _ = _load(f"keys: {{file: {LONG}}}\n", env={"LIVEKIT_KEYS": f"env: {LONG}"})
    assert config.keys == {"env": LONG}


def test_dev_with_own_keys_keeps_them_and_bind_override() -> None:
    config, warnings = _load(dev=True, keys_flag="mine: short", bind=["0.0.0.0"])
    assert config.keys == {"mine": "short"}
    assert config.bind_addresses == ("0.0.0.0",)
    assert warnings == []


@pytest.mark.parametrize("bad", ["key:secret", "just a string", "- a\n- b", "k: [1]", "k: 123"])
def test_malformed_keys_flag(bad: str) -> None:
    with pytest.raises(ConfigError, match="keys"):
        _load(keys_flag=bad)


# --- warnings -------------------------------------------------------------------------


def test_unsupported_keys_warned() -> None:
    config, warnings = _load(
        """
        redis: {address: "localhost:6379", max_redirects: 3}
        turn: {enabled: true, tls_port: 5349}
        rtc:
          udp_port: 7882
          port_range_start: 50000
        room:
          auto_create: false
        logging:
          json: true
        """,
        dev=True,
    )
    assert config.udp_port == 7882
    assert config.redis is not None and config.redis.address == "localhost:6379"
    assert "unsupported config key redis.max_redirects ignored" in warnings
    assert "unsupported config key turn.tls_port ignored" in warnings
    assert "unsupported config key rtc.port_range_start ignored" in warnings
    assert not any("auto_create" in w for w in warnings)
    assert "unsupported config key logging.json ignored" in warnings
    assert len(warnings) == 4


def test_short_secret_warned_outside_dev() -> None:
    _, warnings = _load(keys_flag=f"weak: short\nstrong: {LONG}", node_ip="10.0.0.1")
    assert len(warnings) == 1
    assert "'weak'" in warnings[0] and "32" in warnings[0]
    _, warnings = _load(keys_flag="weak: short", dev=True)
    assert warnings == []


# --- malformed values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("port: abc", "port"),
        ("port: -1", "port"),
        ("port: 70000", "port"),
        ("port: true", "port"),
        ("rtc: {udp_port: abc}", "rtc.udp_port"),
        ("rtc: {udp_port: 50000-60000}", "rtc.udp_port"),
        ("rtc: {node_ip: not-an-ip}", "rtc.node_ip"),
        ("rtc: 5", "rtc"),
        ("room: {empty_timeout: -5}", "room.empty_timeout"),
        ("room: {departure_timeout: soon}", "room.departure_timeout"),
        ("keys: [a, b]", "keys"),
        ("keys: {k: 12345}", "keys"),
        ("bind_addresses: [nowhere]", "bind_addresses"),
        ("bind_addresses: {a: b}", "bind_addresses"),
        ("webhook: {api_key: devkey, urls: [ftp://x]}", "webhook.urls"),
        ("webhook: {api_key: devkey, urls: 5}", "webhook.urls"),
        ("logging: {level: loud}", "logging.level"),
        ("development: maybe", "development"),
    ],
)
def test_malformed_values_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(body, dev=True)
    assert str(info.value).startswith(key), str(info.value)


def test_string_udp_port_accepted() -> None:
    config, _ = _load('rtc: {udp_port: "7900"}', dev=True)
    assert config.udp_port == 7900


@pytest.mark.parametrize("body", ["port: [unclosed", "a: b: c", "- just\n- a list"])
def test_bad_yaml(body: str) -> None:
    with pytest.raises(ConfigError, match="could not parse config"):
        _load(body, dev=True)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(config_file=str(missing), dev=True, env={})


def test_bad_bind_flag() -> None:
    with pytest.raises(ConfigError, match="--bind"):
        _load(dev=True, bind=["localhost:80"])


# --- webhooks -------------------------------------------------------------------------


def test_webhook_needs_api_key() -> None:
    with pytest.raises(ConfigError, match=r"webhook\.api_key is required"):
        _load("webhook: {urls: [http://127.0.0.1/x]}", dev=True)


def test_webhook_api_key_must_be_configured() -> None:
    with pytest.raises(ConfigError, match=r"webhook\.api_key 'other'"):
        _load("webhook: {api_key: other, urls: [http://127.0.0.1/x]}", dev=True)


def test_webhook_with_dev_key() -> None:
    config, _ = _load("webhook: {api_key: devkey, urls: [http://127.0.0.1/x]}", dev=True)
    assert config.webhook_secret == "secret"
    assert config.webhook_urls == ("http://127.0.0.1/x",)


# --- key_file -------------------------------------------------------------------------


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"fk: {LONG}\n")
    os.chmod(path, 0o600)
    config, _ = _load(f"key_file: {path}\n", node_ip="10.0.0.1")
    assert config.keys == {"fk": LONG}


def test_key_file_world_readable_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"fk: {LONG}\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="key_file"):
        _load(f"key_file: {path}\n")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("limit: {num_tracks: 4}", "limit"),
        ("room: {max_participants: 10}", "room.max_participants"),
        ("signal_relay: {enabled: true}", "signal_relay"),
    ],
)
def test_security_keys_not_implemented_stop_the_server(body: str, key: str) -> None:
    """Ignoring a key that restricts clients would leave the server more open than
    its operator wrote: pysfu refuses to start, naming the key."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _load(body, dev=True)


def test_room_policy_keys_load() -> None:
    config, warnings = _load("room: {auto_create: false, enable_remote_unmute: true}", dev=True)
    assert config.auto_create is False and config.enable_remote_unmute is True
    assert not warnings


def test_rtc_address_keys_as_livekit_server_writes_them() -> None:
    """Issue 13: rtc.tcp_port, rtc.interfaces / rtc.ips include-exclude filters,
    rtc.use_external_ip and rtc.stun_servers are read, not ignored."""
    config, warnings = _load(
        """
        rtc:
          tcp_port: 0
          interfaces: {includes: [eth0, veth1], excludes: [docker0]}
          ips: {includes: ["10.0.0.0/8"], excludes: ["10.9.0.0/16", "fd00::/8"]}
          use_external_ip: true
          stun_servers: ["127.0.0.1:3478", "stun.example.com:19302"]
        """,
        dev=True,
    )
    assert warnings == []
    assert config.tcp_port == 0
    assert config.interfaces_include == ("eth0", "veth1")
    assert config.interfaces_exclude == ("docker0",)
    assert config.ips_include == ("10.0.0.0/8",)
    assert config.ips_exclude == ("10.9.0.0/16", "fd00::/8")
    assert config.use_external_ip
    assert config.stun_servers == ("127.0.0.1:3478", "stun.example.com:19302")


# --- cluster and metrics -------------------------------------------------------------


def test_redis_and_node_selector_sections() -> None:
    config, _ = _load(
        """
        prometheus_port: 6789
        redis:
          address: redis.internal:6380
          username: pysfu
          password: hunter2
          db: 3
          use_tls: true
        node_selector: {kind: cpuload, sort_by: rooms, cpu_load_limit: 0.5}
        """,
        dev=True,
    )
    assert config.prometheus_port == 6789
    assert config.redis is not None
    assert (config.redis.address, config.redis.db, config.redis.use_tls) == (
        "redis.internal:6380",
        3,
        True,
    )
    assert (config.redis.username, config.redis.password) == ("pysfu", "hunter2")
    assert config.node_selector.kind == "cpuload"
    assert config.node_selector.sort_by == "rooms"
    assert config.node_selector.cpu_load_limit == 0.5
    single, _ = _load("port: 7880", dev=True)
    assert single.redis is None and single.prometheus_port is None


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("redis: {address: nohost}", "redis.address"),
        ("redis: {address: 'h:99999'}", "redis.address"),
        ("redis: {db: -1}", "redis.db"),
        ("redis: {use_tls: 'yes'}", "redis.use_tls"),
        ("redis: {sentinel_addresses: ['a:1']}", "sentinel_master_name"),
        ("redis: {cluster_addresses: ['nope']}", "redis.cluster_addresses"),
        ("node_selector: {kind: regionaware}", "node_selector.kind"),
        ("node_selector: {sort_by: bytes}", "node_selector.sort_by"),
        ("node_selector: {cpu_load_limit: 0}", "node_selector.cpu_load_limit"),
        ("prometheus_port: 70000", "prometheus_port"),
    ],
)
def test_bad_cluster_config(body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _load(body, dev=True)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("rtc: {ips: {includes: [not-a-net]}}", "rtc.ips.includes"),
        ("rtc: {ips: [10.0.0.0/8]}", "rtc.ips"),
        ("rtc: {interfaces: {only: [eth0]}}", "rtc.interfaces"),
        ("rtc: {stun_servers: [nohost]}", "rtc.stun_servers"),
        ("rtc: {tcp_port: 70000}", "rtc.tcp_port"),
    ],
)
def test_bad_rtc_address_keys_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _load(body, dev=True)


def test_turn_keys() -> None:
    config, warnings = _load(
        "turn: {enabled: true, udp_port: 3479, domain: turn.example.com}", dev=True
    )
    assert (config.turn_enabled, config.turn_udp_port, config.turn_domain) == (
        True,
        3479,
        "turn.example.com",
    )
    assert warnings == []


def test_congestion_control_is_on_and_does_not_pause_unless_asked() -> None:
    # The reference's defaults: enabled, allow_pause off.
    config = _load("{}", dev=True)[0]
    assert (config.congestion_control, config.allow_pause) == (True, False)
    config, warnings = _load("rtc: {congestion_control: false}", dev=True)
    assert (config.congestion_control, config.allow_pause) == (False, False) and not warnings
    with pytest.raises(ConfigError, match=r"rtc\.congestion_control"):
        _load("rtc: {congestion_control: maybe}", dev=True)
    with pytest.raises(ConfigError, match=r"rtc\.congestion_control\.allow_pause"):
        _load("rtc: {congestion_control: {allow_pause: 1}}", dev=True)
    # livekit-server's own layout loads; its tuning keys are not ours.
    config, warnings = _load(
        "rtc: {congestion_control: {enabled: true, allow_pause: true, probe_mode: padding}}",
        dev=True,
    )
    assert (config.congestion_control, config.allow_pause) == (True, True)
    assert warnings == ["unsupported config key rtc.congestion_control.probe_mode ignored"]
    config, _ = _load("rtc: {congestion_control: {enabled: false}}", dev=True)
    assert config.congestion_control is False


# --- engine threads --------------------------------------------------------------------


def test_workers_default_to_one_per_core_and_take_file_and_flag() -> None:
    config, _ = _load(dev=True)
    assert config.workers == 0
    config, _ = _load("rtc: {workers: 4}\n", dev=True)
    assert config.workers == 4
    config, _ = _load("rtc: {workers: 4}\n", dev=True, workers=1)
    assert config.workers == 1


@pytest.mark.parametrize("bad", ["-1", "true", "'two'", "1000"])
def test_bad_workers_name_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"rtc\.workers"):
        _load(f"rtc: {{workers: {bad}}}\n", dev=True)


def test_audio_nack_is_on_unless_turned_off() -> None:
    assert _load("{}", dev=True)[0].audio_nack is True
    config, warnings = _load("rtc: {audio_nack: false}", dev=True)
    assert config.audio_nack is False and not warnings
    with pytest.raises(ConfigError, match=r"rtc\.audio_nack"):
        _load("rtc: {audio_nack: sometimes}", dev=True)
