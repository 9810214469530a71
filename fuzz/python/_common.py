"""Shared pieces of the atheris harnesses (importable without atheris, so the
regression tests replay inputs with plain pytest).

Every harness module defines ``test_one_input(data: bytes) -> None`` and ends with
``if __name__ == "__main__": run(test_one_input)``. A harness raises on a finding:
an unexpected exception type, a broken invariant, or an error that pysfu caught and
logged (a handler bug that a ``log.exception`` would otherwise hide).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

try:  # the harnesses run without atheris too (regression replay, hypothesis fallback)
    import atheris
except ImportError:  # pragma: no cover - atheris is in the test extra
    atheris = None


def instrumented(*packages: str) -> contextlib.AbstractContextManager[Any]:
    """Instrument ``packages`` imported inside the block when fuzzing with atheris."""
    if atheris is not None and _fuzzing():
        return atheris.instrument_imports(include=list(packages))
    return contextlib.nullcontext()


def _fuzzing() -> bool:
    main = sys.modules.get("__main__")
    return bool(main and getattr(main, "__file__", "").startswith(__file__.rsplit("/", 1)[0]))


def run(test_one_input: Callable[[bytes], None]) -> None:
    """The atheris entry point: libFuzzer flags come from ``sys.argv``."""
    if atheris is None:
        raise SystemExit("atheris is not installed: pip install atheris")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


class Provider:
    """A small FuzzedDataProvider that also works without atheris (same bytes, same
    choices), so a crash file replays identically under pytest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int_in(self, lo: int, hi: int) -> int:
        """An int in [lo, hi] from one or two bytes."""
        span = hi - lo + 1
        v = self.byte()
        if span > 256:
            v = (v << 8) | self.byte()
        return lo + v % span

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, seq: list[Any] | tuple[Any, ...]) -> Any:
        return seq[self.int_in(0, len(seq) - 1)] if seq else None

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or what is left."""
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def bytes(self, max_len: int = 64) -> bytes:
        return self.take(self.int_in(0, max_len))

    def text(self, max_len: int = 32) -> str:
        return self.bytes(max_len).decode("utf-8", "replace")


class ErrorLog(logging.Handler):
    """Collects ERROR records of the ``pysfu`` loggers: pysfu logs (and survives) bugs
    in request handlers, and a fuzzer must count those as findings."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        if self.records:
            record = self.records[0]
            self.records.clear()
            if record.exc_info and record.exc_info[1] is not None:
                raise AssertionError(f"pysfu logged: {record.getMessage()}") from record.exc_info[1]
            raise AssertionError(f"pysfu logged: {record.getMessage()}")


def capture_errors() -> ErrorLog:
    """Silence pysfu's logging except ERROR records, which are collected."""
    handler = ErrorLog()
    logger = logging.getLogger("pysfu")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    return handler


@contextlib.contextmanager
def deterministic_ids() -> Iterator[None]:
    """Server ids (RM_/PA_/TR_) from a counter instead of ``secrets``, so a crash input
    replays the same way and raw frames in the corpus can name tracks (TR_000000000003)."""
    from pysfu.rtc import ids

    counter = itertools.count(1)
    original = ids._suffix
    ids._suffix = lambda length=12: f"{next(counter):0{length}d}"
    try:
        yield
    finally:
        ids._suffix = original


def seed_trio() -> None:
    """Trio shuffles each scheduling batch with a module-level Random; fix its seed."""
    from trio._core import _run

    rng = getattr(_run, "_r", None)
    if rng is not None:
        rng.seed(0)


def run_trio(main: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
    """``trio.run(main, data)`` on a MockClock, deterministically (ids, scheduling); a
    finding inside nurseries is re-raised bare so libFuzzer's report names it."""
    import trio
    import trio.testing

    seed_trio()
    with deterministic_ids():
        try:
            trio.run(main, data, clock=trio.testing.MockClock())
        except BaseExceptionGroup as group:
            leaf = group
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if leaf is group:
                raise
            raise leaf from group
