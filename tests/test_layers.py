"""The package's layers import one way: rtc <- runtime <- media/signal <- api <- server
<- cli. A module may import its own layer and the layers before it, never after."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pysfu"

RANK = {"rtc": 0, "runtime": 1, "media": 2, "signal": 2, "api": 3, "server": 4, "testing": 5}
"""Layers from the bottom up; ``media`` and ``signal`` sit side by side."""
RANK["cli"] = 5
SHARED = {"auth", "config", "errors", "_core", "demo", "loadtest", "__init__"}
"""Modules below every layer (or outside them) that any layer may use."""


def _layer(module: str) -> str | None:
    head = module.split(".")[0]
    return head if head in RANK else None


def _imports(path: pathlib.Path) -> list[str]:
    """Absolute names (within pysfu) that ``path`` imports."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1])
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, node.module or ""]).strip(".")
                found.append(name or (node.names[0].name if not base else ""))
                if not node.module:
                    found.extend(".".join([*base, a.name]) for a in node.names)
            elif node.module and node.module.startswith("pysfu."):
                found.append(node.module.removeprefix("pysfu."))
        elif isinstance(node, ast.Import):
            found.extend(
                a.name.removeprefix("pysfu.") for a in node.names if a.name.startswith("pysfu.")
            )
    return [f for f in found if f]


MODULES = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if _layer(str(p.relative_to(PACKAGE).with_suffix("")).replace("/", "."))
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: pathlib.Path) -> None:
    own = _layer(str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."))
    assert own is not None
    for name in _imports(path):
        target = _layer(name)
        if target is None:
            assert name.split(".")[0] in SHARED, f"{path.name} imports unknown {name}"
            continue
        assert target == own or RANK[target] < RANK[own], (
            f"{path.relative_to(PACKAGE)} ({own}) imports {name} ({target}): layers point down"
        )


def test_the_check_sees_the_layers() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in MODULES}
    assert {"rtc/room.py", "runtime/manager.py", "signal/v0.py", "api/http.py"} <= names
    # Relative imports resolve to their layer: the check would catch an upward one.
    assert "rtc.room" in _imports(PACKAGE / "runtime" / "manager.py")
    assert "runtime.manager" in _imports(PACKAGE / "signal" / "v0.py")
