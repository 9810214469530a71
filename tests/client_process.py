"""Official clients in processes of their own: the Python SDK (``tests/sdk_child.py``) and
a Go participant built with ``github.com/livekit/server-sdk-go/v2`` (``tests/go/``). Both
print one JSON line per event on stdout; :class:`ClientProcess` collects them so a test
can wait for one, and can freeze (SIGSTOP), thaw or kill the process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
GO_CLIENT_SOURCE = TESTS / "go"
GO_FALLBACKS = ("/usr/local/go/bin/go",)
"""Where Go's own installer puts it, for shells whose PATH was not extended."""
GO_BUILD_TIMEOUT_S = 900  # a fresh machine downloads server-sdk-go and pion first

Event = dict[str, Any]


class ClientProcess:
    """A client process whose stdout is a stream of JSON events."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: list[Event] = []
        self.stderr_tail: list[str] = []
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._drain())]

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.events.append(json.loads(line))
                self._changed.set()
        self._changed.set()  # end of output: wake waiters so they can fail fast

    async def _drain(self) -> None:
        # Keep the child's stderr (SDK logs) from filling the pipe, and keep its end
        # for failure messages.
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode(errors="replace").rstrip())
            del self.stderr_tail[:-30]

    def saw(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]

    async def wait_event(
        self, name: str, pred: Callable[[Event], bool] = lambda e: True, timeout: float = 30
    ) -> Event:
        """The first ``name`` event (past or future) matching ``pred``."""
        try:
            async with asyncio.timeout(timeout):
                index = 0
                while True:
                    while index < len(self.events):
                        event = self.events[index]
                        index += 1
                        if event["event"] == name and pred(event):
                            return event
                    if self.proc.stdout is not None and self.proc.stdout.at_eof():
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(
            f"{self.name}: no {name!r} event; events {self.events}; "
            f"exit {self.proc.returncode}; stderr tail {self.stderr_tail[-10:]}"
        )

    def freeze(self) -> None:
        """Stop the process dead, as a laptop whose lid closed."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    async def wait_exit(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def aclose(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies once resumed
        await self.proc.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def client_process(argv: list[str], name: str) -> AsyncIterator[ClientProcess]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=TESTS.parent,
    )
    client = ClientProcess(proc, name)
    try:
        yield client
    finally:
        await client.aclose()


def python_client(
    url: str,
    token: str,
    name: str,
    *,
    tone: bool = False,
    camera: bool = False,
    watch_video: bool = False,
    listen: bool = False,
    wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
) -> Any:
    """``async with python_client(...) as c``: a Python SDK participant in a child
    process (``tests/sdk_child.py``), publishing a 440 Hz tone if ``tone`` and a
    simulcast camera if ``camera``, reporting received video each second if
    ``watch_video``, playing out received audio and reporting its receive
    statistics each second if ``listen``; ``wrap`` turns the command into another (run
    it inside a network namespace)."""
    flags = [*(["--tone"] if tone else []), *(["--camera"] if camera else [])]
    flags += ["--watch-video"] if watch_video else []
    flags += ["--listen"] if listen else []
    argv = wrap([sys.executable, "-m", "tests.sdk_child", url, token, *flags])
    return client_process(argv, name)


def build_go_client(out_dir: Path) -> Path:
    """Build ``tests/go`` (server-sdk-go) into ``out_dir``; fails the test, saying why,
    when Go is missing or the build fails. Modules come from the Go module proxy."""
    go = shutil.which("go") or next((g for g in GO_FALLBACKS if Path(g).exists()), None)
    if go is None:
        pytest.fail(
            "the Go toolchain is needed to build the server-sdk-go test client "
            "(tests/go, go >= 1.26 on PATH)"
        )
    binary = out_dir / "goclient"
    # -buildvcs=false: the worktree's VCS state is not the client's business (and a
    # checkout without git metadata would otherwise fail the build).
    result = subprocess.run(
        [go, "build", "-buildvcs=false", "-o", str(binary), "."],
        cwd=GO_CLIENT_SOURCE,
        capture_output=True,
        text=True,
        timeout=GO_BUILD_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"go build of tests/go failed:\n{result.stderr[-3000:]}")
    return binary


def go_client(
    binary: Path,
    url: str,
    token: str,
    name: str,
    *,
    duration_s: float,
    listen: bool = False,
    publish_ivf: list[Path] | None = None,
) -> Any:
    """``async with go_client(...) as c``: the server-sdk-go participant, staying
    ``duration_s`` and then leaving (it prints ``left``); with ``listen`` it
    subscribes to audio and reports each second what arrived (``audio`` events);
    ``publish_ivf`` (LOW, MEDIUM, HIGH VP8 IVF files) publishes a simulcast camera
    read from files, ignoring keyframe requests as lk's file publishers do."""
    argv = [str(binary), "-url", url, "-token", token, "-duration", f"{duration_s}s"]
    argv += ["-listen"] if listen else []
    argv += ["-publish-ivf", ",".join(str(p) for p in publish_ivf)] if publish_ivf else []
    return client_process(argv, name)
