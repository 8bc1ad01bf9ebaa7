"""The backfill's pure decisions: reindex detection, copy method, names, ranges, mappings, and the
merge of PIT slices back into cursor order (what makes sliced groups equal the live worker's)."""

from __future__ import annotations

import random

import pytest

from enricher.backfill import (
    backfill_checkpoint_id,
    check_names,
    check_slices,
    choose_copy_method,
    cluster_has_reindex,
    copy_query,
    merge_slices,
    merged_mapping,
    parse_time,
    reindex_body,
)
from enricher.settings import load_settings
from enricher.types import DocRef, LogDoc
from model.errors import UserError


def nodes(*module_lists: list[str]) -> dict[str, object]:
    return {"nodes": {f"n{i}": {"modules": [{"name": m} for m in mods], "plugins": []} for i, mods in enumerate(module_lists)}}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (nodes(["transport-netty4"]), False),  # the local integ-test node
        (nodes(["reindex", "lang-painless"]), True),
        (nodes(["reindex"], ["transport-netty4"]), False),  # every node must be able to run it
        ({"nodes": {"n0": {"modules": [], "plugins": [{"name": "reindex"}]}}}, True),
        ({"nodes": {}}, False),
    ],
)
def test_cluster_has_reindex(answer: dict[str, object], expected: bool) -> None:
    assert cluster_has_reindex(answer) is expected


@pytest.mark.parametrize(
    ("requested", "has_reindex", "expected"),
    [("auto", True, "server"), ("auto", False, "client"), ("client", True, "client"), ("server", True, "server")],
)
def test_choose_copy_method(requested: str, has_reindex: bool, expected: str) -> None:
    assert choose_copy_method(requested, has_reindex) == expected  # type: ignore[arg-type]


def test_server_copy_on_a_cluster_without_reindex_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--copy client"):
        choose_copy_method("server", False)


def test_checkpoint_ids_do_not_depend_on_the_range() -> None:
    assert backfill_checkpoint_id("logs-*", "logs-enriched") == "backfill:logs-*->logs-enriched"
    assert backfill_checkpoint_id("logs-*", None) == "backfill:logs-*"
    # A source.query narrows what is labelled: its own progress.
    narrowed = backfill_checkpoint_id("logs-*", None, {"term": {"service.name": "hdfs"}})
    assert narrowed.startswith("backfill:logs-*?query=") and narrowed != backfill_checkpoint_id("logs-*", None, {"match_all": {}})


@pytest.mark.parametrize("slices", [0, -1, 65])
def test_slices_out_of_range(slices: int) -> None:
    with pytest.raises(UserError, match="--slices"):
        check_slices(slices)


