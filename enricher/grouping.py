"""Pure grouping: documents -> entries (or dead letters) -> closed groups. No I/O, no clock.

Modes (`GroupingSettings.mode`):
- session: one group per session key (a field, or each distinct regex match in the message,
  e.g. HDFS block ids); closes after `inactivity_gap_s` without a new member, or at `max_length`.
- count_window: `count` consecutive documents (per partition value); closes when full or after
  the inactivity gap, so a tail never waits forever.
- time_window: [start, start + window_s) windows every `step_s` (tumbling when equal, sliding
  when smaller), per partition value; closes once event time reaches the window's end.

Time is event time only: a document with timestamp t proves every group whose deadline lies
before t complete, because the source delivers documents in timestamp order. The same partition
into groups results however the stream is cut into passes or restarts.

A document in several groups (a line naming two blocks, overlapping windows) is a member of
each, but takes its own label from one: its first session key, or its earliest window.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

from enricher.settings import GroupingSettings
from enricher.types import (
    CloseReason,
    DeadLetter,
    Entry,
    Group,
    GroupKind,
    LogDoc,
    OpenGroupState,
    Position,
)


def _digest(*parts: object, size: int = 12) -> str:
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def grouping_signature(settings: GroupingSettings) -> str:
    """A short name for the settings that shape groups, e.g. "session-3f09c1aa52e1".

    Two configurations with the same signature form the same groups from the same documents;
    changing any of these settings changes every group id (no overwriting old results).
    """
    relevant: dict[str, Any] = {"mode": settings.mode}
    if settings.mode == "session":
        relevant |= {
            "key": ["field", settings.session_field] if settings.session_field else ["regex", settings.session_regex],
            "gap": settings.inactivity_gap_s,
            "max": settings.max_length,
        }
    elif settings.mode == "count_window":
        relevant |= {"count": settings.count, "gap": settings.inactivity_gap_s, "by": settings.partition_field}
    else:
        step = settings.step_s or settings.window_s
        relevant |= {"window": settings.window_s, "step": step, "by": settings.partition_field}
    return f"{settings.mode}-{_digest(json.dumps(relevant, sort_keys=True), size=6)}"


def field_value(source: dict[str, Any], path: str) -> Any:
    """The value at dotted `path` in a `_source` dict, whether stored nested ({"log": {"msg": ..}})
    or with a dotted key ({"log.msg": ..}); None when absent."""
    if path in source:
        return source[path]
    head, dot, rest = path.partition(".")
    while dot:
        value = source.get(head)
        if isinstance(value, dict):
            return field_value(value, rest)
        more, dot, rest = rest.partition(".")
        head = f"{head}.{more}"
    return None


def _key_values(value: Any) -> list[str]:
    """Session or partition keys from a field value: scalars as text, lists element by element."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return list(dict.fromkeys(str(item) for item in items if item is not None and not isinstance(item, dict)))


class EntryBuilder:
    """Validates a document and turns it into an `Entry`, or a `DeadLetter` with the reason.

    Messages longer than `max_message_chars` are cut (and flagged), never dropped.
    """

    def __init__(
        self, grouping: GroupingSettings, message_field: str, timestamp_field: str, max_message_chars: int
    ) -> None:
        self.grouping = grouping
        self.message_field = message_field
        self.timestamp_field = timestamp_field
        self.max_message_chars = max_message_chars
        session_by_regex = grouping.mode == "session" and grouping.session_field is None
        self._regex = re.compile(grouping.session_regex) if session_by_regex and grouping.session_regex else None
        self._key_field = grouping.session_field if grouping.mode == "session" else grouping.partition_field

    @property
    def fields(self) -> list[str]:
        """Source fields besides timestamp and message that the builder reads."""
        return [self._key_field] if self._key_field else []

    def __call__(self, doc: LogDoc) -> Entry | DeadLetter:
        message = doc.message
        if message is None:
            return self._dead(doc, "missing_message", f"field {self.message_field!r} is missing or null")
        if not isinstance(message, str):
            kind = type(message).__name__
            return self._dead(doc, "message_not_string", f"field {self.message_field!r} holds a {kind}, not a string")
        keys = self._keys(doc, message)
        if not keys:
            where = f"regex {self._regex.pattern!r} in the message" if self._regex else f"field {self._key_field!r}"
            return self._dead(doc, "no_session_key", f"no session key: nothing matches {where}")
        assert doc.timestamp_ms is not None, "positioned documents always carry a timestamp"
        truncated = len(message) > self.max_message_chars
        return Entry(
            ref=doc.ref,
            position=doc.position,
            previous=doc.previous,
            timestamp_ms=doc.timestamp_ms,
            message=message[: self.max_message_chars] if truncated else message,
            keys=tuple(keys),
            truncated=truncated,
        )

    def unpositioned(self, doc: LogDoc) -> DeadLetter:
        """The dead letter of a document without a usable timestamp (missing, or malformed and
        ignored by the mapping); such a document has no place in the read order."""
        raw = doc.fields.get(self.timestamp_field)
        problem = "is missing" if raw is None else f"holds {raw!r}, which the index could not read as a date"
        return self._dead(doc, "missing_timestamp", f"field {self.timestamp_field!r} {problem}")

    def _keys(self, doc: LogDoc, message: str) -> list[str]:
        if self._regex is not None:
            return list(dict.fromkeys(self._regex.findall(message)))
        if self.grouping.mode == "session":
            return _key_values(doc.fields.get(self._key_field or ""))
        # Windows: documents without the partition field share the partition "".
        values = _key_values(doc.fields.get(self._key_field)) if self._key_field else []
        return values[:1] or [""]

    @staticmethod
    def _dead(doc: LogDoc, reason: Any, detail: str) -> DeadLetter:
        return DeadLetter(doc.ref, reason, detail, doc.timestamp_ms, doc.message)


