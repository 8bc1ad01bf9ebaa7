"""Round trip through the real node: bulk-index LogHub's HDFS_2k.log and read every line back.

Proves the harness (node, client, per-test indices) with real data: 2,000 lines, timestamps
parsed by OpenSearch from their `yymmdd HHMMSS` prefix, messages returned byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opensearchpy import OpenSearch, helpers

from training.shared_data import HDFS_2K

LINES = 2000

MAPPING = {
    "dynamic": "strict",
    "properties": {
        # HDFS timestamps have one-second resolution and no time zone; stored as UTC.
        "timestamp": {"type": "date", "format": "yyMMdd HHmmss"},
        "line_number": {"type": "long"},
        # The longest HDFS lines (batched block deletes) are a few KB; ignore_above keeps a
        # pathological line from failing the whole document on Lucene's 32 KB term limit.
        "message": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 8191}}},
    },
}


@dataclass(frozen=True)
class HdfsIndex:
    """An index holding HDFS_2k.log, one document per line, `_id` = 1-based line number."""

    name: str
    lines: list[str]  # the source lines without line endings; lines[n - 1] is document n


def read_lines(path: Path) -> list[str]:
    """The lines of `path` without their endings (HDFS_2k.log uses CRLF)."""
    with open(path, encoding="utf-8", newline="") as log:
        return [line.rstrip("\r\n") for line in log]


def epoch_millis(line: str) -> int:
    """The line's `yymmdd HHMMSS` prefix as milliseconds since the epoch, read as UTC."""
    moment = datetime.strptime(line[:13], "%y%m%d %H%M%S").replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@pytest.fixture
def hdfs_index(os_client: OpenSearch, index_prefix: str) -> Iterator[HdfsIndex]:
    """HDFS_2k.log bulk-indexed under MAPPING and refreshed, so all 2,000 lines are searchable."""
    assert HDFS_2K.is_file(), f"{HDFS_2K}: missing; set LOGLLM_SHARED_DATA to the shared data"
    lines = read_lines(HDFS_2K)
    assert len(lines) == LINES
    name = f"{index_prefix}hdfs"
    os_client.indices.create(
        index=name,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": MAPPING,
        },
    )
    actions = (
        {
            "_index": name,
            "_id": str(number),
            "_source": {"timestamp": line[:13], "line_number": number, "message": line},
        }
        for number, line in enumerate(lines, start=1)
    )
    indexed, errors = helpers.bulk(os_client, actions, chunk_size=500)
    assert (indexed, errors) == (LINES, [])
    os_client.indices.refresh(index=name)
    yield HdfsIndex(name=name, lines=lines)


def test_every_line_comes_back_exactly(os_client: OpenSearch, hdfs_index: HdfsIndex) -> None:
    assert os_client.count(index=hdfs_index.name)["count"] == LINES
    longest = max(range(LINES), key=lambda i: len(hdfs_index.lines[i])) + 1
    numbers = [1, 2, 1000, LINES, longest]
    found = os_client.mget(index=hdfs_index.name, body={"ids": [str(n) for n in numbers]})
    messages = {int(doc["_id"]): doc["_source"]["message"] for doc in found["docs"]}
    assert messages == {n: hdfs_index.lines[n - 1] for n in numbers}
    assert all("\r" not in message for message in messages.values())


def test_sorted_search_follows_the_timestamps(
    os_client: OpenSearch, hdfs_index: HdfsIndex
) -> None:
    response = os_client.search(
        index=hdfs_index.name,
        body={
            "size": LINES,
            "_source": False,
            "sort": [{"timestamp": "asc"}, {"line_number": "asc"}],
        },
    )
    # The sort values are what OpenSearch parsed, so this checks the date format as well.
    got = [tuple(hit["sort"]) for hit in response["hits"]["hits"]]
    expected = sorted((epoch_millis(line), n) for n, line in enumerate(hdfs_index.lines, 1))
    assert got == expected


def test_keyword_subfield_matches_whole_lines(
    os_client: OpenSearch, hdfs_index: HdfsIndex
) -> None:
    line = hdfs_index.lines[999]
    response = os_client.search(
        index=hdfs_index.name,
        body={"query": {"term": {"message.raw": line}}, "_source": ["line_number"]},
    )
    numbers = {hit["_source"]["line_number"] for hit in response["hits"]["hits"]}
    assert 1000 in numbers
    assert all(hdfs_index.lines[n - 1] == line for n in numbers)
