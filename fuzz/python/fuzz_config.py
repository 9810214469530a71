"""Fuzz configuration loading: YAML bodies (and ``--keys`` text) from the fuzzer through
``load_config``, with ``key_file`` confined to a sandbox directory of prepared files.

Findings: any exception other than ``ConfigError``, or a loaded config the server
cannot use (a room built with its timeouts fails, a port out of range, no keys, a
webhook key missing from the keys). Run:
``python fuzz/python/fuzz_config.py fuzz/corpus/config``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
import tempfile

from _common import capture_errors, instrumented, run

with instrumented("pysfu", "yaml"):
    from pysfu import config as config_module
    from pysfu.config import ConfigError, load_config
    from pysfu.rtc.room import Room

ERRORS = capture_errors()

SANDBOX = tempfile.mkdtemp(prefix="pysfu-fuzz-config-")
for name, body, mode in [
    ("keys.yaml", "k1: secret-secret-secret-secret-secret\n", 0o600),
    ("world.yaml", "k2: s\n", 0o644),
    ("bad.yaml", "k3: [\n", 0o600),
    ("list.yaml", "- a\n", 0o600),
    ("empty.yaml", "", 0o600),
]:
    path = os.path.join(SANDBOX, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(body)
    os.chmod(path, mode)

_read_key_file = config_module._read_key_file


def _sandboxed_key_file(path: str) -> dict[str, str]:
    # The fuzzer must not read (or hang on) arbitrary files of this machine.
    return _read_key_file(os.path.join(SANDBOX, os.path.basename(path)))


config_module._read_key_file = _sandboxed_key_file


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0], data[1:]
    text = rest.decode("utf-8", "replace")
    keys_flag = None
    if mode & 2:
        text, _, keys_flag = text.partition("\x00")
    try:
        config, warnings = load_config(
            config_body=text, dev=bool(mode & 1), keys_flag=keys_flag, env={}
        )
    except ConfigError:
        ERRORS.check()
        return
    assert all(isinstance(w, str) for w in warnings)
    assert config.keys and all(isinstance(s, str) and s for s in config.keys.values())
    assert 0 <= config.port <= 65535 and 0 <= config.udp_port <= 65535
    # node_ip None: a wildcard bind, whose addresses are chosen at start-up.
    for address in (*config.bind_addresses, *([config.node_ip] if config.node_ip else [])):
        ipaddress.ip_address(address)
    assert (
        config.node_ip is not None or ipaddress.ip_address(config.bind_addresses[0]).is_unspecified
    )
    for port in (config.tcp_port, config.turn_udp_port):
        assert port is None or 0 <= port <= 65535
    for prefix in (*config.ips_include, *config.ips_exclude):
        ipaddress.ip_network(prefix)
    for timeout in (config.empty_timeout_s, config.departure_timeout_s):
        assert math.isfinite(timeout) and timeout >= 0, f"unusable timeout {timeout}"
    if config.webhook_urls:
        assert config.webhook_secret is not None
    room = Room(
        name="r",
        created_at=0.0,
        empty_timeout_s=config.empty_timeout_s,
        departure_timeout_s=config.departure_timeout_s,
    )
    room.info()
    ERRORS.check()


if __name__ == "__main__":
    run(test_one_input)
    sys.exit(0)
