"""Sharding and gathering over a real gloo process group on CPU, against one process."""
from collections import Counter

from iwp.evaluate import distributed
from tests.ranks import join_group, run_ranks


def _worker(rank: int, size: int, port: int, items: list, out) -> None:
    join_group(rank, size, port)
    world = distributed.init()
    mine = distributed.shard(items, world)
    counts = Counter()
    for kind, ok in mine:
        counts[kind + "/n"] += 1
        counts[kind + "/correct"] += ok
    total = distributed.gather_counts(counts, world)
    out.put((world.rank, [i for i in mine], dict(total)))
    distributed.finish(world)


def test_one_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.init()
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert distributed.shard([1, 2, 3], world) == [1, 2, 3]
    assert distributed.gather_counts(Counter(a=2), world) == Counter(a=2)


def test_shards_cover_everything_once_and_gather_matches_one_process():
    items = [("colour", i % 3 == 0) for i in range(7)] + [("count", i % 2 == 0) for i in range(6)]
    results = run_ranks(_worker, 2, items)
    shards = [r[1] for r in results]
    assert sorted(x for s in shards for x in s) == sorted(items)              # each item exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1                 # balanced
    expected = Counter()
    for kind, ok in items:
        expected[kind + "/n"] += 1
        expected[kind + "/correct"] += ok
    for _, _, total in results:                                               # every rank sees the sum
        assert Counter(total) == expected
