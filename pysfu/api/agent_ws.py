"""The worker WebSocket ``/agent``: who may connect.

livekit-agents connects to ``<LIVEKIT_URL>/agent`` with ``Authorization: Bearer <jwt>``
whose ``video`` grant has ``agent: true`` (``access_token`` in the query is accepted
too, as for ``/rtc``). Anything else is refused before the upgrade with 401, as the
reference server does; the connection itself is served by
:meth:`pysfu.runtime.agents.AgentRuntime.serve_worker`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..auth import AuthError, Claims, bearer_from_header, verify_token

PATH = "/agent"


class WorkerSocketRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def authorize_worker(
    headers: Mapping[str, str], query: Mapping[str, str], keys: Mapping[str, str]
) -> Claims:
    """The worker's claims, or :class:`WorkerSocketRejected` (401) saying why not."""
    token = bearer_from_header(headers.get("authorization")) or query.get("access_token")
    if not token:
        raise WorkerSocketRejected(401, "no access token: pass Authorization: Bearer <token>")
    try:
        claims = verify_token(token, keys)
    except AuthError as exc:
        raise WorkerSocketRejected(401, str(exc)) from None
    if not claims.video.agent:
        raise WorkerSocketRejected(401, "permissions denied: token has no agent grant")
    return claims
