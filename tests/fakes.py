"""Memory twins of the worker's seams and a fast deterministic detector.

They keep the contracts in `enricher.interfaces`, so `enricher.pipeline` runs in unit tests
without a cluster or a model; `tests/integration/test_worker_contracts.py` runs the same contract
checks against these and the OpenSearch implementations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from enricher.checkpoint import checkpoint_from_json, checkpoint_to_json
from enricher.grouping import EntryBuilder, build_grouper, field_value
from enricher.interfaces import CheckpointConflict, LeaseLost, LeaseStatus, Survey
from enricher.metrics import WorkerMetrics
from enricher.pipeline import PassOptions, Worker
from enricher.settings import GroupingSettings
from enricher.sink import build_actions, dead_letter_id, iso_ms
from enricher.types import Checkpoint, DeadLetter, DocRef, LogDoc, Position, ScoredGroup, Version, WriteReport
from model.detector import ProgressFn, Verdict

FAKE_VERSION = "fake-0001"


class FakeDetector:
    """Deterministic, content-based verdicts in microseconds.

    The score is a hash of the exact message sequence, so a group that differs by one member (or
    by order) almost surely gets another score, and about a fifth of groups are anomalous. An
    anomalous verdict points at its longest message (`positions`), like LogLLaMA would; every
    non-empty one names its shortest message as what the score is about (`score_positions`).
    `delay_s` makes each `score` call slow, to widen windows for fault injection.
    """

    name = "fake"

    def __init__(self, delay_s: float = 0.0, version: str = FAKE_VERSION) -> None:
        self.version = version
        self.delay_s = delay_s
        self.calls = 0
        self.sequences_scored = 0

    @staticmethod
    def verdict_for(messages: Sequence[str], version: str = FAKE_VERSION) -> Verdict:
        digest = hashlib.blake2b("\x1e".join(messages).encode(), digest_size=8).digest()
        score = int.from_bytes(digest, "big") / 2**64
        label = int(score > 0.8)
        positions = (max(range(len(messages)), key=lambda i: len(messages[i])),) if label and messages else ()
        focus = (min(range(len(messages)), key=lambda i: len(messages[i])),) if messages else ()
        return Verdict(label, score, version, "anomalous" if label else "normal", False, positions, focus)

    def score(self, sequences: Sequence[Sequence[str]], progress: ProgressFn | None = None) -> list[Verdict]:
        self.calls += 1
        self.sequences_scored += len(sequences)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self.verdict_for(list(seq), self.version) for seq in sequences]

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return {"verdict": {"hits": 0, "misses": self.sequences_scored, "size": 0, "hit_ratio": 0.0}}


@dataclass
class MemoryDoc:
    index: str
    id: str
    timestamp_ms: int | None
    source: dict[str, Any]

    @property
    def ref(self) -> DocRef:
        return DocRef(self.index, self.id)


@dataclass
class MemoryCluster:
    """Documents, results and dead letters in memory; what the memory source and sink share."""

    docs: list[MemoryDoc] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, index: str, doc_id: str, timestamp_ms: int | None, **source: Any) -> MemoryDoc:
        doc = MemoryDoc(index, doc_id, timestamp_ms, source)
        self.docs.append(doc)
        return doc

    def by_ref(self) -> dict[DocRef, MemoryDoc]:
        return {doc.ref: doc for doc in self.docs}

    def anomaly(self, doc: MemoryDoc) -> dict[str, Any] | None:
        return doc.source.get("anomaly")


class MemorySource:
    """`Source` over a `MemoryCluster`; `page_size` small to exercise paging."""

    def __init__(
        self,
        cluster: MemoryCluster,
        message_field: str = "message",
        key_fields: Sequence[str] = (),
        page_size: int = 7,
        timestamp_field: str = "ts",
    ) -> None:
        self.cluster = cluster
        self.message_field = message_field
        self.key_fields = list(key_fields)
        self.page_size = page_size
        self.timestamp_field = timestamp_field
        self.reads = 0

    def _doc(self, doc: MemoryDoc, previous: Position | None) -> LogDoc:
        return LogDoc(
            ref=doc.ref,
            position=(doc.timestamp_ms, doc.index, doc.id),
            previous=previous,
            timestamp_ms=doc.timestamp_ms,
            message=field_value(doc.source, self.message_field),
            fields={name: field_value(doc.source, name) for name in (*self.key_fields, self.timestamp_field)},
        )

    def read(self, after: Position | None, before_ms: int, not_before_ms: int | None = None) -> Iterator[list[LogDoc]]:
        self.reads += 1
        ordered = sorted(
            (doc for doc in self.cluster.docs if doc.timestamp_ms is not None and doc.timestamp_ms < before_ms),
            key=lambda doc: (doc.timestamp_ms, doc.index, doc.id),
        )
        selected = [
            doc
            for doc in ordered
            if (after is None or (doc.timestamp_ms, doc.index, doc.id) > after)
            and (not_before_ms is None or doc.timestamp_ms >= not_before_ms)  # type: ignore[operator]
        ]
        previous = after
        for start in range(0, len(selected), self.page_size):
            page = []
            for doc in selected[start : start + self.page_size]:
                page.append(self._doc(doc, previous))
                previous = page[-1].position
            yield page

    def read_unpositioned(self) -> Iterator[list[LogDoc]]:
        waiting = [
            doc
            for doc in self.cluster.docs
            if doc.timestamp_ms is None and not (doc.source.get("anomaly") or {}).get("dead_letter")
        ]
        for start in range(0, len(waiting), self.page_size):
            yield [
                LogDoc(doc.ref, (doc.index, doc.id), None, None, field_value(doc.source, self.message_field),
                       {self.timestamp_field: doc.source.get(self.timestamp_field)})
                for doc in waiting[start : start + self.page_size]
            ]

    def survey(self, cursor_ms: int | None, now_ms: int) -> Survey:
        stamped = [doc for doc in self.cluster.docs if doc.timestamp_ms is not None]
        newest = max((doc.timestamp_ms for doc in stamped), default=None)  # type: ignore[type-var]
        late = sum(
            1
            for doc in stamped
            if cursor_ms is not None and doc.timestamp_ms < cursor_ms and not doc.source.get("anomaly")  # type: ignore[operator]
        )
        return Survey(newest, late, 0)


class MemorySink:
    """`Sink` applying the same bulk actions as the OpenSearch sink to a `MemoryCluster`.

    `fail_after_actions`: raise after applying that many actions (a crash in the middle of a
    bulk write); `writes` counts calls.
    """

    def __init__(self, cluster: MemoryCluster, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.clock = clock
        self.writes = 0
        self.actions_applied = 0
        self.fail_after_actions: int | None = None

    def prepare(self) -> None:
        """Nothing to create in memory."""

    def write(self, scored: Sequence[ScoredGroup], dead: Sequence[DeadLetter]) -> WriteReport:
        self.writes += 1
        now = iso_ms(round(self.clock() * 1000)) or ""
        actions = build_actions(
            scored,
            dead,
            results_index="results",
            dead_letter_index="dead",
            checkpoint_id="memory",
            source="memory",
            recorded_at=now,
        )
        docs = self.cluster.by_ref()
        labelled = results = dead_lettered = missing = 0
        for action in actions:
            if self.fail_after_actions is not None and self.actions_applied >= self.fail_after_actions:
                self.fail_after_actions = None
                raise ConnectionResetError("injected crash in the middle of a bulk write")
            meta_line, body_line = action.lines.splitlines()
            meta, body = json.loads(meta_line), json.loads(body_line)
            (op, target), = meta.items()
            if op == "update":
                doc = docs.get(DocRef(target["_index"], target["_id"]))
                if doc is None:
                    missing += 1
                else:
                    doc.source["anomaly"] = body["doc"]["anomaly"]
                    labelled += action.purpose == "label"
            elif target["_index"] == "results":
                self.cluster.results[target["_id"]] = body
                results += 1
            else:
                self.cluster.dead_letters[target["_id"]] = body
                dead_lettered += 1
            self.actions_applied += 1
        return WriteReport(labelled=labelled, results=results, dead_lettered=dead_lettered, missing=missing)


class MemoryCheckpointStore:
    """`CheckpointStore` in a dict; stores the JSON form, so serialisation is exercised too."""

    def __init__(self) -> None:
        self.stored: dict[str, tuple[dict[str, Any], Version]] = {}
        self.saves = 0

    def load(self, checkpoint_id: str) -> tuple[Checkpoint, Version] | None:
        found = self.stored.get(checkpoint_id)
        if found is None:
            return None
        return checkpoint_from_json(copy.deepcopy(found[0])), found[1]

    def save(self, checkpoint: Checkpoint, expected: Version | None) -> Version:
        current = self.stored.get(checkpoint.checkpoint_id)
        if (current[1] if current else None) != expected:
            raise CheckpointConflict(f"checkpoint {checkpoint.checkpoint_id} moved")
        version = Version((current[1].seq_no + 1) if current else 0, 1)
        self.stored[checkpoint.checkpoint_id] = (checkpoint_to_json(checkpoint), version)
        self.saves += 1
        return version


@dataclass
class LeaseBoard:
    """Where memory leases of one source are recorded (the state index's role)."""

    holder: str | None = None
    expires: float = 0.0


class MemoryLease:
    """`Lease` on a `LeaseBoard` with an injectable clock."""

    def __init__(self, board: LeaseBoard, holder: str, ttl_s: float = 60.0, clock: Callable[[], float] = time.time):
        self.board = board
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock

    def acquire(self) -> LeaseStatus:
        now = self.clock()
        if self.board.holder not in (None, self.holder) and self.board.expires > now:
            return LeaseStatus(False, self.board.holder or "", round(self.board.expires * 1000))
        self.board.holder, self.board.expires = self.holder, now + self.ttl_s
        return LeaseStatus(True, self.holder, round(self.board.expires * 1000))

    def ensure_held(self) -> None:
        if self.board.holder != self.holder or self.board.expires <= self.clock():
            if self.board.holder == self.holder:
                self.board.expires = self.clock() + self.ttl_s  # expired but nobody took it: renew
                return
            raise LeaseLost(f"{self.holder} does not hold the lease")
        self.board.expires = self.clock() + self.ttl_s

    def release(self) -> None:
        if self.board.holder == self.holder:
            self.board.holder, self.board.expires = None, 0.0


def dead_letter_ids(refs: Sequence[DocRef]) -> set[str]:
    """The dead-letter document ids the sink uses for these source documents."""
    return {dead_letter_id(ref) for ref in refs}


@dataclass
class MemoryWorld:
    """A worker wired to memory twins, with handles on each part."""

    cluster: MemoryCluster
    worker: Worker
    source: MemorySource
    sink: MemorySink
    checkpoints: MemoryCheckpointStore
    lease: MemoryLease
    detector: FakeDetector
    metrics: WorkerMetrics


def memory_world(
    cluster: MemoryCluster,
    grouping: GroupingSettings,
    *,
    clock: Callable[[], float],
    checkpoints: MemoryCheckpointStore | None = None,
    lease: MemoryLease | None = None,
    detector: FakeDetector | None = None,
    batch_groups: int = 3,
    ingest_lag_s: float = 0.0,
    max_message_chars: int = 1000,
    max_dead_letter_ratio: float = 1.0,
    page_size: int = 7,
) -> MemoryWorld:
    """A `Worker` over `cluster` with small batches and pages, so every path is taken."""
    entries = EntryBuilder(grouping, "message", "ts", max_message_chars)
    source = MemorySource(cluster, key_fields=entries.fields, page_size=page_size)
    sink = MemorySink(cluster, clock)
    checkpoints = checkpoints or MemoryCheckpointStore()
    lease = lease or MemoryLease(LeaseBoard(), "worker-a", clock=clock)
    lease.acquire()
    detector = detector or FakeDetector()
    metrics = WorkerMetrics()
    worker = Worker(
        options=PassOptions(
            checkpoint_id="memory",
            ingest_lag_ms=round(ingest_lag_s * 1000),
            batch_groups=batch_groups,
            max_dead_letter_ratio=max_dead_letter_ratio,
        ),
        source=source,
        entries=entries,
        new_grouper=lambda: build_grouper(grouping),
        detector=detector,
        sink=sink,
        checkpoints=checkpoints,
        lease=lease,
        metrics=metrics,
        clock=clock,
    )
    return MemoryWorld(cluster, worker, source, sink, checkpoints, lease, detector, metrics)