class _OpenGroup:
    """A group still accepting members (mutable; internal to the groupers)."""

    __slots__ = ("group_id", "key", "first", "resume_after", "window", "entries", "labels", "last_ms", "scheduled")

    def __init__(
        self, group_id: str, key: str, first: Position, resume_after: Position | None, window: tuple[int, int] | None
    ) -> None:
        self.group_id = group_id
        self.key = key
        self.first = first
        self.resume_after = resume_after
        self.window = window
        self.entries: list[Entry] = []
        self.labels: list[bool] = []
        self.last_ms = -1
        self.scheduled: int | None = None  # the deadline last pushed on the heap

    def add(self, entry: Entry, labels_entry: bool) -> None:
        self.entries.append(entry)
        self.labels.append(labels_entry)
        self.last_ms = entry.timestamp_ms

    def state(self) -> OpenGroupState:
        return OpenGroupState(self.group_id, self.key, self.first, self.resume_after, self.window)


class _Slot:
    """Where an entry goes: the open-group slot, its key, window, and whether it labels the entry."""

    __slots__ = ("slot", "key", "window", "labels_entry")

    def __init__(self, slot: Hashable, key: str, window: tuple[int, int] | None, labels_entry: bool) -> None:
        self.slot = slot
        self.key = key
        self.window = window
        self.labels_entry = labels_entry


class _EventTimeGrouper(ABC):
    """Open groups in slots, closed by event-time deadlines kept in a heap (lazily invalidated)."""

    kind: GroupKind
    close_reason: CloseReason

    def __init__(self, signature: str, max_length: int | None) -> None:
        self.signature = signature
        self.max_length = max_length
        self._open: dict[Hashable, _OpenGroup] = {}
        self._deadlines: list[tuple[int, int, Hashable]] = []
        self._order = itertools.count()
        self._replayed = False

    # Subclasses decide where entries go and when a group's time is up.
    @abstractmethod
    def _slots(self, entry: Entry) -> list[_Slot]:
        """The slots `entry` joins, the one that labels it first."""

    @abstractmethod
    def _deadline(self, group: _OpenGroup) -> int:
        """The group closes once an event time greater than this is seen."""

    @abstractmethod
    def _slot_of(self, state: OpenGroupState) -> Hashable:
        """The slot a restored group occupies."""

    @abstractmethod
    def _new_group_id(self, slot: _Slot, entry: Entry) -> str:
        """The deterministic id of a group opened in `slot` by `entry`."""

    # The Grouper protocol.
    def feed(self, entry: Entry) -> list[Group]:
        closed = self.close_until(entry.timestamp_ms)
        for slot in self._slots(entry):
            group = self._open.get(slot.slot)
            if group is None:
                group_id = self._new_group_id(slot, entry)
                group = _OpenGroup(group_id, slot.key, entry.position, entry.previous, slot.window)
                self._open[slot.slot] = group
            self._attach(slot, group, entry)
            if self.max_length is not None and len(group.entries) >= self.max_length:
                closed.append(self._close(slot.slot, "max_length"))
        return closed

    def close_until(self, watermark_ms: int) -> list[Group]:
        if self._replayed:
            self._drop_memberless()
        closed: list[Group] = []
        while self._deadlines and self._deadlines[0][0] < watermark_ms:
            deadline, _, slot = heapq.heappop(self._deadlines)
            group = self._open.get(slot)
            if group is not None and group.scheduled == deadline:
                closed.append(self._close(slot, self.close_reason))
        return closed

    def open_states(self) -> tuple[OpenGroupState, ...]:
        return tuple(sorted((group.state() for group in self._open.values()), key=lambda state: state.first))

    def restore(self, states: Sequence[OpenGroupState]) -> None:
        self._open = {}
        self._deadlines = []
        for state in states:
            self._open[self._slot_of(state)] = _OpenGroup(
                state.group_id, state.key, state.first, state.resume_after, state.window
            )
        self._replayed = True

    def replay(self, entry: Entry) -> None:
        for slot in self._slots(entry):
            group = self._open.get(slot.slot)
            if group is not None and entry.position >= group.first:
                self._attach(slot, group, entry)

    # Internals.
    def _attach(self, slot: _Slot, group: _OpenGroup, entry: Entry) -> None:
        group.add(entry, slot.labels_entry)
        deadline = self._deadline(group)
        if deadline != group.scheduled:
            group.scheduled = deadline
            heapq.heappush(self._deadlines, (deadline, next(self._order), slot.slot))

    def _drop_memberless(self) -> None:
        """After a replay: a restored group that got no member back lost every member (deleted
        from the source since); there is nothing left to score."""
        self._open = {slot: group for slot, group in self._open.items() if group.entries}
        self._replayed = False

    def _close(self, slot: Hashable, reason: CloseReason) -> Group:
        group = self._open.pop(slot)
        return Group(
            group_id=group.group_id,
            kind=self.kind,
            key=group.key,
            entries=tuple(group.entries),
            labels=tuple(group.labels),
            closed_by=reason,
            window=group.window,
        )


