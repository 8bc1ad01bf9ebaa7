"""Writing verdicts back to OpenSearch: labels on the source documents, one results document per
group, dead letters with their reason. Idempotent by construction.

    scored groups + dead letters -> actions (pure) -> chunks by count and bytes -> _bulk
    -> per-item outcome: ok | retry (429/5xx, re-sent alone with backoff) | missing | rejected

Every id is deterministic: source documents are addressed by their own (index, _id), results
documents by the group id, dead letters by a digest of the source document's (index, _id). A
replay therefore overwrites the same documents with the same content. The one field that may
differ is `scored_at`, the time of the write: it says when a label was last (re)written and is
never part of what makes two writes "the same" (see `content_of`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import RequestError, TransportError

from enricher.client import Retrier, classify_status, ensure_index
from enricher.interfaces import SinkError
from enricher.settings import SinkSettings, env_name
from enricher.types import DeadLetter, DocRef, ScoredGroup, WriteReport
from model.errors import UserError

log = logging.getLogger(__name__)

ANOMALY = "anomaly"
LABEL_NAMES = {0: "normal", 1: "anomalous"}
PREVIEW_CHARS = 1000
# Only what `classify_item` and `_error_text` read: a full `_bulk` response echoes index, id,
# version, shard counts and sequence numbers for every item, ~5x the bytes to build and parse.
BULK_FILTER = "items.*.status,items.*.error"
# Fields that record when, not what: excluded when comparing two writes for sameness.
TIME_FIELDS = frozenset({"scored_at", "recorded_at"})

ANOMALY_MAPPING: dict[str, Any] = {
    "properties": {
        "label": {"type": "keyword"},
        "score": {"type": "float"},
        "group_id": {"type": "keyword"},
        "model_version": {"type": "keyword"},
        "scored_at": {"type": "date"},
        "top_lines": {"type": "keyword"},
        "truncated": {"type": "boolean"},
        "dead_letter": {"type": "keyword"},
    }
}
_REF_MAPPING = {"properties": {"index": {"type": "keyword"}, "id": {"type": "keyword"}}}
RESULTS_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "group_id": {"type": "keyword"},
        "checkpoint_id": {"type": "keyword"},
        "source": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "key": {"type": "keyword"},
        "label": {"type": "keyword"},
        "score": {"type": "float"},
        "answer": {"type": "keyword"},
        "parse_failed": {"type": "boolean"},
        "model_version": {"type": "keyword"},
        "start": {"type": "date"},
        "end": {"type": "date"},
        "window_start": {"type": "date"},
        "window_end": {"type": "date"},
        "size": {"type": "integer"},
        "closed_by": {"type": "keyword"},
        "truncated_messages": {"type": "integer"},
        "docs": _REF_MAPPING,
        "top_lines": {"properties": {**_REF_MAPPING["properties"], "message": {"type": "text"}}},
        "scored_at": {"type": "date"},
    },
}
DEAD_LETTER_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "source_index": {"type": "keyword"},
        "source_id": {"type": "keyword"},
        "reason": {"type": "keyword"},
        "detail": {"type": "text"},
        "timestamp": {"type": "date"},
        "message_type": {"type": "keyword"},
        "message_chars": {"type": "integer"},
        "message_preview": {"type": "text"},
        "checkpoint_id": {"type": "keyword"},
        "recorded_at": {"type": "date"},
    },
}


# ---------------------------------------------------------------------------------------------
# Pure: documents and actions.


def iso_ms(epoch_ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds; None stays None."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def label_name(label: int) -> str:
    """The stored label word for a verdict's 0/1 label."""
    return LABEL_NAMES[label]


def dead_letter_id(ref: DocRef) -> str:
    """The dead-letter document id of a source document (stable across replays and workers)."""
    return hashlib.blake2b(f"{ref.index}\x1f{ref.id}".encode(), digest_size=12).hexdigest()


def top_line_refs(scored: ScoredGroup) -> list[DocRef]:
    """The members the detector points at (LogLLaMA's line-level explanation), in its order."""
    entries = scored.group.entries
    return [entries[i].ref for i in scored.verdict.positions if 0 <= i < len(entries)]


