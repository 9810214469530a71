"""``pysfu loadtest``: simulated LiveKit participants against any compatible server.

Publishers send synthetic RTP and subscribers measure loss and forwarding latency,
through the compiled :class:`pysfu._core.LoadGenerator`; signaling is standard LiveKit
protocol v0, so the target may be pysfu or the reference livekit-server::

    report = await run_loadtest(LoadPlan(url="ws://127.0.0.1:7880", publishers=2,
                                         subscribers=10, video=True, duration_s=30))
    print(format_table(report))
"""

from __future__ import annotations

from .plan import LoadPlan, ParticipantSpec, PlanError, TrackSpec
from .probe import ProbeError
from .report import Distribution, LoadReport, ServerFigures, format_table, to_json
from .runner import run_loadtest

__all__ = [
    "Distribution",
    "LoadPlan",
    "LoadReport",
    "ParticipantSpec",
    "PlanError",
    "ProbeError",
    "ServerFigures",
    "TrackSpec",
    "format_table",
    "run_loadtest",
    "to_json",
]
