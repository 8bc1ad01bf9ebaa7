"""A labelled export of a real OpenSearch index becomes the same labelled sequences as the raw
file it was indexed from (training.data.load_opensearch_export)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opensearchpy import OpenSearch, helpers

from model.errors import UserError
from model.preprocess import HDFS_BLOCK_ID, LogLine, parse_line
from training.config import DataConfig
from training.data import build_split, load_dataset, load_opensearch_export, load_raw_log
from training.shared_data import HDFS_HEAD20K, HDFS_HEAD20K_LABELS

LINES = 3000

MAPPING = {
    "properties": {
        "@timestamp": {"type": "date"},
        "line": {"type": "long"},
        "log": {"properties": {"message": {"type": "text"}}},
        "block": {"type": "keyword"},
        "verdict": {"type": "keyword"},
        "alert": {"type": "boolean"},
    }
}


@dataclass(frozen=True)
class LabelledIndex:
    name: str
    log_file: Path
    labels_file: Path
    labels: dict[str, str]


@pytest.fixture
def hdfs_labelled_index(os_client: OpenSearch, index_prefix: str, tmp_path: Path) -> Iterator[LabelledIndex]:
    """The first 3,000 HDFS_head20k lines, one document per line, with the block's label
    ("Anomaly"/"Normal") repeated on each of its documents in `verdict`."""
    assert HDFS_HEAD20K.is_file(), f"{HDFS_HEAD20K}: missing; set LOGLLM_SHARED_DATA to the shared data"
    raw = HDFS_HEAD20K.read_text().splitlines()[:LINES]
    with HDFS_HEAD20K_LABELS.open() as handle:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(handle)}
    log_file = tmp_path / "head.log"
    log_file.write_text("\n".join(raw) + "\n")
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("BlockId,Label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    name = f"{index_prefix}labelled"
    os_client.indices.create(index=name, body={"mappings": MAPPING, "settings": {"number_of_shards": 1}})
    actions = []
    for n, text in enumerate(raw, start=1):
        line = parse_line(text, n, "hdfs")
        assert isinstance(line, LogLine) and line.timestamp is not None
        block = HDFS_BLOCK_ID.findall(line.message)[0]
        actions.append({
            "_index": name,
            "_id": str(n),
            "@timestamp": line.timestamp.isoformat(),
            "line": n,
            "log": {"message": line.message},
            "block": block,
            "verdict": labels[block],
            "alert": labels[block] == "Anomaly",
        })
    helpers.bulk(os_client, actions, refresh=True)
    yield LabelledIndex(name, log_file, labels_file, labels)


def test_session_export_equals_the_raw_file(os_client: OpenSearch, hdfs_labelled_index: LabelledIndex) -> None:
    exported = load_opensearch_export(
        os_client,
        hdfs_labelled_index.name,
        message_field="log.message",
        timestamp_field="@timestamp",
        tiebreak_field="line",
        session_field="block",
        label_field="verdict",
        page_size=500,
    )
    from_file = load_raw_log(
        hdfs_labelled_index.log_file,
        fmt="hdfs",
        session_regex=HDFS_BLOCK_ID.pattern,
        session_labels=hdfs_labelled_index.labels_file,
    )
    assert [(s.key, s.messages, s.label) for s in exported.sequences] == [
        (s.key, s.messages, s.label) for s in from_file.sequences
    ]
    assert exported.n_anomalous > 0 and len(exported.sequences) > 300


def test_window_export_with_boolean_labels_and_a_query(os_client: OpenSearch, hdfs_labelled_index: LabelledIndex) -> None:
    first_hour = datetime(2008, 11, 9, 20, 36, 0, tzinfo=UTC).isoformat()
    dataset = load_opensearch_export(
        os_client,
        hdfs_labelled_index.name,
        message_field="log.message",
        tiebreak_field="line",
        window=100,
        label_field="alert",
        query={"range": {"@timestamp": {"lt": first_hour}}},
        chronological_test_ratio=0.2,
    )
    kept = sum(len(s.messages) for s in dataset.sequences)
    assert 0 < kept < LINES
    tail_train = [s for s in dataset.sequences if s.split == "train"][-1]
    first_test = [s for s in dataset.sequences if s.split == "test"][0]
    assert tail_train.order < first_test.order
    assert {s.split for s in dataset.sequences} == {"train", "test"}


def test_export_through_a_config(os_client: OpenSearch, hdfs_labelled_index: LabelledIndex) -> None:
    config = DataConfig.model_validate({
        "kind": "opensearch",
        "opensearch": {"index": hdfs_labelled_index.name, "message_field": "log.message", "tiebreak_field": "line",
                       "session_field": "block", "label_field": "verdict"},
    })
    split = build_split(config, load_dataset(config, os_client))
    split.check_disjoint()
    assert split.how.startswith("chronological")


def test_export_without_labels_takes_every_session_as_normal(
    os_client: OpenSearch, hdfs_labelled_index: LabelledIndex
) -> None:
    """data.assume_normal: the index has no `label` field, and no document is skipped for it."""
    fields = {"index": hdfs_labelled_index.name, "message_field": "log.message", "tiebreak_field": "line",
              "session_field": "block"}
    unlabelled = load_dataset(DataConfig.model_validate(
        {"kind": "opensearch", "assume_normal": True, "opensearch": fields}
    ), os_client)
    labelled = load_dataset(DataConfig.model_validate(
        {"kind": "opensearch", "opensearch": {**fields, "label_field": "verdict"}}
    ), os_client)
    assert [(s.key, s.messages) for s in unlabelled.sequences] == [(s.key, s.messages) for s in labelled.sequences]
    assert {s.label for s in unlabelled.sequences} == {0} and labelled.n_anomalous > 0
    assert unlabelled.notes == labelled.notes == ()


def test_export_errors_are_actionable(os_client: OpenSearch, hdfs_labelled_index: LabelledIndex, index_prefix: str) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_opensearch_export(os_client, f"{index_prefix}missing", session_field="block")
    with pytest.raises(UserError, match="no document has 'message' and 'verdict'"):
        load_opensearch_export(os_client, hdfs_labelled_index.name, session_field="block", label_field="verdict",
                               timestamp_field="@timestamp")
