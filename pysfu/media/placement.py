"""Which engine shard a participant's peers go on.

The engine runs one thread (shard) per core behind one port. Forwarding inside a
shard costs nothing extra; a subscriber on another shard than the publisher costs
one hand-over per packet per shard (the payload is shared, not copied). So a room
stays on one shard while it is small — the meeting shape never crosses shards — and
a room that outgrows ``Config.shard_spread_after`` participants on its shard spills onto the least
loaded shards, so one livestream with thousands of viewers uses every core.

Pure bookkeeping: the bridge asks and tells, the engine is not involved.
"""

from __future__ import annotations

import attrs

from ..config import DEFAULT_SHARD_SPREAD_AFTER

SPREAD_AFTER = DEFAULT_SHARD_SPREAD_AFTER
"""Participants of one room on its home shard before the room spills over."""


@attrs.define
class ShardPlacement:
    """Participants per shard and per (room, shard); one answer per participant."""

    shards: int
    spread_after: int = SPREAD_AFTER
    _load: list[int] = attrs.field(init=False)
    _rooms: dict[str, dict[int, int]] = attrs.field(factory=dict, init=False)
    _placed: dict[str, tuple[str, int]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, not {self.shards}")
        self._load = [0] * self.shards

    def place(self, room: str, participant: str) -> int:
        """The shard of ``participant`` (the same one for all its peers)."""
        if participant in self._placed:
            return self._placed[participant][1]
        here = self._rooms.setdefault(room, {})
        # The room's own shard while it has room, else the least loaded overall
        # (ties: the room's shards first, then the lowest index).
        home = max(here, key=lambda s: (here[s], -s), default=None)
        if home is not None and here[home] < self.spread_after:
            shard = home
        else:
            shard = min(range(self.shards), key=lambda s: (self._load[s], s not in here, s))
        here[shard] = here.get(shard, 0) + 1
        self._load[shard] += 1
        self._placed[participant] = (room, shard)
        return shard

    def release(self, participant: str) -> None:
        """``participant`` left; forgetting an unknown one is fine."""
        placed = self._placed.pop(participant, None)
        if placed is None:
            return
        room, shard = placed
        self._load[shard] -= 1
        here = self._rooms[room]
        here[shard] -= 1
        if here[shard] == 0:
            del here[shard]
        if not here:
            del self._rooms[room]

    def load(self) -> list[int]:
        """Participants per shard."""
        return list(self._load)
