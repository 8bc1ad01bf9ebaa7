"""Checkpoints in the cluster, written with optimistic concurrency (`if_seq_no`/`if_primary_term`).

The state index holds one document per checkpoint id (`checkpoint:<id>`) and one per lease
(`lease:<id>`, see `enricher.lease`). Nothing lives on local disk: a worker on another host
continues exactly where this one stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError

from enricher.client import Retrier, ensure_index
from enricher.interfaces import CheckpointConflict
from enricher.types import Checkpoint, OpenGroupState, Position, Version, write_preconditions

STATE_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "kind": {"type": "keyword"},
        "checkpoint_id": {"type": "keyword"},
        "holder": {"type": "keyword"},
        "expires_ms": {"type": "long"},
        "updated_ms": {"type": "long"},
        # The checkpoint itself (positions of mixed types) is kept in _source only.
        "state": {"type": "object", "enabled": False},
    },
}


def _position(value: list[Any] | None) -> Position | None:
    return tuple(value) if value is not None else None


def checkpoint_to_json(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as JSON-compatible data (positions as lists)."""
    return {
        "checkpoint_id": checkpoint.checkpoint_id,
        "grouping": checkpoint.grouping,
        "read_position": list(checkpoint.read_position) if checkpoint.read_position is not None else None,
        "resume_after": list(checkpoint.resume_after) if checkpoint.resume_after is not None else None,
        "read_timestamp_ms": checkpoint.read_timestamp_ms,
        "open_groups": [
            {
                "group_id": state.group_id,
                "key": state.key,
                "first": list(state.first),
                "resume_after": list(state.resume_after) if state.resume_after is not None else None,
                "window": list(state.window) if state.window is not None else None,
            }
            for state in checkpoint.open_groups
        ],
    }


def checkpoint_from_json(data: dict[str, Any]) -> Checkpoint:
    """The inverse of `checkpoint_to_json`."""
    return Checkpoint(
        checkpoint_id=data["checkpoint_id"],
        grouping=data["grouping"],
        read_position=_position(data["read_position"]),
        resume_after=_position(data["resume_after"]),
        read_timestamp_ms=data.get("read_timestamp_ms"),
        open_groups=tuple(
            OpenGroupState(
                group_id=item["group_id"],
                key=item["key"],
                first=tuple(item["first"]),
                resume_after=_position(item["resume_after"]),
                window=(item["window"][0], item["window"][1]) if item["window"] is not None else None,
            )
            for item in data["open_groups"]
        ),
    )


def checkpoint_doc_id(checkpoint_id: str) -> str:
    return f"checkpoint:{checkpoint_id}"


class OpenSearchCheckpointStore:
    """`CheckpointStore` in the state index."""

    def __init__(self, client: OpenSearch, index: str, retrier: Retrier, clock_ms: Callable[[], int]) -> None:
        self.client = client
        self.index = index
        self.retrier = retrier
        self.clock_ms = clock_ms

    def prepare(self) -> None:
        """Create the state index (and its template) if needed."""
        ensure_index(self.client, self.retrier, self.index, STATE_MAPPING)

    def _get(self, checkpoint_id: str) -> dict[str, Any] | None:
        # ignore=404: a missing checkpoint is a normal answer, not an error to log.
        found = self.retrier.call(
            f"read checkpoint {checkpoint_id}",
            lambda: self.client.get(index=self.index, id=checkpoint_doc_id(checkpoint_id), params={"ignore": 404}),
        )
        return found if found.get("found") else None

    def load(self, checkpoint_id: str) -> tuple[Checkpoint, Version] | None:
        found = self._get(checkpoint_id)
        if found is None:
            return None
        return checkpoint_from_json(found["_source"]["state"]), Version(found["_seq_no"], found["_primary_term"])

    def saved(self, checkpoint_id: str) -> tuple[Checkpoint, int | None] | None:
        """The stored checkpoint and when it was saved (epoch ms), or None before the first save."""
        found = self._get(checkpoint_id)
        if found is None:
            return None
        return checkpoint_from_json(found["_source"]["state"]), found["_source"].get("updated_ms")

    def save(self, checkpoint: Checkpoint, expected: Version | None) -> Version:
        # The nonce recognises our own write when a retried request finds it already applied.
        nonce = uuid.uuid4().hex
        body = {
            "kind": "checkpoint",
            "checkpoint_id": checkpoint.checkpoint_id,
            "updated_ms": self.clock_ms(),
            "nonce": nonce,
            "state": checkpoint_to_json(checkpoint),
        }
        params = write_preconditions(expected)
        try:
            response = self.retrier.call(
                f"save checkpoint {checkpoint.checkpoint_id}",
                lambda: self.client.index(
                    index=self.index, id=checkpoint_doc_id(checkpoint.checkpoint_id), body=body, params=params
                ),
            )
        except ConflictError:
            stored = self._get(checkpoint.checkpoint_id)
            if stored is not None and stored["_source"].get("nonce") == nonce:
                return Version(stored["_seq_no"], stored["_primary_term"])
            raise CheckpointConflict(
                f"checkpoint {checkpoint.checkpoint_id} was moved by another worker since it was read"
            ) from None
        return Version(response["_seq_no"], response["_primary_term"])
