from model.cache import CountingLRU


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