def label_fields(scored: ScoredGroup, truncated: bool) -> dict[str, Any]:
    """The `anomaly` object written on a document labelled by `scored`.

    Every key is always present (null when not applicable), so a partial update replaces the
    whole object rather than leaving fields of an earlier write behind.
    """
    tops = top_line_refs(scored)
    return {
        "label": label_name(scored.verdict.label),
        "score": scored.verdict.score,
        "group_id": scored.group.group_id,
        "model_version": scored.verdict.model_version,
        "scored_at": scored.scored_at,
        "top_lines": [ref.id for ref in tops] if tops else None,
        "truncated": truncated,
        "dead_letter": None,
    }


def dead_letter_fields(dead: DeadLetter, recorded_at: str) -> dict[str, Any]:
    """The `anomaly` object marking a source document as dead-lettered (see `label_fields`)."""
    return {
        "label": None,
        "score": None,
        "group_id": None,
        "model_version": None,
        "scored_at": recorded_at,
        "top_lines": None,
        "truncated": None,
        "dead_letter": dead.reason,
    }


def results_document(scored: ScoredGroup, checkpoint_id: str, source: str) -> dict[str, Any]:
    """The results-index document of one scored group (id: the group id)."""
    group, verdict = scored.group, scored.verdict
    entries = {entry.ref: entry for entry in group.entries}
    window = group.window
    return {
        "group_id": group.group_id,
        "checkpoint_id": checkpoint_id,
        "source": source,
        "kind": group.kind,
        "key": group.key,
        "label": label_name(verdict.label),
        "score": verdict.score,
        "answer": verdict.answer,
        "parse_failed": verdict.parse_failed,
        "model_version": verdict.model_version,
        "start": iso_ms(group.start_ms),
        "end": iso_ms(group.end_ms),
        "window_start": iso_ms(window[0]) if window else None,
        "window_end": iso_ms(window[1]) if window else None,
        "size": len(group.entries),
        "closed_by": group.closed_by,
        "truncated_messages": sum(entry.truncated for entry in group.entries),
        "docs": [{"index": entry.ref.index, "id": entry.ref.id} for entry in group.entries],
        "top_lines": [
            {"index": ref.index, "id": ref.id, "message": entries[ref].message[:PREVIEW_CHARS]}
            for ref in top_line_refs(scored)
        ],
        "scored_at": scored.scored_at,
    }


def dead_letter_document(dead: DeadLetter, checkpoint_id: str, recorded_at: str) -> dict[str, Any]:
    """The dead-letter-index document for `dead`: where it came from, why, and a preview."""
    message = dead.message
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return {
        "source_index": dead.ref.index,
        "source_id": dead.ref.id,
        "reason": dead.reason,
        "detail": dead.detail,
        "timestamp": iso_ms(dead.timestamp_ms),
        "message_type": "missing" if message is None else type(message).__name__,
        "message_chars": len(text) if message is not None else 0,
        "message_preview": text[:PREVIEW_CHARS] if message is not None else None,
        "checkpoint_id": checkpoint_id,
        "recorded_at": recorded_at,
    }


def content_of(document: dict[str, Any]) -> dict[str, Any]:
    """What two writes of the same item must agree on: the document without its time fields
    (also inside `anomaly`). Replays are idempotent in this sense."""
    content = {key: value for key, value in document.items() if key not in TIME_FIELDS}
    if isinstance(content.get(ANOMALY), dict):
        content[ANOMALY] = content_of(content[ANOMALY])
    return content


Purpose = Literal["label", "result", "dead_letter", "mark"]


@dataclass(frozen=True)
class Action:
    """One bulk action, serialised, with what it is for (to count and to react to failures)."""

    purpose: Purpose
    ref: DocRef  # the source document it concerns (for results: the group's first member)
    lines: str  # NDJSON: action line + document line, newline-terminated
    dead: DeadLetter | None = None  # for dead_letter/mark actions


