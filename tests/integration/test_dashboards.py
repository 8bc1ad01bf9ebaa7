"""Each dashboard panel's search on the real node, against documents the worker labelled.

HDFS lines (with their component, a few without) are labelled by the real worker with the fake
detector; each panel's definition is turned into the request Dashboards sends
(`dashboards.queries`), run, and its numbers compared with the same numbers counted in Python
from the stored documents.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch

from dashboards.definitions import (
    ANOMALOUS,
    GROUP_ID,
    DashboardConfig,
    PhraseFilter,
    anomalies_over_time,
    anomalous_lines,
    anomaly_rate_by_split,
    score_distribution,
    top_groups,
)
from dashboards.queries import MISSING_KEY, chart_request, search_request
from enricher.service import run_once
from tests.fakes import FakeDetector
from tests.integration.worker_support import SOURCE_MAPPING, add_documents, all_hits, hdfs_lines, worker_settings

LINES = 2000
WITHOUT_COMPONENT_EVERY = 40  # every 40th line has no component: the panels' "missing" bucket
DEAD_LETTERS = 3
UNLABELLED = 25
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Labelled:
    """The indices after one worker pass, and what they hold (read back from the node)."""

    config: DashboardConfig
    docs: list[dict[str, Any]]  # _source of each log document, plus "_id" and "ts_ms"
    results: list[dict[str, Any]]  # _source of each results document
    time_range: tuple[str, str]


def moment_ms(stamp: str) -> int:
    return round(datetime.strptime(stamp, "%y%m%d %H%M%S").replace(tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def hdfs_documents_with_component(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(id, source) per HDFS line: timestamp, message, and the component the line names."""
    documents = []
    for number, raw in enumerate(lines, start=1):
        date, time, _pid, _level, component, message = raw.split(" ", 5)
        source: dict[str, Any] = {"@timestamp": f"{date} {time}", "message": message, "line": number}
        if number % WITHOUT_COMPONENT_EVERY:
            source["component"] = component.rstrip(":")
        documents.append((str(number), source))
    return documents


@pytest.fixture(scope="module")
def labelled(os_client: OpenSearch) -> Iterator[Labelled]:
    prefix = f"test-dashboards-{uuid.uuid4().hex[:8]}-"
    settings = worker_settings(prefix)
    mapping = {"properties": {**SOURCE_MAPPING["properties"], "component": {"type": "keyword"}}}
    try:
        os_client.indices.create(
            index=settings.source.index,
            body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": mapping},
        )
        lines = hdfs_lines(LINES + UNLABELLED)
        documents = hdfs_documents_with_component(lines[:LINES])
        # Lines naming no block cannot be scored: dead-lettered, so they carry no label.
        documents += [(f"no-block-{n}", {"@timestamp": lines[n][:13], "message": "no block named here",
                                          "component": "dfs.FSNamesystem"}) for n in range(DEAD_LETTERS)]
        add_documents(os_client, settings.source.index, documents)
        run_once(settings, FakeDetector())
        # Lines that arrive after the pass: not labelled yet, and left out of the rates.
        add_documents(os_client, settings.source.index, hdfs_documents_with_component(lines)[LINES:])
        docs = [
            {**hit["_source"], "_id": hit["_id"], "ts_ms": moment_ms(hit["_source"]["@timestamp"])}
            for hit in all_hits(os_client, settings.source.index)
        ]
        results = [hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)]
        stamps = [doc["ts_ms"] for doc in docs]
        yield Labelled(DashboardConfig.from_settings(settings), docs, results, (iso(min(stamps)), iso(max(stamps))))
    finally:
        os_client.indices.delete(index=f"{prefix}*", expand_wildcards="all", ignore_unavailable=True)


