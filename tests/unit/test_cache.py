import random

from model.cache import CountingLRU, plan_batches, score_through_cache


def test_counts_hits_and_misses_and_evicts_least_recent() -> None:
    cache: CountingLRU[int] = CountingLRU(2)
    assert cache.get("a") is None
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None
    assert cache.get("c") == 3
    assert (cache.hits, cache.misses, len(cache)) == (2, 2, 2)
    assert cache.hit_ratio == 0.5


def test_size_zero_disables_caching_but_still_counts() -> None:
    cache: CountingLRU[int] = CountingLRU(0)
    cache.put("a", 1)
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.misses == 1


def test_binding_a_new_identity_drops_entries() -> None:
    cache: CountingLRU[int] = CountingLRU(10, identity="v1")
    cache.put("a", 1)
    cache.bind("v1")
    assert cache.get("a") == 1
    cache.bind("v2")
    assert cache.get("a") is None


def _padded_cost(lengths: list[int], batches: list[range], overhead: float) -> float:
    return sum(overhead + len(rows) * lengths[rows[-1]] for rows in batches)


def test_plan_batches_separates_short_rows_from_long_ones() -> None:
    # Fixed chunks of 4 would pad three 30-position rows to 70; splitting costs one more call.
    lengths = [30, 30, 30, 70, 70, 70]
    assert plan_batches(lengths, batch_size=4, overhead=20) == [range(0, 3), range(3, 6)]


def test_plan_batches_fills_batches_when_calls_are_expensive() -> None:
    lengths = [30, 30, 30, 70, 70, 70]
    assert plan_batches(lengths, batch_size=6, overhead=10_000) == [range(0, 6)]


def test_plan_batches_of_equal_lengths_use_the_fewest_calls() -> None:
    assert [len(rows) for rows in plan_batches([40] * 10, batch_size=4, overhead=1)] in ([2, 4, 4], [4, 4, 2], [4, 2, 4])
    assert plan_batches([], batch_size=4, overhead=1) == []


def test_plan_batches_cover_every_item_once_and_never_cost_more_than_fixed_chunks() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lengths = sorted(rng.randint(1, 80) for _ in range(rng.randint(1, 60)))
        size, overhead = rng.randint(1, 16), rng.choice([0, 5, 20, 500])
        batches = plan_batches(lengths, size, overhead)
        assert [i for rows in batches for i in rows] == list(range(len(lengths)))
        assert all(1 <= len(rows) <= size for rows in batches)
        fixed = [range(s, min(s + size, len(lengths))) for s in range(0, len(lengths), size)]
        assert _padded_cost(lengths, batches, overhead) <= _padded_cost(lengths, fixed, overhead)


def test_score_through_cache_scores_each_distinct_item_once_in_planned_batches() -> None:
    calls: list[list[str]] = []

    def score_unique(batch: list[str]) -> list[int]:
        calls.append(batch)
        return [len(item) for item in batch]

    cache: CountingLRU[int] = CountingLRU(100)
    items = ["aa", "bbbbbbbbbb", "aa", "cc", "dddddddddd"]
    values = score_through_cache(items, lambda s: s, cache, score_unique, batch_size=8, batch_overhead=1)
    assert values == [2, 10, 2, 2, 10]
    assert sorted(map(sorted, calls)) == [["aa", "cc"], ["bbbbbbbbbb", "dddddddddd"]]
    assert (cache.hits, cache.misses) == (1, 4)
    assert score_through_cache(["cc"], lambda s: s, cache, score_unique, batch_size=8) == [2]
    assert len(calls) == 2 and cache.hits == 2
