"""Bounded LRU caches with hit/miss counters, used for message embeddings and verdicts.

Logs repeat: HDFS_2pct's 222k lines hold a few hundred distinct cleaned messages and its
11,501 blocks about 1.5k distinct cleaned sequences, so most encoder and decoder work is
repeated work. Values are only ever produced by a deterministic model with fixed weights, and
each cache is tied to an identity (encoder weights, detector version) and cleared when that
identity changes, so a hit returns exactly what recomputing would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")
Item = TypeVar("Item", bound=Sequence[object])


class CountingLRU(Generic[V]):
    """An LRU map of at most `maxsize` entries (0 disables caching) that counts hits and misses."""

    def __init__(self, maxsize: int, identity: str = "") -> None:
        self.maxsize = maxsize
        self.identity = identity
        self._data: LRUCache[Hashable, V] = LRUCache(maxsize=max(maxsize, 1))
        self.hits = 0
        self.misses = 0

    def bind(self, identity: str) -> None:
        """Tie the cache to `identity`; entries computed under another identity are dropped."""
        if identity != self.identity:
            self._data.clear()
            self.identity = identity

    def get(self, key: Hashable) -> V | None:
        value = self._data.get(key) if self.maxsize else None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize:
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data) if self.maxsize else 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self), "hit_ratio": self.hit_ratio}


def plan_batches(lengths: Sequence[int], batch_size: int, overhead: float) -> list[range]:
    """Split items sorted by ascending length into consecutive batches of at most `batch_size`
    that minimise the padded work: sum over batches of (`overhead` + size x longest length).

    A batch costs as many positions as its longest row times its rows (left padding), plus a
    fixed cost per model call (`overhead`, in positions). Cutting a fixed number of rows per
    batch pads short rows to long ones whenever lengths are spread, which is what a worker's
    small calls look like; this dynamic programme (O(n x batch_size)) cuts where it pays.

    Returns the batches as index ranges into `lengths`, in order.
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan of the first j items
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - batch_size), end):
            cost = best[start] + overhead + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches = []
    end = n
    while end:
        batches.append(range(cut[end], end))
        end = cut[end]
    return batches[::-1]


def score_through_cache(
    items: Sequence[Item],
    key_of: Callable[[Item], Hashable],
    cache: CountingLRU[V],
    score_unique: Callable[[list[Item]], list[V]],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    *,
    positions_of: Callable[[Item], int] = len,
    batch_overhead: float = 0.0,
) -> list[V]:
    """One value per item, in order: an item repeated within the call is scored once (counted as
    a hit), cached items come from `cache`, and the rest go to `score_unique` sorted by length
    in batches of at most `batch_size` planned by `plan_batches` (`positions_of(item)`: the
    model positions it takes; `batch_overhead`: the fixed cost of a call, in positions).
    `progress` gets the number of items finished since its last call."""
    results: list[V | None] = [None] * len(items)
    pending: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        key = key_of(item)
        if key in pending:
            cache.hits += 1
            pending[key].append(i)
            continue
        cached = cache.get(key)
        if cached is None:
            pending[key] = [i]
        else:
            results[i] = cached
    if progress:
        progress(sum(r is not None for r in results))
    order = sorted(pending, key=lambda k: positions_of(items[pending[k][0]]))
    lengths = [positions_of(items[pending[k][0]]) for k in order]
    for rows in plan_batches(lengths, batch_size, batch_overhead):
        chunk = [order[i] for i in rows]
        values = score_unique([items[pending[k][0]] for k in chunk])
        for key, value in zip(chunk, values, strict=True):
            cache.put(key, value)
            for i in pending[key]:
                results[i] = value
        if progress:
            progress(sum(len(pending[k]) for k in chunk))
    return [r for r in results if r is not None]
