"""What a load test does: the server to hit, the room layout and the media per publisher.

Pure: a :class:`LoadPlan` checks its own numbers when it is built and expands into the
list of simulated participants (:meth:`LoadPlan.participants`); nothing here does I/O.
"""

from __future__ import annotations

import secrets
from typing import Literal
from urllib.parse import urlsplit

import attrs

from pysfu.errors import PysfuError

__all__ = ["LoadPlan", "ParticipantSpec", "PlanError", "TrackSpec"]

Role = Literal["publisher", "subscriber"]
TrackKind = Literal["audio", "video"]


class PlanError(PysfuError, ValueError):
    """A load-test plan asks for something impossible (a negative count, no media...)."""


@attrs.frozen
class TrackSpec:
    """One synthetic track a publisher sends."""

    cid: str
    """Client track id: sent in AddTrackRequest and as the msid track id of the offer."""
    name: str
    kind: TrackKind
    kbps: int


@attrs.frozen
class ParticipantSpec:
    """One simulated participant."""

    identity: str
    room: str
    role: Role
    tracks: tuple[TrackSpec, ...] = ()

    @property
    def auto_subscribe(self) -> bool:
        # Publishers subscribing too would multiply the server's fan-out by the number
        # of publishers and blur what a run measures.
        return self.role == "subscriber"


_COUNTS = ("rooms", "publishers", "subscribers", "audio_kbps", "video_kbps", "join_concurrency")
_POSITIVE = (
    "rooms",
    "audio_kbps",
    "video_kbps",
    "duration_s",
    "join_concurrency",
    "join_timeout_s",
)
_NOT_NEGATIVE = ("publishers", "subscribers", "ramp_up_s")


@attrs.frozen
class LoadPlan:
    """A load test: server, credentials, layout, media and timing.

    Each of the :attr:`rooms` rooms gets :attr:`publishers` publishers (``pub-<r>-<i>``,
    subscribing to nothing) and :attr:`subscribers` subscriber-only participants
    (``sub-<r>-<i>``, auto-subscribed to every track, no publish right).
    """

    url: str = "ws://127.0.0.1:7880"
    api_key: str = "devkey"
    api_secret: str = "secret"
    rooms: int = 1
    publishers: int = 1
    """Per room."""
    subscribers: int = 0
    """Per room."""
    audio: bool = True
    video: bool = False
    audio_kbps: int = 32
    video_kbps: int = 1500
    duration_s: float = 30.0
    """Length of the measurement window."""
    ramp_up_s: float = 5.0
    """Settling time between the last join and the measurement window, so that every
    subscriber's media is flowing before counting starts."""
    join_concurrency: int = 10
    """Joins in flight at once."""
    join_rate: float | None = None
    """Joins started per second; None for as fast as :attr:`join_concurrency` allows."""
    join_timeout_s: float = 15.0
    """Per participant: WebSocket open to JoinResponse (and, for publishers, answer)."""
    server_pid: int | None = None
    """The server's process, when it is local, for CPU and memory figures."""
    local_ip: str = "127.0.0.1"
    """Address the synthetic peers bind their UDP sockets on."""
    run_id: str = attrs.field(factory=lambda: secrets.token_hex(3))
    """Appended to room names so that back-to-back runs never share a room."""

    def __attrs_post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise PlanError(f"{name} must be a whole number, got {value!r}")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise PlanError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in _NOT_NEGATIVE:
            if not getattr(self, name) >= 0:
                raise PlanError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
            raise PlanError(f"url must look like ws://host:port, got {self.url!r}")
        if self.publishers + self.subscribers == 0:
            raise PlanError("a room needs at least one publisher or subscriber")
        if self.publishers > 0 and not (self.audio or self.video):
            raise PlanError("publishers need audio, video or both")
        if self.join_rate is not None and not self.join_rate > 0:
            raise PlanError(f"join_rate must be > 0, got {self.join_rate!r}")
        if self.server_pid is not None and self.server_pid <= 0:
            raise PlanError(f"server_pid must be a process id, got {self.server_pid!r}")
        if not self.api_key or not self.api_secret:
            raise PlanError("api_key and api_secret must not be empty")

    @property
    def total_participants(self) -> int:
        return self.rooms * (self.publishers + self.subscribers)

    def room_name(self, room: int) -> str:
        suffix = f"-{self.run_id}" if self.run_id else ""
        return f"loadtest-{room}{suffix}"

    def participants(self) -> list[ParticipantSpec]:
        """Every participant: all publishers of all rooms first, then all subscribers,
        which is the order the runner joins them in (subscribers then find the tracks
        already published)."""
        publishers: list[ParticipantSpec] = []
        subscribers: list[ParticipantSpec] = []
        for r in range(self.rooms):
            room = self.room_name(r)
            for i in range(self.publishers):
                publishers.append(
                    ParticipantSpec(f"pub-{r}-{i}", room, "publisher", self._tracks(r, i))
                )
            for i in range(self.subscribers):
                subscribers.append(ParticipantSpec(f"sub-{r}-{i}", room, "subscriber"))
        return publishers + subscribers

    def _tracks(self, room: int, index: int) -> tuple[TrackSpec, ...]:
        # cids only have to be unique per participant; making them unique per run
        # makes server logs of a run easier to follow.
        tracks: list[TrackSpec] = []
        if self.audio:
            tracks.append(TrackSpec(f"TR_load_{room}_{index}_a", "audio", "audio", self.audio_kbps))
        if self.video:
            tracks.append(TrackSpec(f"TR_load_{room}_{index}_v", "video", "video", self.video_kbps))
        return tuple(tracks)
