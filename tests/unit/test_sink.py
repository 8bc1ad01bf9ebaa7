"""Pure parts of the sink: documents, bulk actions, chunking, item outcomes, the sameness rule."""

from __future__ import annotations

import json

import pytest

from enricher.sink import (
    build_actions,
    chunk_actions,
    classify_item,
    content_of,
    dead_letter_document,
    dead_letter_id,
    iso_ms,
    label_fields,
)
from enricher.types import DeadLetter, DocRef, Entry, Group, ScoredGroup
from model.detector import Verdict


def _entry(n: int, message: str = "m", truncated: bool = False) -> Entry:
    return Entry(DocRef("logs-1", f"d{n}"), (n, "logs-1", f"d{n}"), None, 1000 * n, message, ("k",), truncated)


def _scored(labels: tuple[bool, ...] = (True, True, False), positions: tuple[int, ...] = (), at: str = "t1") -> ScoredGroup:
    entries = tuple(_entry(n, f"message {n}", truncated=n == 2) for n in range(1, len(labels) + 1))
    group = Group("g1", "session", "blk_1", entries, labels, "gap")
    return ScoredGroup(group, Verdict(1, 0.75, "logllm-abc", "anomalous", False, positions), at)


def _parse(action_lines: str) -> tuple[dict, dict]:
    meta, body = action_lines.splitlines()
    return json.loads(meta), json.loads(body)


def test_actions_label_only_the_documents_the_group_owns_then_index_its_result() -> None:
    actions = build_actions(
        [_scored()], [], results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="logs-*", recorded_at="r"
    )
    assert [a.purpose for a in actions] == ["label", "label", "result"]
    meta, body = _parse(actions[1].lines)
    assert meta == {"update": {"_index": "logs-1", "_id": "d2", "retry_on_conflict": 3}}
    assert body["doc"]["anomaly"] == {
        "label": "anomalous",
        "score": 0.75,
        "group_id": "g1",
        "model_version": "logllm-abc",
        "scored_at": "t1",
        "top_lines": None,
        "truncated": True,
        "dead_letter": None,
    }
    meta, result = _parse(actions[2].lines)
    assert meta == {"index": {"_index": "res", "_id": "g1"}}
    assert result["docs"] == [{"index": "logs-1", "id": f"d{n}"} for n in (1, 2, 3)]
    assert (result["size"], result["label"], result["truncated_messages"]) == (3, "anomalous", 1)
    assert result["start"] == iso_ms(1000) == "1970-01-01T00:00:01.000+00:00" and result["end"] == iso_ms(3000)


def test_explanations_become_top_lines() -> None:
    scored = _scored(positions=(2, 0, 9))  # 9 is out of range and ignored
    assert label_fields(scored, False)["top_lines"] == ["d3", "d1"]
    actions = build_actions(
        [scored], [], results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s", recorded_at="r"
    )
    _, result = _parse(actions[-1].lines)
    assert [(t["id"], t["message"]) for t in result["top_lines"]] == [("d3", "message 3"), ("d1", "message 1")]


@pytest.mark.parametrize(
    "message",
    [
        "naïve \u2028 line separator, tab\t and newline\n inside",  # raw UTF-8 from orjson
        "lone surrogate \ud800 from a broken escape",  # orjson refuses it: the standard library writes it
    ],
)
def test_every_action_is_two_json_lines_whatever_the_message(message: str) -> None:
    entries = (Entry(DocRef("logs-1", "d1"), (1, "logs-1", "d1"), None, 1000, message, ("k",), False),)
    group = Group("g1", "session", "blk_1", entries, (True,), "gap")
    scored = ScoredGroup(group, Verdict(1, 0.75, "logllm-abc", "anomalous", False, (0,)), "t1")
    actions = build_actions(
        [scored], [], results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s", recorded_at="r"
    )
    for action in actions:
        # _bulk frames actions by "\n" bytes only, so no other character may end a line.
        assert action.lines.endswith("\n") and action.lines.count("\n") == 2
    _, result = (json.loads(line) for line in actions[-1].lines.split("\n")[:2])
    assert result["top_lines"][0]["message"] == message


