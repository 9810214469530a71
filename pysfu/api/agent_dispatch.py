"""Twirp ``livekit.AgentDispatchService`` (CreateDispatch, DeleteDispatch,
ListDispatch, what ``LiveKitAPI.agent_dispatch`` and ``lk dispatch`` call).

Each method needs ``roomAdmin`` for the request's room, as the reference
(EnsureAdminPermission). CreateDispatch creates the room when it does not exist.
(A token's ``roomConfig.agents`` is read by ``pysfu.rtc.dispatch.agents_from_room_config``.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import agent_dispatch

from ..auth import Claims
from ..rtc.dispatch import DispatchError
from ..runtime.agents import AgentRuntime
from .twirp import TwirpError

log = logging.getLogger(__name__)

SERVICE = "livekit.AgentDispatchService"
MAX_METADATA_BYTES = 64 * 1024
"""Largest dispatch metadata accepted (the reference's default metadata limit)."""


def _admin(claims: Claims, room_name: str) -> None:
    if not room_name:
        raise TwirpError("invalid_argument", "room is required")
    if not (claims.video.room_admin and claims.video.room == room_name):
        # As the RoomService here and the reference: a missing grant is `unauthenticated`.
        raise TwirpError("unauthenticated", "permissions denied: requires roomAdmin")


class AgentDispatchService:
    def __init__(self, agents: AgentRuntime) -> None:
        self.agents = agents

    def methods(self) -> Mapping[str, tuple[type[Message], Callable[[Any, Claims], Message]]]:
        return {
            "CreateDispatch": (agent_dispatch.CreateAgentDispatchRequest, self.create_dispatch),
            "DeleteDispatch": (agent_dispatch.DeleteAgentDispatchRequest, self.delete_dispatch),
            "ListDispatch": (agent_dispatch.ListAgentDispatchRequest, self.list_dispatch),
        }

    def create_dispatch(
        self, req: agent_dispatch.CreateAgentDispatchRequest, claims: Claims
    ) -> Message:
        _admin(claims, req.room)
        if len(req.metadata.encode()) > MAX_METADATA_BYTES:
            raise TwirpError("invalid_argument", "metadata exceeds limits")
        try:
            return self.agents.create_dispatch(
                req.room, req.agent_name, metadata=req.metadata, attributes=dict(req.attributes)
            )
        except DispatchError as exc:
            raise TwirpError("invalid_argument", str(exc)) from None

    def delete_dispatch(
        self, req: agent_dispatch.DeleteAgentDispatchRequest, claims: Claims
    ) -> Message:
        _admin(claims, req.room)
        try:
            return self.agents.delete_dispatch(req.room, req.dispatch_id)
        except DispatchError as exc:
            raise TwirpError("not_found", str(exc)) from None

    def list_dispatch(
        self, req: agent_dispatch.ListAgentDispatchRequest, claims: Claims
    ) -> Message:
        _admin(claims, req.room)
        return agent_dispatch.ListAgentDispatchResponse(
            agent_dispatches=self.agents.list_dispatches(req.room, req.dispatch_id)
        )