@pytest.mark.parametrize(
    ("source", "dest", "message"),
    [
        ("logs-*", "logs-copy", "matched by --source"),
        ("logs", "logs-*", "not a pattern"),
        ("logs", "logllm-results", "sink.results_index"),
        ("*", "copy", "matched by --source"),
    ],
)
def test_bad_destinations(source: str, dest: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_names(source, dest, load_settings())


def test_good_destination_and_in_place_pass() -> None:
    check_names("logs-*", "enriched-logs", load_settings())
    check_names("logs-*", None, load_settings())


def test_in_place_on_a_pattern_taking_in_the_state_index_is_refused() -> None:
    with pytest.raises(UserError, match="state.index"):
        check_names("logllm-*", None, load_settings(sink={"results_index": "results", "dead_letter_index": "dead"}))


def test_parse_time_reads_utc_unless_zoned() -> None:
    assert parse_time("2008-11-09T20:35:18", "--start") == 1226262918000
    assert parse_time("2008-11-09T21:35:18+01:00", "--start") == 1226262918000
    assert parse_time(None, "--end") is None
    with pytest.raises(UserError, match="--end 'yesterday'"):
        parse_time("yesterday", "--end")


def test_copy_takes_the_range_and_documents_without_timestamp() -> None:
    query = copy_query("@timestamp", 10, 20)
    should = query["bool"]["should"]
    assert should[0] == {"range": {"@timestamp": {"format": "epoch_millis", "gte": 10, "lt": 20}}}
    assert should[1] == {"bool": {"must_not": [{"exists": {"field": "@timestamp"}}]}}
    body = reindex_body("logs", "copy", query)
    assert body["dest"] == {"index": "copy", "op_type": "create"} and body["conflicts"] == "proceed"
    assert body["source"]["_source"] == {"excludes": ["anomaly"]}


def test_merged_mapping_unions_fields_and_refuses_conflicts() -> None:
    date = {"type": "date"}
    merged = merged_mapping({"a": {"@timestamp": date, "anomaly": {"properties": {}}}, "b": {"msg": {"type": "text"}}})
    assert merged == {"properties": {"@timestamp": date, "msg": {"type": "text"}}}
    with pytest.raises(UserError, match="'@timestamp' differently"):
        merged_mapping({"a": {"@timestamp": date}, "b": {"@timestamp": {"type": "keyword"}}})


def doc(timestamp: int, doc_id: str, previous: tuple[object, ...] | None = None) -> LogDoc:
    return LogDoc(DocRef("logs", doc_id), (timestamp, "logs", doc_id), previous, timestamp, f"m{doc_id}")


def test_merged_slices_equal_the_unsliced_read_whatever_the_split() -> None:
    rng = random.Random(5)
    # Many equal timestamps, as in HDFS (one-second resolution): the tiebreaker decides.
    docs = sorted((doc(rng.randrange(20), f"{i:04d}") for i in range(300)), key=lambda d: d.position)
    after = (-1, "logs", "")
    expected_previous = [after, *[d.position for d in docs[:-1]]]
    for slices in (1, 2, 4, 7):
        parts: list[list[LogDoc]] = [[] for _ in range(slices)]
        for item in docs:
            parts[rng.randrange(slices)].append(item)  # each slice keeps the order, like a sorted PIT slice
        pages = list(merge_slices([iter(part) for part in parts], after, page_size=32))
        merged = [item for page in pages for item in page]
        assert [d.position for d in merged] == [d.position for d in docs]
        assert [d.previous for d in merged] == expected_previous  # resumable before any document
        assert all(len(page) == 32 for page in pages[:-1])


class ReindexCluster:
    """Just enough of a client for `copy_server_side`: a `_reindex` task that completes on the
    second poll (the local node has no reindex module to run this against)."""

    def __init__(self, response: dict[str, object]) -> None:
        self.response = response
        self.requests: list[tuple[dict[str, object], dict[str, str]]] = []
        self.polls = 0
        self.tasks = self

    def reindex(self, body: dict[str, object], params: dict[str, str]) -> dict[str, str]:
        self.requests.append((body, params))
        return {"task": "node:1"}

    def get(self, task_id: str) -> dict[str, object]:
        self.polls += 1
        return {"completed": self.polls > 1, "response": self.response}


def test_server_side_copy_runs_a_sliced_task_and_reports_its_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from enricher import backfill
    from enricher.client import Retrier
    from enricher.settings import RetrySettings

    monkeypatch.setattr(backfill, "REINDEX_POLL_S", 0)
    cluster = ReindexCluster({"created": 7, "version_conflicts": 3, "failures": []})
    report = backfill.copy_server_side(cluster, Retrier(RetrySettings()), "logs", "copy", {"match_all": {}}, 4)  # type: ignore[arg-type]
    assert (report.method, report.copied, report.already_present) == ("server", 7, 3)
    body, params = cluster.requests[0]
    assert params["slices"] == "4" and params["wait_for_completion"] == "false"
    assert body == reindex_body("logs", "copy", {"match_all": {}})
    assert cluster.polls == 2


def test_server_side_copy_failures_raise_with_the_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    from enricher import backfill
    from enricher.client import Retrier
    from enricher.interfaces import SinkError
    from enricher.settings import RetrySettings

    monkeypatch.setattr(backfill, "REINDEX_POLL_S", 0)
    failure = {"index": "copy", "id": "9", "cause": {"type": "mapper_parsing_exception"}}
    cluster = ReindexCluster({"created": 1, "failures": [failure]})
    with pytest.raises(SinkError, match="mapper_parsing_exception") as raised:
        backfill.copy_server_side(cluster, Retrier(RetrySettings()), "logs", "copy", {}, 1)  # type: ignore[arg-type]
    assert raised.value.errors == [failure]