def run(client: OpenSearch, request: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    index, body = request
    return client.search(index=index, body=body)


def label_of(doc: dict[str, Any]) -> str | None:
    return (doc.get("anomaly") or {}).get("label")


def anomalous(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if label_of(doc) == ANOMALOUS]


def test_the_data_exercises_every_panel(labelled: Labelled) -> None:
    # Not a panel check: it makes sure the comparisons below are not between empty sets.
    assert len(labelled.docs) == LINES + DEAD_LETTERS + UNLABELLED
    bad = anomalous(labelled.docs)
    assert 0 < len(bad) < sum(label_of(doc) is not None for doc in labelled.docs) == LINES
    assert sum(bool((doc.get("anomaly") or {}).get("dead_letter")) for doc in labelled.docs) == DEAD_LETTERS
    assert len({doc.get("component") for doc in bad}) >= 3 and any("component" not in doc for doc in bad)
    assert len({doc["ts_ms"] // MINUTE_MS for doc in bad}) > 3
    assert {r["label"] for r in labelled.results} == {"normal", "anomalous"}


def test_anomalies_over_time_counts_each_bucket(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    request = chart_request(anomalies_over_time(config), config, time_range=labelled.time_range, auto_interval="1m")
    response = run(os_client, request)
    seen = {
        (bucket["key"], split["key"]): split["doc_count"]
        for bucket in response["aggregations"]["2"]["buckets"]
        for split in bucket["3"]["buckets"]
    }
    expected = Counter(
        (doc["ts_ms"] // MINUTE_MS * MINUTE_MS, doc.get("component", MISSING_KEY)) for doc in anomalous(labelled.docs)
    )
    assert seen == dict(expected)


def test_time_range_limits_the_panel(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    stamps = sorted({doc["ts_ms"] for doc in anomalous(labelled.docs)})
    start, end = stamps[len(stamps) // 3], stamps[2 * len(stamps) // 3]
    request = chart_request(anomalies_over_time(config), config, time_range=(iso(start), iso(end)), auto_interval="5m")
    response = run(os_client, request)
    assert response["hits"]["total"]["value"] == sum(start <= doc["ts_ms"] <= end for doc in anomalous(labelled.docs))


def test_anomaly_rate_per_component(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    response = run(os_client, chart_request(anomaly_rate_by_split(config), config, time_range=labelled.time_range))
    buckets = response["aggregations"]["2"]["buckets"]
    # What the percentage-stacked bars show: each series' share of the bar (the sum of its series).
    rates = {
        bucket["key"]: {
            label["key"]: label["doc_count"] / sum(series["doc_count"] for series in bucket["3"]["buckets"])
            for label in bucket["3"]["buckets"]
        }
        for bucket in buckets
    }
    # ... which is the share of the component's lines only because every line counted has a label.
    assert all(bucket["doc_count"] == sum(s["doc_count"] for s in bucket["3"]["buckets"]) for bucket in buckets)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for doc in labelled.docs:
        if label_of(doc) is not None:
            counts[doc.get("component", MISSING_KEY)][label_of(doc)] += 1  # type: ignore[index]
    expected = {
        component: {label: n / sum(by_label.values()) for label, n in by_label.items()}
        for component, by_label in counts.items()
    }
    assert rates == expected
    # Components by number of labelled lines, as the x axis lists them.
    totals = {component: sum(by_label.values()) for component, by_label in counts.items()}
    assert [bucket["key"] for bucket in buckets] == sorted(totals, key=lambda c: (-totals[c], c))


def test_top_groups_are_the_highest_scored_with_their_lines(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    chart = top_groups(config)
    response = run(os_client, chart_request(chart, config, time_range=labelled.time_range))
    rows = [
        (row["key"], row["1"]["value"], row["doc_count"], row["3"]["value"], row["4"]["value"])
        for row in response["aggregations"]["5"]["buckets"]
    ]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in anomalous(labelled.docs):
        groups[doc["anomaly"]["group_id"]].append(doc)
    expected = sorted(
        (
            (group, max(d["anomaly"]["score"] for d in members), len(members),
             min(d["ts_ms"] for d in members), max(d["ts_ms"] for d in members))
            for group, members in groups.items()
        ),
        key=lambda row: -row[1],
    )[: config.top_groups]
    assert [row[0] for row in rows] == [row[0] for row in expected]
    for got, want in zip(rows, expected, strict=True):
        assert got[1] == pytest.approx(want[1], rel=1e-6)  # stored as a 32-bit float
        assert got[2:] == want[2:]

    # The link back: the filter a click on the top group adds narrows the saved search to that
    # sequence's anomalous lines, the members its results document lists.
    top = rows[0][0]
    search = anomalous_lines(config)
    drilled = replace(search, filters=(*search.filters, PhraseFilter(GROUP_ID, top)))
    hits = run(os_client, search_request(drilled, config, time_range=labelled.time_range))["hits"]["hits"]
    assert sorted(hit["_id"] for hit in hits) == sorted(doc["_id"] for doc in groups[top])
    (result,) = [r for r in labelled.results if r["group_id"] == top]
    assert {hit["_id"] for hit in hits} <= {ref["id"] for ref in result["docs"]}


def test_score_distribution_buckets(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    chart = score_distribution(config)
    (histogram,) = chart.buckets[:1]
    response = run(os_client, chart_request(chart, config, time_range=labelled.time_range))
    buckets = response["aggregations"]["2"]["buckets"]
    # Empty buckets included, from 0 to 1: the x axis users see.
    assert [round(b["key"] / histogram.interval) for b in buckets] == list(range(round(1 / histogram.interval) + 1))
    seen = {
        (round(b["key"] / histogram.interval), label["key"]): label["doc_count"]
        for b in buckets
        for label in b["3"]["buckets"]
    }
    # The node buckets the stored 32-bit float: floor(value / interval).
    expected = Counter(
        (math.floor(float(np.float32(r["score"])) / histogram.interval), r["label"]) for r in labelled.results
    )
    assert seen == dict(expected)
    assert sum(b["doc_count"] for b in buckets) == len(labelled.results)


def test_saved_search_lists_anomalous_lines_newest_first(os_client: OpenSearch, labelled: Labelled) -> None:
    config = labelled.config
    response = run(os_client, search_request(anomalous_lines(config), config, time_range=labelled.time_range))
    bad = anomalous(labelled.docs)
    assert response["hits"]["total"]["value"] == len(bad)
    stamps = [moment_ms(hit["_source"]["@timestamp"]) for hit in response["hits"]["hits"]]
    assert stamps == sorted((doc["ts_ms"] for doc in bad), reverse=True)[: len(stamps)]
    assert all(hit["_source"]["anomaly"]["label"] == ANOMALOUS for hit in response["hits"]["hits"])