def test_dead_letters_get_a_document_and_a_mark_except_rejected_labels() -> None:
    missing = DeadLetter(DocRef("logs-1", "x"), "missing_message", "field 'message' is missing", 5000, None)
    rejected = DeadLetter(DocRef("logs-1", "y"), "label_rejected", "mapper_parsing_exception: ...", None, None)
    actions = build_actions(
        [], [missing, rejected], results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s",
        recorded_at="r",
    )
    assert [(a.purpose, a.ref.id) for a in actions] == [("dead_letter", "x"), ("mark", "x"), ("dead_letter", "y")]
    meta, document = _parse(actions[0].lines)
    assert meta["index"]["_id"] == dead_letter_id(missing.ref) != dead_letter_id(rejected.ref)
    assert document["reason"] == "missing_message" and document["message_type"] == "missing"
    _, mark = _parse(actions[1].lines)
    assert mark["doc"]["anomaly"]["dead_letter"] == "missing_message" and mark["doc"]["anomaly"]["label"] is None


def test_dead_letter_previews_are_bounded_and_typed() -> None:
    huge = DeadLetter(DocRef("i", "1"), "message_not_string", "", 0, {"nested": "x" * 5000})
    document = dead_letter_document(huge, "c", "r")
    assert document["message_type"] == "dict" and len(document["message_preview"]) == 1000
    assert document["message_chars"] > 5000


def test_a_replay_differs_only_in_the_time_of_the_write() -> None:
    first = build_actions(
        [_scored(at="2026-01-01T00:00:00.000+00:00")], [DeadLetter(DocRef("i", "z"), "no_session_key", "", 1, "m")],
        results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s", recorded_at="A",
    )
    again = build_actions(
        [_scored(at="2026-06-01T12:00:00.000+00:00")], [DeadLetter(DocRef("i", "z"), "no_session_key", "", 1, "m")],
        results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s", recorded_at="B",
    )
    assert [a.lines for a in first] != [a.lines for a in again]
    for one, two in zip(first, again, strict=True):
        (meta1, body1), (meta2, body2) = _parse(one.lines), _parse(two.lines)
        assert meta1 == meta2
        assert content_of(body1.get("doc", body1)) == content_of(body2.get("doc", body2))


def test_chunks_respect_count_and_bytes() -> None:
    actions = build_actions(
        [_scored()] * 4, [], results_index="res", dead_letter_index="dlq", checkpoint_id="c", source="s",
        recorded_at="r",
    )
    by_count = list(chunk_actions(actions, max_count=5, max_bytes=10**9))
    assert [len(c) for c in by_count] == [5, 5, 2] and sum(by_count, []) == actions
    limit = max(len(a.lines.encode()) for a in actions) + 10
    by_bytes = list(chunk_actions(actions, max_count=1000, max_bytes=limit))
    assert sum(by_bytes, []) == actions and len(by_bytes) > 1
    assert all(sum(len(a.lines.encode()) for a in chunk) <= limit for chunk in by_bytes)
    small = list(chunk_actions(actions, max_count=1000, max_bytes=10))  # each action alone, none lost
    assert len(small) == len(actions)


@pytest.mark.parametrize(
    ("item", "outcome"),
    [
        ({"update": {"status": 200}}, "ok"),
        ({"index": {"status": 201}}, "ok"),
        ({"update": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}, "retry"),
        ({"update": {"status": 503, "error": {"type": "unavailable_shards_exception"}}}, "retry"),
        ({"update": {"status": 404, "error": {"type": "document_missing_exception"}}}, "missing"),
        ({"update": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}, "rejected"),
        ({"update": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}}, "rejected"),
    ],
)
def test_item_outcomes(item: dict, outcome: str) -> None:
    assert classify_item(item) == outcome
