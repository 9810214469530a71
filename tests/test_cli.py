"""The ``pysfu`` command as a user runs it: start, refuse bad set-ups, shut down cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import trio
from livekit.protocol import models

from pysfu.auth import mint_token

from .signal_client import SignalClient, connect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pysfu(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "pysfu.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )


def _wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/").text == "OK":
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_refuses_to_start_without_keys() -> None:
    proc = _pysfu("serve", "--port", str(_free_port()))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "no API keys" in out


def test_malformed_config_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("port: not-a-port\nkeys: {k: s}\n")
    proc = _pysfu("serve", "--config", str(path))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "port" in out


@pytest.mark.trio
async def test_dev_server_warns_serves_and_shuts_down_cleanly(tmp_path) -> None:
    port = _free_port()
    cfg = tmp_path / "livekit.yaml"
    cfg.write_text("turn: {enabled: false, tls_port: 5349}\nroom: {empty_timeout: 30}\n")
    proc = _pysfu(
        "serve",
        "--dev",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--udp-port",
        "0",
        "--tcp-port",
        "0",
        "--workers",
        "3",
    )
    try:
        await trio.to_thread.run_sync(_wait_healthy, port, proc)
        token = mint_token("devkey", "secret", identity="alice", room="r")
        async with connect(f"ws://127.0.0.1:{port}", token) as ws:
            client = SignalClient(ws)
            await client.expect("join")
            proc.send_signal(signal.SIGINT)
            leave = (await client.expect("leave", timeout=10)).leave
            assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
        out, _ = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
        assert proc.returncode == 0
        assert "unsupported config key turn" in out
        assert "media engine: 3 worker thread(s)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
