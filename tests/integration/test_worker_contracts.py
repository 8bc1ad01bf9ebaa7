"""One contract suite, two implementations: the memory twins (tests/fakes.py) the pipeline's unit
tests rely on must behave like the OpenSearch ones, or those tests prove nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opensearchpy import OpenSearch

from enricher.checkpoint import OpenSearchCheckpointStore
from enricher.client import Retrier
from enricher.interfaces import CheckpointConflict, CheckpointStore, Lease, LeaseLost, Source
from enricher.lease import OpenSearchLease
from enricher.settings import RetrySettings, SourceSettings
from enricher.sink import iso_ms
from enricher.source import OpenSearchSource
from enricher.types import Checkpoint, OpenGroupState
from tests.fakes import LeaseBoard, MemoryCheckpointStore, MemoryCluster, MemoryLease, MemorySource
from tests.integration.worker_support import create_source

RETRIER = Retrier(RetrySettings(initial_backoff_s=0.1, max_elapsed_s=30))


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backends:
    checkpoints: Callable[[], CheckpointStore]
    lease: Callable[[str, float, Clock], Lease]


@pytest.fixture(params=["memory", "opensearch"])
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    if request.param == "memory":
        board = LeaseBoard()
        store = MemoryCheckpointStore()
        yield Backends(lambda: store, lambda holder, ttl, clock: MemoryLease(board, holder, ttl, clock))
        return
    client: OpenSearch = request.getfixturevalue("os_client")
    index = request.getfixturevalue("index_prefix") + "state"

    def new_store() -> CheckpointStore:
        store = OpenSearchCheckpointStore(client, index, RETRIER, clock_ms=lambda: 0)
        store.prepare()
        return store

    new_store()
    yield Backends(
        new_store, lambda holder, ttl, clock: OpenSearchLease(client, index, "contract", holder, ttl, RETRIER, clock)
    )


CHECKPOINT = Checkpoint(
    checkpoint_id="contract",
    grouping="session-x",
    read_position=(2000, "logs", "7"),
    resume_after=(1000, "logs", "3"),
    open_groups=(OpenGroupState("g", "blk_1", (1001, "logs", "4"), (1000, "logs", "3")),),
    read_timestamp_ms=2000,
)


def test_checkpoints_are_compare_and_set(backends: Backends) -> None:
    store = backends.checkpoints()
    assert store.load("contract") is None
    first = store.save(CHECKPOINT, None)
    with pytest.raises(CheckpointConflict):
        store.save(CHECKPOINT, None)  # someone created it first
    assert store.load("contract") == (CHECKPOINT, first)
    moved = Checkpoint("contract", "session-x", (3000, "logs", "9"), (3000, "logs", "9"))
    second = store.save(moved, first)
    with pytest.raises(CheckpointConflict):
        store.save(CHECKPOINT, first)  # stale version: another worker moved it
    assert backends.checkpoints().load("contract") == (moved, second)


def test_one_lease_holder_at_a_time_until_it_lapses_or_is_released(backends: Backends) -> None:
    clock = Clock()
    a = backends.lease("a", 10, clock)
    b = backends.lease("b", 10, clock)
    assert a.acquire().held
    status = b.acquire()
    assert not status.held and status.holder == "a" and status.expires_ms == round((clock.now + 10) * 1000)
    with pytest.raises(LeaseLost):
        b.ensure_held()
    clock.now += 4
    a.ensure_held()  # renews: a third of the lifetime has passed
    clock.now += 8
    assert not b.acquire().held  # renewed at +4, so still a's until +14
    clock.now += 3
    assert b.acquire().held  # a stopped renewing: b takes over
    clock.now += 4
    with pytest.raises(LeaseLost):
        a.ensure_held()
    b.release()
    assert a.acquire().held  # released: no need to wait for expiry


DOCS = [
    # (id, timestamp ms or None, message)
    ("a", 1000, "first"),
    ("c", 1000, "same millisecond, later id"),
    ("b", 1000, "same millisecond, earlier id"),
    ("d", 2000, "second"),
    ("e", 3000, "third"),
    ("f", 4000, "at the bound"),
    ("g", None, "no timestamp"),
]


@pytest.fixture(params=["memory", "opensearch"])
def source(request: pytest.FixtureRequest) -> Source:
    if request.param == "memory":
        cluster = MemoryCluster()
        for doc_id, ts, message in DOCS:
            cluster.add("logs", doc_id, ts, message=message, **({"@timestamp": None} if ts is None else {}))
        return MemorySource(cluster, page_size=2, timestamp_field="@timestamp")
    client: OpenSearch = request.getfixturevalue("os_client")
    index = request.getfixturevalue("index_prefix") + "logs"
    documents = [
        (doc_id, {"message": message, **({"@timestamp": iso_ms(ts)} if ts is not None else {})})
        for doc_id, ts, message in DOCS
    ]
    create_source(client, index, documents)
    opensearch = OpenSearchSource(client, SourceSettings(index=index, page_size=2), [], RETRIER)
    opensearch.check()
    return opensearch


def _read(source: Source, after: Any, before_ms: int) -> list[tuple[str, Any, Any]]:
    pages = list(source.read(after, before_ms))
    assert all(pages) and all(len(page) <= 2 for page in pages)
    return [(doc.ref.id, doc.timestamp_ms, doc.previous) for page in pages for doc in page]


def test_sources_read_in_cursor_order_with_chained_positions(source: Source) -> None:
    docs = _read(source, None, 4000)
    assert [doc_id for doc_id, _, _ in docs] == ["a", "b", "c", "d", "e"]  # "f" is at the bound
    everything = [doc for page in source.read(None, 4000) for doc in page]
    assert everything[0].previous is None
    assert all(doc.previous == before.position for before, doc in zip(everything, everything[1:], strict=False))
    # Resuming after any document continues exactly behind it.
    for cut, doc in enumerate(everything):
        assert [d for d, _, _ in _read(source, doc.position, 4000)] == [d for d, _, _ in docs[cut + 1 :]]
    unpositioned = [doc.ref.id for page in source.read_unpositioned() for doc in page]
    assert unpositioned == ["g"]