class KeyedGrouper(_EventTimeGrouper):
    """Sessions (one open group per session key) and count windows (one per partition).

    A group closes when an entry arrives more than `gap_ms` after its last member (or the
    watermark passes that point), or when it reaches `max_length` members.
    """

    close_reason: CloseReason = "gap"

    def __init__(self, kind: GroupKind, signature: str, gap_ms: int, max_length: int) -> None:
        super().__init__(signature, max_length)
        self.kind = kind
        self.gap_ms = gap_ms

    def _slots(self, entry: Entry) -> list[_Slot]:
        return [_Slot(key, key, None, index == 0) for index, key in enumerate(entry.keys)]

    def _deadline(self, group: _OpenGroup) -> int:
        return group.last_ms + self.gap_ms

    def _slot_of(self, state: OpenGroupState) -> Hashable:
        return state.key

    def _new_group_id(self, slot: _Slot, entry: Entry) -> str:
        return _digest(self.signature, slot.key, entry.ref.index, entry.ref.id)


class TimeWindowGrouper(_EventTimeGrouper):
    """Windows [k*step, k*step + size) per partition; an entry joins every window holding its
    timestamp and takes its label from the earliest."""

    kind: GroupKind = "time_window"
    close_reason: CloseReason = "window_end"

    def __init__(self, signature: str, size_ms: int, step_ms: int) -> None:
        super().__init__(signature, None)
        self.size_ms = size_ms
        self.step_ms = step_ms

    def windows(self, timestamp_ms: int) -> list[tuple[int, int]]:
        """Every window [start, end) that holds `timestamp_ms`, earliest first."""
        first = (timestamp_ms - self.size_ms) // self.step_ms + 1
        last = timestamp_ms // self.step_ms
        return [(k * self.step_ms, k * self.step_ms + self.size_ms) for k in range(first, last + 1)]

    def _slots(self, entry: Entry) -> list[_Slot]:
        partition = entry.keys[0]
        return [
            _Slot((partition, window[0]), partition, window, index == 0)
            for index, window in enumerate(self.windows(entry.timestamp_ms))
        ]

    def _deadline(self, group: _OpenGroup) -> int:
        assert group.window is not None
        return group.window[1] - 1

    def _slot_of(self, state: OpenGroupState) -> Hashable:
        assert state.window is not None
        return (state.key, state.window[0])

    def _new_group_id(self, slot: _Slot, entry: Entry) -> str:
        assert slot.window is not None
        return _digest(self.signature, slot.key, slot.window[0])


def build_grouper(settings: GroupingSettings) -> KeyedGrouper | TimeWindowGrouper:
    """The grouper the settings describe (validated by `GroupingSettings`)."""
    signature = grouping_signature(settings)
    gap_ms = round(settings.inactivity_gap_s * 1000)
    if settings.mode == "session":
        return KeyedGrouper("session", signature, gap_ms, settings.max_length)
    if settings.mode == "count_window":
        return KeyedGrouper("count_window", signature, gap_ms, settings.count)
    size_ms = round(settings.window_s * 1000)
    return TimeWindowGrouper(signature, size_ms, round((settings.step_s or settings.window_s) * 1000))


def resume_point(states: Sequence[OpenGroupState], read_position: Position | None) -> Position | None:
    """Where a restart re-reads from: before the earliest open group's first member, or the read
    position when nothing is open. None means from the start."""
    if not states:
        return read_position
    starts = [state.resume_after for state in states]
    if any(start is None for start in starts):
        return None
    return min(start for start in starts if start is not None)
