"""CPU and memory of a local server process, sampled by PID.

Only meaningful when the server runs on the same machine; a server embedded in the
load generator's own process would be measured together with the generator.
"""

from __future__ import annotations

import time

import attrs

# psutil ships no type information; the second code keeps mypy quiet when the
# types-psutil stubs happen to be installed.
import psutil  # type: ignore[import-untyped, unused-ignore]

from pysfu.errors import PysfuError

__all__ = ["ProbeError", "ProcessSample", "ServerProbe"]


class ProbeError(PysfuError):
    """The server process cannot be found or read."""


@attrs.frozen
class ProcessSample:
    """One reading of the server process."""

    at_s: float
    """``time.monotonic()`` when read."""
    cpu_s: float
    """User plus system CPU seconds used so far, all threads."""
    rss_bytes: int


class ServerProbe:
    """Reads one process's CPU time and resident memory."""

    def __init__(self, pid: int) -> None:
        try:
            self._process = psutil.Process(pid)
            self.name: str = str(self._process.name())
        except psutil.Error as exc:
            raise ProbeError(f"cannot watch server process {pid}: {exc}") from None
        self.pid = pid

    def sample(self) -> ProcessSample:
        try:
            with self._process.oneshot():
                times = self._process.cpu_times()
                rss = int(self._process.memory_info().rss)
        except psutil.Error as exc:
            raise ProbeError(f"server process {self.pid} went away: {exc}") from None
        return ProcessSample(
            at_s=time.monotonic(), cpu_s=float(times.user + times.system), rss_bytes=rss
        )
