"""The enrichment worker against the real local node: HDFS lines with the log's own timestamps,
`logllm once` with a real small detector, reruns, late documents, and bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from enricher.service import build_worker, run_once
from enricher.settings import Settings
from enricher.status import read_status
from model.detector import RuntimeSettings, load_detector
from model.errors import UserError
from model.preprocess import HDFS_BLOCK_ID
from tests.fakes import FakeDetector
from tests.integration.worker_support import (
    HUGE_ID,
    MALFORMED,
    REPO,
    add_documents,
    all_hits,
    create_source,
    hdfs_documents,
    hdfs_lines,
    malformed_documents,
    run_once_command,
    snapshot,
    subprocess_env,
    worker_settings,
)

CPU_FP32 = {"device": "cpu", "dtype": "float32", "quantize": "off"}


def expected_sessions(documents: list[tuple[str, dict[str, Any]]], gap_s: float, max_length: int) -> list[list[str]]:
    """HDFS block sessions computed independently of the worker: per block id, in time order
    (ties by id, as the worker sorts), cut at gaps longer than `gap_s` or at `max_length`."""
    def moment(doc: tuple[str, dict[str, Any]]) -> datetime:
        return datetime.strptime(doc[1]["@timestamp"], "%y%m%d %H%M%S")

    by_block: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for doc in sorted(documents, key=lambda d: (moment(d), d[0])):
        by_block.setdefault(HDFS_BLOCK_ID.findall(doc[1]["message"])[0], []).append(doc)
    sessions = []
    for docs in by_block.values():
        current: list[tuple[str, dict[str, Any]]] = []
        for doc in docs:
            if current and ((moment(doc) - moment(current[-1])).total_seconds() > gap_s or len(current) == max_length):
                sessions.append(current)
                current = []
            current.append(doc)
        sessions.append(current)
    return sorted([doc_id for doc_id, _ in session] for session in sessions)


@pytest.mark.slow
def test_once_labels_every_document_and_a_second_run_changes_nothing(
    os_client: OpenSearch, index_prefix: str, small_detector: tuple[Any, Path]
) -> None:
    # The folder only: the session's detector object stays untouched for the model tests
    # (its caches would hold vectors computed in other batches, equal only up to float noise).
    _, folder = small_detector
    documents = hdfs_documents(hdfs_lines(1200))
    settings = worker_settings(index_prefix, scoring={"model_dir": folder, "batch_groups": 32}, runtime=CPU_FP32)
    create_source(os_client, settings.source.index, documents)

    # The real command, loading the real detector folder.
    summary = run_once_command(settings, timeout_s=3600)
    assert summary["docs_read"] == summary["docs_labelled"] == len(documents)
    assert summary["dead_lettered"] == {} and summary["open_groups"] == 0

    detector = load_detector(folder, RuntimeSettings(**CPU_FP32))
    docs = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, settings.source.index)}
    results = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)}
    assert all(doc["anomaly"]["model_version"] == detector.version for doc in docs.values())
    assert sorted([ref["id"] for ref in result["docs"]] for result in results.values()) == expected_sessions(
        documents, settings.grouping.inactivity_gap_s, settings.grouping.max_length
    )
    assert summary["results_written"] == len(results)
    for doc_id, doc in docs.items():
        result = results[doc["anomaly"]["group_id"]]
        assert doc_id in [ref["id"] for ref in result["docs"]]
        assert (doc["anomaly"]["label"], doc["anomaly"]["score"]) == (result["label"], result["score"])
    # Labels are the detector's verdicts on exactly each group's messages (a sample of groups).
    sample = sorted(results.values(), key=lambda r: r["group_id"])[::10]
    verdicts = detector.score([[docs[ref["id"]]["message"] for ref in result["docs"]] for result in sample])
    for result, verdict in zip(sample, verdicts, strict=True):
        assert result["label"] == ("anomalous" if verdict.label else "normal")
        assert result["score"] == pytest.approx(verdict.score, abs=1e-4)  # batch composition differs

    # Again, in process with the same detector: nothing new, nothing rewritten (scored_at included).
    before = {name: all_hits(os_client, index) for name, index in _indices(settings).items()}
    again = run_once(settings, detector)
    assert (again.docs_read, again.groups_scored, again.batches) == (0, 0, 0)
    assert {name: all_hits(os_client, index) for name, index in _indices(settings).items()} == before


def _indices(settings: Settings) -> dict[str, str]:
    return {
        "source": settings.source.index,
        "results": settings.sink.results_index,
        "dead": settings.sink.dead_letter_index,
    }


def test_documents_arriving_late_within_the_lag_are_picked_up(os_client: OpenSearch, index_prefix: str) -> None:
    documents = hdfs_documents(hdfs_lines(600))
    lag_s = 120
    settings = worker_settings(index_prefix, source={"ingest_lag_s": lag_s, "page_size": 100})
    create_source(os_client, settings.source.index, documents)
    middle = datetime.strptime(documents[300][1]["@timestamp"], "%y%m%d %H%M%S").replace(tzinfo=UTC)
    clock = {"now": (middle + timedelta(seconds=lag_s)).timestamp()}  # the watermark sits mid-data
    parts = build_worker(settings, FakeDetector(), clock=lambda: clock["now"])
    assert parts.lease.acquire().held

    first = parts.worker.run_once()
    assert 0 < first.docs_read < len(documents) and first.open_groups > 0
    # Arrives after that pass but stamped after its watermark: within the allowance.
    within = ("late-within", {"@timestamp": (middle + timedelta(seconds=5)).strftime("%y%m%d %H%M%S"),
                              "message": "Verification succeeded for blk_-777"})
    # Stamped before the watermark that has passed: later than the allowance.
    beyond = ("late-beyond", {"@timestamp": (middle - timedelta(seconds=90)).strftime("%y%m%d %H%M%S"),
                              "message": "Verification succeeded for blk_-778"})
    add_documents(os_client, settings.source.index, [within, beyond])

    clock["now"] += 3600
    second = parts.worker.run_once()
    labelled = {hit["_id"]: hit["_source"].get("anomaly") for hit in all_hits(os_client, settings.source.index)}
    assert labelled["late-within"] is not None and labelled["late-within"]["label"] in ("normal", "anomalous")
    assert labelled["late-beyond"] is None
    assert all(anomaly is not None for doc_id, anomaly in labelled.items() if doc_id != "late-beyond")
    assert second.docs_read == len(documents) - first.docs_read + 1
    # The next pass looks behind the cursor the last one left, and reports what it passed by.
    third = parts.worker.run_once()
    assert third.late_documents == 1 and parts.metrics.late_docs._value.get() == 1  # noqa: SLF001
    parts.client.close()


def test_a_label_threshold_labels_by_score_and_stamps_the_threshold(os_client: OpenSearch, index_prefix: str) -> None:
    documents = hdfs_documents(hdfs_lines(600))
    settings = worker_settings(index_prefix, scoring={"batch_groups": 32, "label_threshold": 0.5})
    create_source(os_client, settings.source.index, documents)
    summary = run_once(settings, FakeDetector())
    assert summary.docs_read == len(documents)
    results = [hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)]
    assert {r["model_version"] for r in results} == {"fake-0001@score>=0.5"}
    assert all(r["label"] == ("anomalous" if r["score"] >= 0.5 else "normal") for r in results)
    # Groups the fake's own rule (score > 0.8) calls normal are anomalous here.
    assert any(0.5 <= r["score"] <= 0.8 and r["label"] == "anomalous" for r in results)
    # Those too point at a line (the one the score is about), and normal groups at none.
    assert all(bool(r["top_lines"]) == (r["label"] == "anomalous") for r in results)
    docs = [hit["_source"]["anomaly"] for hit in all_hits(os_client, settings.source.index)]
    assert all(d["model_version"] == "fake-0001@score>=0.5" for d in docs)
    assert all(d["label"] == ("anomalous" if d["score"] >= 0.5 else "normal") for d in docs)


def test_bad_documents_are_dead_lettered_once_and_huge_messages_scored(os_client: OpenSearch, index_prefix: str) -> None:
    settings = worker_settings(index_prefix)
    future = (datetime.now(UTC) + timedelta(days=30)).strftime("%y%m%d %H%M%S")
    normal = hdfs_documents(hdfs_lines(300))
    create_source(
        os_client,
        settings.source.index,
        normal + malformed_documents() + [("future", {"@timestamp": future, "message": "Receiving blk_5"})],
    )
    summary = run_once(settings, FakeDetector())

    expected_reasons: dict[str, int] = {}
    for reason, _ in MALFORMED.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary.dead_lettered == expected_reasons
    assert summary.messages_truncated == 1 and summary.future_documents == 1
    dead = {hit["_source"]["source_id"]: hit["_source"] for hit in all_hits(os_client, settings.sink.dead_letter_index)}
    assert set(dead) == set(MALFORMED)
    for doc_id, (reason, _) in MALFORMED.items():
        assert dead[doc_id]["reason"] == reason and dead[doc_id]["source_index"] == settings.source.index
    assert "'yesterday'" in dead["bad-timestamp"]["detail"] and dead["bad-number"]["message_preview"] == "12345"
    docs = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, settings.source.index)}
    for doc_id, (reason, _) in MALFORMED.items():
        assert docs[doc_id]["anomaly"]["dead_letter"] == reason and docs[doc_id]["anomaly"]["label"] is None
    assert docs[HUGE_ID]["anomaly"]["truncated"] is True and docs[HUGE_ID]["anomaly"]["label"] in ("normal", "anomalous")
    huge_group = next(
        hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)
        if HUGE_ID in [ref["id"] for ref in hit["_source"]["docs"]]
    )
    assert huge_group["truncated_messages"] == 1
    assert "anomaly" not in docs["future"]  # waits until its time has come
    assert all("anomaly" in doc for doc_id, doc in docs.items() if doc_id != "future")

    before = snapshot(os_client, settings)
    again = run_once(settings, FakeDetector())
    assert again.dead_lettered == {} and snapshot(os_client, settings) == before


def test_configuration_that_cannot_work_fails_at_start_with_the_setting_and_the_fix(
    os_client: OpenSearch, index_prefix: str
) -> None:
    settings = worker_settings(index_prefix)
    create_source(os_client, settings.source.index, hdfs_documents(hdfs_lines(20)))
    cases = [
        ({"source": {"index": f"{index_prefix}no-such-index"}}, "LOGLLM_SOURCE__INDEX='.*no-such-index': no such index"),
        ({"source": {"message_field": "msg"}}, r"LOGLLM_SOURCE__MESSAGE_FIELD='msg': no such field .*candidates: message"),
        ({"source": {"timestamp_field": "line"}}, "LOGLLM_SOURCE__TIMESTAMP_FIELD='line' is mapped as long"),
        ({"source": {"tiebreaker_field": "message"}}, "LOGLLM_SOURCE__TIEBREAKER_FIELD='message' is mapped as text"),
        ({"scoring": {"model_dir": "/nonexistent/detector"}}, "LOGLLM_SCORING__MODEL_DIR=/nonexistent/detector"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message):
            build_worker(worker_settings(index_prefix, **overrides))
    waiting = run_once(worker_settings(index_prefix, source={"index": f"{index_prefix}later-*"}), FakeDetector())
    assert waiting.docs_read == 0  # a pattern may match nothing yet: the worker waits for indices

    cli = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "once"],
        cwd=REPO,
        env=subprocess_env(worker_settings(index_prefix, source={"index": f"{index_prefix}missing"})),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert re.search(r"logllm once: error: LOGLLM_SOURCE__INDEX='.*missing': no such index", cli.stderr)


def test_a_source_query_labels_only_its_documents_and_workers_with_disjoint_queries_share_an_index(
    os_client: OpenSearch, index_prefix: str
) -> None:
    documents = [
        (doc_id, {**source, "service": "hdfs" if int(doc_id) % 3 else "other"})
        for doc_id, source in hdfs_documents(hdfs_lines(450))
    ]
    # One document per service without a timestamp: dead-lettered by its own service's worker only.
    documents += [(f"untimed-{name}", {"message": "Receiving block blk_7", "service": name}) for name in ("hdfs", "other")]
    service_of = {doc_id: source["service"] for doc_id, source in documents}
    workers = {
        name: worker_settings(index_prefix, source={"query": {"term": {"service.keyword": name}}})
        for name in ("hdfs", "other")
    }
    assert workers["hdfs"].checkpoint_id != workers["other"].checkpoint_id
    create_source(os_client, workers["hdfs"].source.index, documents)

    summary = run_once(workers["hdfs"], FakeDetector())
    assert summary.docs_read == sum(name == "hdfs" for doc_id, name in service_of.items() if not doc_id.startswith("untimed"))
    docs = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, workers["hdfs"].source.index)}
    assert {doc_id for doc_id, doc in docs.items() if "anomaly" in doc} == {
        doc_id for doc_id, name in service_of.items() if name == "hdfs"
    }
    assert docs["untimed-hdfs"]["anomaly"]["dead_letter"] == "missing_timestamp"
    results = all_hits(os_client, workers["hdfs"].sink.results_index)
    assert results and all(service_of[ref["id"]] == "hdfs" for hit in results for ref in hit["_source"]["docs"])
    # The other service's unlabelled documents are not this worker's: nothing is reported missing.
    assert read_status(workers["hdfs"]).unlabelled_behind_cursor == 0

    # The second worker has its own checkpoint and lease: it labels the rest, and the first
    # worker's next pass finds nothing new.
    run_once(workers["other"], FakeDetector())
    assert run_once(workers["hdfs"], FakeDetector()).docs_read == 0
    docs = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, workers["hdfs"].source.index)}
    assert all("anomaly" in doc for doc in docs.values())
    assert docs["untimed-other"]["anomaly"]["dead_letter"] == "missing_timestamp"


def test_a_source_query_the_cluster_rejects_fails_at_start_naming_the_setting(
    os_client: OpenSearch, index_prefix: str
) -> None:
    settings = worker_settings(index_prefix, source={"query": {"no_such_query": {"field": "x"}}})
    create_source(os_client, settings.source.index, hdfs_documents(hdfs_lines(10)))
    with pytest.raises(UserError, match=r"LOGLLM_SOURCE__QUERY=\{\"no_such_query\".*the cluster rejects it"):
        build_worker(settings, FakeDetector())