def _json(value: dict[str, Any]) -> str:
    """Compact JSON. orjson: a worker pass encodes two documents per log line, which with the
    standard library was ~0.2 CPU s per 20,000 lines beside the detector. It refuses integers
    beyond 64 bits and lone surrogates (both can come from a source document); the standard
    library writes those."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def _lines(meta: dict[str, Any], body: dict[str, Any]) -> str:
    return _json(meta) + "\n" + _json(body) + "\n"


def build_actions(
    scored: Sequence[ScoredGroup],
    dead: Sequence[DeadLetter],
    *,
    results_index: str,
    dead_letter_index: str,
    checkpoint_id: str,
    source: str,
    recorded_at: str,
) -> list[Action]:
    """All bulk actions for one batch: per group its labels then its results document; per dead
    letter its dead-letter document then the mark on its source document."""
    actions: list[Action] = []
    for item in scored:
        for entry, labels in zip(item.group.entries, item.group.labels, strict=True):
            if labels:
                meta = {"update": {"_index": entry.ref.index, "_id": entry.ref.id, "retry_on_conflict": 3}}
                body = {"doc": {ANOMALY: label_fields(item, entry.truncated)}}
                actions.append(Action("label", entry.ref, _lines(meta, body)))
        meta = {"index": {"_index": results_index, "_id": item.group.group_id}}
        document = results_document(item, checkpoint_id, source)
        actions.append(Action("result", item.group.entries[0].ref, _lines(meta, document)))
    for letter in dead:
        actions.extend(dead_letter_actions(letter, dead_letter_index, checkpoint_id, recorded_at))
    return actions


def dead_letter_actions(letter: DeadLetter, dead_letter_index: str, checkpoint_id: str, recorded_at: str) -> list[Action]:
    """The dead-letter document, then the mark on the source document (skipped for a document
    whose label the cluster rejected: the same mapping would reject the mark)."""
    meta = {"index": {"_index": dead_letter_index, "_id": dead_letter_id(letter.ref)}}
    actions = [
        Action("dead_letter", letter.ref, _lines(meta, dead_letter_document(letter, checkpoint_id, recorded_at)), letter)
    ]
    if letter.reason != "label_rejected":
        mark = {"update": {"_index": letter.ref.index, "_id": letter.ref.id, "retry_on_conflict": 3}}
        body = {"doc": {ANOMALY: dead_letter_fields(letter, recorded_at)}}
        actions.append(Action("mark", letter.ref, _lines(mark, body), letter))
    return actions


def chunk_actions(actions: Sequence[Action], max_count: int, max_bytes: int) -> Iterator[list[Action]]:
    """Consecutive chunks of at most `max_count` actions and `max_bytes` bytes (an action larger
    than `max_bytes` travels alone)."""
    chunk: list[Action] = []
    size = 0
    for action in actions:
        length = len(action.lines.encode())
        if chunk and (len(chunk) >= max_count or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(action)
        size += length
    if chunk:
        yield chunk


ItemOutcome = Literal["ok", "retry", "missing", "rejected"]


def classify_item(item: dict[str, Any]) -> ItemOutcome:
    """The outcome of one `_bulk` response item (`{"update": {"status": ..., "error": ...}}`)."""
    result = next(iter(item.values()))
    status = int(result.get("status", 500))
    if 200 <= status < 300:
        return "ok"
    if status == 404:
        return "missing"
    if classify_status(status) == "retry":
        return "retry"
    return "rejected"


def _error_text(item: dict[str, Any]) -> str:
    error = next(iter(item.values())).get("error", {})
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)


# ---------------------------------------------------------------------------------------------
# I/O.


class _ItemsPending(TransportError):
    """Raised inside a bulk round when items came back 429/5xx, so `Retrier` backs off and the
    round re-sends only those items."""

    def __init__(self, count: int) -> None:
        super().__init__(429, "bulk items to retry", {"items": count})


@dataclass
class _Progress:
    labelled: int = 0
    results: int = 0
    dead_lettered: int = 0
    missing: int = 0
    retried: int = 0
    rejected: list[DeadLetter] = field(default_factory=list)


class OpenSearchSink:
    """`Sink` writing to an OpenSearch cluster through `_bulk`."""

    def __init__(
        self,
        client: OpenSearch,
        settings: SinkSettings,
        *,
        source: str,
        checkpoint_id: str,
        retrier: Retrier,
        clock: Callable[[], float],
        source_indices: Callable[[], list[str]],
    ) -> None:
        self.client = client
        self.settings = settings
        self.source = source
        self.checkpoint_id = checkpoint_id
        self.retrier = retrier
        self.clock = clock
        self.source_indices = source_indices
        self._own_indices_ready = False
        self._mapped: set[str] = set()

    # -- preparation ---------------------------------------------------------------------------

    def prepare(self) -> None:
        # The worker's own indices once per process (their templates recreate them if deleted);
        # source indices whenever new ones appear (daily indices, rollover).
        if not self._own_indices_ready:
            for index, mapping in (
                (self.settings.results_index, RESULTS_MAPPING),
                (self.settings.dead_letter_index, DEAD_LETTER_MAPPING),
            ):
                ensure_index(self.client, self.retrier, index, mapping)
            self._own_indices_ready = True
        for index in self.source_indices():
            if index in self._mapped:
                continue
            body = {"properties": {ANOMALY: ANOMALY_MAPPING}}
            try:
                self.retrier.call(
                    f"map {ANOMALY} fields on {index}",
                    functools.partial(self.client.indices.put_mapping, index=index, body=body),
                )
            except RequestError as error:
                raise UserError(
                    f"source index {index}: cannot add the '{ANOMALY}' fields the worker writes ({error.info}); "
                    f"remove or rename the existing '{ANOMALY}' field in its mapping"
                ) from None
            self._mapped.add(index)

    # -- writing -------------------------------------------------------------------------------

    def write(self, scored: Sequence[ScoredGroup], dead: Sequence[DeadLetter]) -> WriteReport:
        now = iso_ms(round(self.clock() * 1000))
        assert now is not None
        pending = build_actions(
            scored,
            dead,
            results_index=self.settings.results_index,
            dead_letter_index=self.settings.dead_letter_index,
            checkpoint_id=self.checkpoint_id,
            source=self.source,
            recorded_at=now,
        )
        progress = _Progress()
        if pending:
            self.retrier.call("bulk write", lambda: self._round(pending, progress, now))
        return WriteReport(
            labelled=progress.labelled,
            results=progress.results,
            dead_lettered=progress.dead_lettered,
            missing=progress.missing,
            retried=progress.retried,
            rejected=tuple(progress.rejected),
        )

    def _round(self, pending: list[Action], progress: _Progress, now: str) -> None:
        """Send every pending action, and at once what their outcomes lead to (dead letters for
        rejected labels); leave in `pending` only the items to re-send after a backoff."""
        while pending:
            retry: list[Action] = []
            follow_up: list[Action] = []
            chunks = list(chunk_actions(pending, self.settings.bulk_actions, self.settings.bulk_bytes))
            for number, chunk in enumerate(chunks):
                try:
                    response = self.client.bulk(body="".join(action.lines for action in chunk), filter_path=BULK_FILTER)
                except Exception:
                    # Which items of this chunk applied is unknown: keep it and every later one.
                    # Re-sending is harmless, every write being idempotent.
                    pending[:] = retry + follow_up + [action for rest in chunks[number:] for action in rest]
                    raise
                for action, item in zip(chunk, response["items"], strict=True):
                    outcome = self._outcome(action, item, progress, now)
                    if outcome == "retry":
                        retry.append(action)
                    elif isinstance(outcome, list):
                        follow_up.extend(outcome)
            if retry:
                pending[:] = retry + follow_up
                progress.retried += len(retry)
                raise _ItemsPending(len(retry))
            pending[:] = follow_up

    def _outcome(
        self, action: Action, item: dict[str, Any], progress: _Progress, now: str
    ) -> Literal["retry"] | list[Action]:
        """Count one item's outcome; returns "retry", or the new actions it leads to."""
        outcome = classify_item(item)
        if outcome == "ok":
            if action.purpose == "label":
                progress.labelled += 1
            elif action.purpose == "result":
                progress.results += 1
            elif action.purpose == "dead_letter":
                progress.dead_lettered += 1
            return []
        if outcome == "retry":
            return "retry"
        if outcome == "missing" and action.purpose in ("label", "mark"):
            log.warning("%s/%s was deleted before its label was written", action.ref.index, action.ref.id)
            progress.missing += 1
            return []
        if action.purpose == "label":
            letter = DeadLetter(action.ref, "label_rejected", _error_text(item), None, None)
            progress.rejected.append(letter)
            return dead_letter_actions(letter, self.settings.dead_letter_index, self.checkpoint_id, now)
        if action.purpose == "mark":
            log.warning(
                "%s/%s: dead-lettered, but the cluster refused the mark on it: %s",
                action.ref.index,
                action.ref.id,
                _error_text(item),
            )
            return []
        setting = "results_index" if action.purpose == "result" else "dead_letter_index"
        raise SinkError(
            f"the cluster refused a write to {getattr(self.settings, setting)} ({env_name(('sink', setting))}): "
            f"{_error_text(item)}; check that index's mapping (the worker creates it) and the user's write permission",
            [item],
        )

