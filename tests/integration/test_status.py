"""`logllm status` on the real node: before any pass, after passes, and with a late document;
read-only throughout (it must be safe beside a live worker and on a cluster it never saw)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from opensearchpy import OpenSearch

from enricher.service import run_once
from enricher.settings import Settings
from enricher.status import read_status
from tests.fakes import FakeDetector
from tests.integration.worker_support import (
    add_documents,
    all_hits,
    cli_command,
    create_source,
    hdfs_documents,
    hdfs_lines,
    worker_settings,
)

pytestmark = pytest.mark.integration


def status_command(settings: Settings) -> tuple[int, dict[str, Any]]:
    done = cli_command(settings, "status", "--json")
    assert done.stdout, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def test_status_before_and_after_passes_and_with_a_late_document(os_client: OpenSearch, index_prefix: str) -> None:
    documents = hdfs_documents(hdfs_lines(400))
    settings = worker_settings(index_prefix)
    create_source(os_client, settings.source.index, documents)

    # Never run: says so, exits 1, and creates nothing (no state, results or dead-letter index).
    code, before = status_command(settings)
    assert code == 1 and before["cursor"] is None and before["worker_active"] is False
    assert before["groups"] == 0 and before["unlabelled_behind_cursor"] == 0
    assert "no pass has committed a checkpoint" in before["problems"][0]
    assert not any(os_client.indices.exists(index=f"{index_prefix}{name}") for name in ("state", "results", "dead"))

    detector = FakeDetector()
    run_once(settings, detector)
    os_client.indices.refresh(index=f"{index_prefix}*")
    code, after = status_command(settings)
    results = [hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)]
    assert code == 0 and after["problems"] == []
    assert after["groups"] == len(results) and after["anomalous_groups"] == sum(r["label"] == "anomalous" for r in results)
    assert after["groups_by_model_version"] == {detector.version: len(results)}
    assert after["dead_letters"] == 0 and after["unlabelled_behind_cursor"] == 0
    # `once` released the lease: nobody is active, and the last holder is named.
    assert after["worker_active"] is False and after["lease_holder"].startswith("test/")
    newest = max(datetime.strptime(source["@timestamp"], "%y%m%d %H%M%S") for _, source in documents)
    assert after["newest_document"].startswith(newest.strftime("%Y-%m-%dT%H:%M:%S"))
    assert after["cursor"] <= after["read_up_to"] <= after["newest_document"]

    # A document stamped before the cursor that no pass will read: flagged, with the backfill to run.
    cursor = datetime.fromisoformat(after["cursor"])
    first = datetime.strptime(documents[0][1]["@timestamp"], "%y%m%d %H%M%S")
    assert first < cursor.replace(tzinfo=None)
    add_documents(
        os_client,
        settings.source.index,
        [("late", {"@timestamp": documents[0][1]["@timestamp"], "message": "Receiving block blk_42", "line": 0})],
    )
    code, late = status_command(settings)
    assert code == 1 and late["unlabelled_behind_cursor"] == 1
    (problem,) = late["problems"]
    assert "1 documents before the cursor carry no label" in problem
    assert f"logllm backfill --source {settings.source.index} --in-place --end {late['cursor']}" in problem
    # The in-process reader agrees with the command.
    assert read_status(settings).unlabelled_behind_cursor == 1


def test_status_of_a_missing_source_index_names_the_setting(index_prefix: str) -> None:
    done = cli_command(worker_settings(index_prefix), "status")
    assert done.returncode == 2
    assert f"LOGLLM_SOURCE__INDEX='{index_prefix}logs': no such index" in done.stderr
