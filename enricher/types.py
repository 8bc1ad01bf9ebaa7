"""Values that flow through the worker: source -> grouper -> detector -> sink -> checkpoint.

All frozen: a stage never changes what an earlier stage produced. Positions are the sort values
the source orders documents by (timestamp, index, tiebreaker); tuples of them compare in read
order, which is what the cursor and the grouper's replay rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from model.detector import Verdict

Position = tuple[Any, ...]
"""Sort values of one document, e.g. (1226262930000, "hdfs-2008.11", "17"); increasing in read order."""


@dataclass(frozen=True, order=True)
class DocRef:
    """Where a document lives: its concrete index and `_id`."""

    index: str
    id: str


@dataclass(frozen=True)
class LogDoc:
    """One source document as read, not yet validated.

    position: its sort values; `previous`: the position of the document read just before it
    (None at the very start), i.e. what to search after to read this document again.
    timestamp_ms: event time, milliseconds since the epoch (None when the document has no usable
    timestamp; the source returns such documents only from `read_unpositioned`).
    message: the raw value of the message field (None when absent; may be any JSON type).
    fields: values of the other configured fields (session key, partition), by field name.
    """

    ref: DocRef
    position: Position
    previous: Position | None
    timestamp_ms: int | None
    message: Any
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A document accepted for scoring: a message string (cut to the configured length) and the
    keys that place it in groups (session keys or a partition value; the first one is primary)."""

    ref: DocRef
    position: Position
    previous: Position | None
    timestamp_ms: int
    message: str
    keys: tuple[str, ...]
    truncated: bool = False


DeadLetterReason = Literal[
    "missing_message",
    "message_not_string",
    "no_session_key",
    "missing_timestamp",
    "label_rejected",
]


@dataclass(frozen=True)
class DeadLetter:
    """A document that cannot be scored, with the reason code and a human-readable detail."""

    ref: DocRef
    reason: DeadLetterReason
    detail: str
    timestamp_ms: int | None
    message: Any


GroupKind = Literal["session", "time_window", "count_window"]
CloseReason = Literal["gap", "max_length", "window_end"]


@dataclass(frozen=True)
class Group:
    """A closed sequence, ready for the detector.

    group_id: deterministic (grouping settings, key, first document or window start), so a replay
        writes the same results document.
    entries: members in read order. `labels[i]` says whether entry i takes its own label from
        this group (each document is labelled by exactly one group, its primary one).
    window: [start, end) in ms for time windows, else None.
    """

    group_id: str
    kind: GroupKind
    key: str
    entries: tuple[Entry, ...]
    labels: tuple[bool, ...]
    closed_by: CloseReason
    window: tuple[int, int] | None = None

    @property
    def messages(self) -> list[str]:
        return [entry.message for entry in self.entries]

    @property
    def start_ms(self) -> int:
        return self.entries[0].timestamp_ms

    @property
    def end_ms(self) -> int:
        return self.entries[-1].timestamp_ms


@dataclass(frozen=True)
class OpenGroupState:
    """What a checkpoint keeps of a group that is still open, enough to rebuild it by re-reading.

    Members are not stored: on restart the source is re-read from `resume_after` and the grouper
    re-attaches each document at or after `first` whose key matches (and, for windows, whose time
    falls in `window`).
    """

    group_id: str
    key: str
    first: Position
    resume_after: Position | None
    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class Checkpoint:
    """Durable progress of one worker (or backfill) over one source.

    read_position: every document up to here has been written, dead-lettered, or is a member of
        one of `open_groups`. None: nothing read yet.
    resume_after: where a restart re-reads from: before the first member of the earliest open
        group (the cursor never passes an unwritten group), or `read_position` when none is open.
    grouping: signature of the grouping settings the open groups were formed under.
    """

    checkpoint_id: str
    grouping: str
    read_position: Position | None
    resume_after: Position | None
    open_groups: tuple[OpenGroupState, ...] = ()
    read_timestamp_ms: int | None = None


@dataclass(frozen=True)
class Version:
    """Optimistic-concurrency token of a stored document (OpenSearch seq_no + primary_term)."""

    seq_no: int
    primary_term: int


def write_preconditions(expected: Version | None) -> dict[str, Any]:
    """Params of an optimistic index request: create the document if none was read (`expected`
    None), else overwrite it only while it is still at the version read."""
    if expected is None:
        return {"op_type": "create"}
    return {"if_seq_no": expected.seq_no, "if_primary_term": expected.primary_term}


@dataclass(frozen=True)
class ScoredGroup:
    """A group with the detector's verdict and the time it was scored (ISO 8601, UTC)."""

    group: Group
    verdict: Verdict
    scored_at: str


@dataclass(frozen=True)
class WriteReport:
    """Outcome of one sink write; every action is counted in exactly one of these.

    labelled: source documents that received their label.
    results: group documents written to the results index.
    dead_lettered: dead-letter documents written (including labels the cluster rejected).
    missing: source documents that no longer exist (deleted between read and write).
    retried: item-level retries (429/5xx per item) before success.
    rejected: the documents whose labels the cluster refused, moved to the dead-letter index.
    """

    labelled: int = 0
    results: int = 0
    dead_lettered: int = 0
    missing: int = 0
    retried: int = 0
    rejected: tuple[DeadLetter, ...] = ()
