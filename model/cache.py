"""Bounded LRU caches with hit/miss counters, used for message embeddings and verdicts.

Logs repeat: HDFS_2pct's 222k lines hold a few hundred distinct cleaned messages and its
11,501 blocks about 1.5k distinct cleaned sequences, so most encoder and decoder work is
repeated work. Values are only ever produced by a deterministic model with fixed weights, and
each cache is tied to an identity (encoder weights, detector version) and cleared when that
identity changes, so a hit returns exactly what recomputing would.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


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
