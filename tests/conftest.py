"""Fixtures over :mod:`pysfu.testing`: the real server in its own thread, per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pysfu.config import Config
from pysfu.testing import (
    API_KEY as API_KEY,
)
from pysfu.testing import (
    API_SECRET as API_SECRET,
)
from pysfu.testing import (
    RunningServer as RunningServer,
)
from pysfu.testing import (
    make_config as make_config,
)
from pysfu.testing import (
    start_server as start_server,
)
from pysfu.testing import (
    stop_server as stop_server,
)


@pytest.fixture
def server_config() -> Config:
    return make_config()


@pytest.fixture
def server(server_config: Config) -> Iterator[RunningServer]:
    running = start_server(server_config)
    try:
        yield running
    finally:
        stop_server(running)
