"""A bounded run of every atheris harness in ``fuzz/python`` (CI smoke test).

Each target runs in its own process for a few seconds from its checked-in seed
corpus, with libFuzzer's per-input timeout (a hang is a finding) and an RSS limit (a
leak is a finding). New corpus entries go to a temporary directory; a crash input is
written there too and its path and traceback are in the failure message, ready to be
copied into ``fuzz/corpus/<target>/`` as a regression. Long runs: see docs/fuzzing.md.
``PYSFU_FUZZ_SECONDS`` overrides the per-target budget.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from .fuzz_targets import FUZZ, TARGETS

pytest.importorskip("atheris")

SECONDS = int(os.environ.get("PYSFU_FUZZ_SECONDS", "15"))
"""Per target: ten targets stay around two and a half minutes of CI time together."""
PER_INPUT_TIMEOUT_S = 20
"""libFuzzer reports an input as a hang after this long (generous for a shared CI box)."""
RSS_LIMIT_MB = 1024


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(target: str, tmp_path: pathlib.Path) -> None:
    seeds = FUZZ / "corpus" / target
    assert any(seeds.iterdir()), f"no seed corpus for {target}"
    work = tmp_path / "corpus"
    work.mkdir()
    cmd = [
        sys.executable,
        str(FUZZ / "python" / f"fuzz_{target}.py"),
        str(work),
        str(seeds),
        f"-max_total_time={SECONDS}",
        f"-timeout={PER_INPUT_TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        "-max_len=4096",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    # The outer timeout only guards CI against a stuck process; the fuzzer itself stops
    # after max_total_time.
    proc = subprocess.run(
        cmd,
        cwd=FUZZ / "python",
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    artifacts = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    output = proc.stderr[-6000:]
    assert proc.returncode == 0 and not artifacts, (
        f"fuzz_{target} found something (exit {proc.returncode}, artifacts {artifacts} "
        f"in {tmp_path}):\n{output}"
    )
    assert "Done " in proc.stderr or "DONE" in proc.stderr, output
    # The run must have executed inputs, not just loaded the corpus.
    runs = [line for line in proc.stderr.splitlines() if "number_of_executed_units" in line]
    assert runs and int(runs[-1].split(":")[-1]) > 0, output
