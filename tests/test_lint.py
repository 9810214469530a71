"""The code stays as clean as the style promises: ruff, mypy --strict, and the
compiled core matching its typed stub."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_clean() -> None:
    result = _run("ruff", "check", "pysfu", "tests", "fuzz")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = _run("mypy", "pysfu")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_matches_its_stub() -> None:
    result = _run("mypy.stubtest", "pysfu._core")
    assert result.returncode == 0, result.stdout + result.stderr
