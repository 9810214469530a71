"""Properties of the engine shard placement (pysfu.media.placement): a participant
keeps its shard, small rooms stay on one shard, big rooms use every shard evenly, and
leaving undoes joining."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pysfu.media.placement import ShardPlacement

# (join?, room index, participant index)
ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 4), st.integers(0, 60)), min_size=1, max_size=300
)


@given(ops, st.integers(1, 4), st.integers(1, 8))
def test_bookkeeping_matches_the_participants_present(
    steps: list[tuple[bool, int, int]], shards: int, spread_after: int
) -> None:
    p = ShardPlacement(shards, spread_after)
    present: dict[str, tuple[str, int]] = {}
    for join, room, who in steps:
        pid = f"P{room}-{who}"
        if join:
            shard = p.place(f"R{room}", pid)
            assert 0 <= shard < shards
            # Asking again changes nothing.
            assert p.place(f"R{room}", pid) == shard
            present.setdefault(pid, (f"R{room}", shard))
            assert present[pid][1] == shard
        else:
            p.release(pid)
            present.pop(pid, None)
    load = [0] * shards
    for _, shard in present.values():
        load[shard] += 1
    assert p.load() == load
    for pid in list(present):
        p.release(pid)
    assert p.load() == [0] * shards


@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 12))
def test_a_room_within_the_threshold_stays_on_one_shard(
    shards: int, spread_after: int, rooms: int
) -> None:
    p = ShardPlacement(shards, spread_after)
    # Rooms join interleaved, none beyond the threshold.
    placed: dict[int, set[int]] = {}
    for i in range(spread_after):
        for r in range(rooms):
            placed.setdefault(r, set()).add(p.place(f"R{r}", f"P{r}-{i}"))
    assert all(len(s) == 1 for s in placed.values())
    # New rooms start on the least loaded shard.
    if rooms >= shards:
        assert max(p.load()) - min(p.load()) <= spread_after


@given(st.integers(2, 4), st.integers(1, 16), st.integers(0, 200))
def test_a_big_room_fills_every_shard_evenly(shards: int, spread_after: int, extra: int) -> None:
    p = ShardPlacement(shards, spread_after)
    n = shards * spread_after + extra
    for i in range(n):
        p.place("live", f"viewer{i}")
    load = p.load()
    assert sum(load) == n
    assert max(load) - min(load) <= 1
