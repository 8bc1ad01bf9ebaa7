"""The worker's seams. Each docstring is the contract both the OpenSearch implementation and its
memory twin (tests/fakes.py) keep.

    Source.read -> Entry/DeadLetter -> Grouper.feed -> Detector.score -> Sink.write -> CheckpointStore.save

The pipeline (`enricher.pipeline`) is written against these alone, so a backfill is the same
pipeline with a bounded source and its own checkpoint id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from enricher.types import (
    Checkpoint,
    DeadLetter,
    Entry,
    Group,
    LogDoc,
    OpenGroupState,
    Position,
    ScoredGroup,
    Version,
    WriteReport,
)


class CheckpointConflict(Exception):
    """The stored checkpoint changed since it was loaded: another worker moved it."""


class LeaseLost(Exception):
    """This worker no longer holds the lease on its source (it expired and another took it)."""


class RetriesExhausted(Exception):
    """A request kept failing with retryable errors (429, 5xx, connection) past the retry budget.

    `cause` is the last error; the message quotes it.
    """

    def __init__(self, operation: str, attempts: int, elapsed_s: float, cause: BaseException) -> None:
        super().__init__(f"{operation}: still failing after {attempts} attempts in {elapsed_s:.0f} s: {cause}")
        self.operation = operation
        self.attempts = attempts
        self.cause = cause


class SinkError(Exception):
    """The cluster refused writes to the worker's own indices (results, dead-letter): a mapping or
    permission problem no retry can fix. `errors` holds the first item errors as evidence."""

    def __init__(self, message: str, errors: Sequence[dict[str, object]]) -> None:
        super().__init__(message)
        self.errors = list(errors)


@dataclass(frozen=True)
class Survey:
    """How the source stands relative to the cursor, for metrics and warnings.

    newest_ms: timestamp of the newest document (None: source empty).
    late: unlabelled documents older than the cursor (arrived after the lag allowance; only a
        backfill can still label them).
    future: documents stamped beyond now + the allowed skew (read once their time has come).
    """

    newest_ms: int | None
    late: int
    future: int


class Source(Protocol):
    """Reads log documents in a total order: (timestamp, index, tiebreaker)."""

    def read(self, after: Position | None, before_ms: int, not_before_ms: int | None = None) -> Iterator[list[LogDoc]]:
        """Non-empty pages of documents strictly after position `after` (None: from the start)
        whose timestamp is < `before_ms` (and >= `not_before_ms` if given), in position order.

        Each document's `previous` is the position of the one before it (`after` for the first),
        so the pipeline can resume exactly before any document. The iteration reads one
        consistent snapshot where the cluster supports it (point in time). Retryable errors are
        retried; raises `RetriesExhausted` when they persist.
        """
        ...

    def read_unpositioned(self) -> Iterator[list[LogDoc]]:
        """Pages of documents with no usable timestamp (missing or malformed) that have not been
        dead-lettered yet. They can never be placed in the order, so the pipeline dead-letters
        them; once marked they are not returned again."""
        ...

    def survey(self, cursor_ms: int | None, now_ms: int) -> Survey:
        """Counts for metrics: newest timestamp, late documents behind `cursor_ms`, future ones."""
        ...


class Grouper(Protocol):
    """Turns entries, in read order, into closed groups. Pure: no I/O, no clock.

    Groups close on event time only (gaps measured between documents' timestamps, windows closed
    when a later document or the watermark passes their end), so the partition into groups does
    not depend on when passes run or where a restart happened.
    """

    signature: str
    """Identifies the grouping settings; stored in checkpoints and hashed into group ids."""

    def feed(self, entry: Entry) -> list[Group]:
        """Add `entry` (after every entry fed so far); returns the groups that closed, in order."""
        ...

    def close_until(self, watermark_ms: int) -> list[Group]:
        """Close every group no entry with timestamp >= `watermark_ms` could still join."""
        ...

    def open_states(self) -> tuple[OpenGroupState, ...]:
        """The open groups, as stored in a checkpoint, ordered by their first member."""
        ...

    def restore(self, states: Sequence[OpenGroupState]) -> None:
        """Start from a checkpoint's open groups, with no members yet; follow with `replay`."""
        ...

    def replay(self, entry: Entry) -> None:
        """Re-attach an entry read again up to the checkpoint's read position: it joins the
        restored open groups it belongs to and nothing else (the rest was written already)."""
        ...


class Sink(Protocol):
    """Writes verdicts and dead letters; every id is deterministic, so repeating a write is safe."""

    def prepare(self) -> None:
        """Create index templates and indices for results and dead letters, and map the
        `anomaly` fields on every source index. Idempotent."""
        ...

    def write(self, scored: Sequence[ScoredGroup], dead: Sequence[DeadLetter]) -> WriteReport:
        """Label every member document of `scored` (partial update of `anomaly`), index one
        results document per group and one dead-letter document per `dead` entry, and mark the
        dead-lettered source documents.

        Returns only when every action was acknowledged; per-item 429/5xx are retried, a label
        the cluster rejects is dead-lettered instead (`WriteReport.rejected`), deleted source
        documents are counted as `missing`. Raises `RetriesExhausted` when retryable errors
        persist and `SinkError` when the worker's own indices refuse documents.
        """
        ...


class CheckpointStore(Protocol):
    """Durable checkpoints with compare-and-set."""

    def load(self, checkpoint_id: str) -> tuple[Checkpoint, Version] | None:
        """The stored checkpoint and its version, or None if there is none yet."""
        ...

    def save(self, checkpoint: Checkpoint, expected: Version | None) -> Version:
        """Store `checkpoint` if the stored version is still `expected` (None: must not exist);
        returns the new version. Raises `CheckpointConflict` otherwise."""
        ...


@dataclass(frozen=True)
class LeaseStatus:
    """Result of trying to take the lease: held by us, or who holds it until when."""

    held: bool
    holder: str
    expires_ms: int


class Lease(Protocol):
    """Only one active worker per source: the lease holder."""

    holder: str

    def acquire(self) -> LeaseStatus:
        """Take or renew the lease if it is free, expired or ours; else report the holder."""
        ...

    def ensure_held(self) -> None:
        """Renew if a third of the lease time has passed since the last renewal.
        Raises `LeaseLost` if another worker holds it now."""
        ...

    def release(self) -> None:
        """Give the lease up (a standby can take over at once). Safe to call when not held."""
        ...

