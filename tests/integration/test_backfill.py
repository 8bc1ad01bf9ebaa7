"""`logllm backfill` on the real node: same labels as the live worker, whatever the slices, in
place or as copies, after a kill -9 and a rerun, with nothing duplicated.

Labels are compared per document: label, score, model version and the members of the group
that labelled it. In place the group ids are the live worker's too; copies name their own
index in their group ids (see enricher/backfill.py), so there the groups are compared by their
members. The detector is the fast fake one: grouping, paging and writing are under test.

Run as a module, this file is the backfill subprocess the kill -9 test kills:
    python -m tests.integration.test_backfill SOURCE DEST SLICES   (settings from LOGLLM_*)
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch
from tqdm import tqdm

from enricher import backfill
from enricher.backfill import (
    BackfillRequest,
    backfill_checkpoint_id,
    choose_copy_method,
    cluster_has_reindex,
    run_backfill,
)
from enricher.service import run_once
from enricher.settings import Settings
from model.errors import UserError
from model.preprocess import HDFS_BLOCK_ID
from tests.fakes import FakeDetector
from tests.integration.worker_support import (
    REPO,
    all_hits,
    create_source,
    hdfs_documents,
    hdfs_lines,
    malformed_documents,
    snapshot,
    subprocess_env,
    wait_until,
    worker_settings,
)

LINES = 1500


def documents(lines: int = LINES) -> list[tuple[str, dict[str, Any]]]:
    return hdfs_documents(hdfs_lines(lines)) + malformed_documents()


def labels_by_doc(client: OpenSearch, index: str, results_index: str) -> dict[str, Any]:
    """Per document id: (label, score, model version, the member ids of its group), or its
    dead-letter reason; None if unlabelled."""
    members: dict[str, frozenset[str]] = {
        hit["_id"]: frozenset(doc["id"] for doc in hit["_source"]["docs"]) for hit in all_hits(client, results_index)
    }
    labels: dict[str, Any] = {}
    for hit in all_hits(client, index):
        anomaly = hit["_source"].get("anomaly")
        if anomaly is None:
            labels[hit["_id"]] = None
        elif anomaly["dead_letter"] is not None:
            labels[hit["_id"]] = ("dead", anomaly["dead_letter"])
        else:
            group = members.get(anomaly["group_id"], frozenset())
            labels[hit["_id"]] = (anomaly["label"], anomaly["score"], anomaly["model_version"], group)
    return labels


def groups_of(client: OpenSearch, results_index: str, source: str) -> list[frozenset[str]]:
    """The member ids of every group written by whoever labelled `source` (results name it)."""
    return sorted(
        (frozenset(doc["id"] for doc in hit["_source"]["docs"]) for hit in all_hits(client, results_index)
         if hit["_source"]["docs"][0]["index"] == source),
        key=sorted,
    )


def without(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in keys}


def live_labels(client: OpenSearch, settings: Settings) -> dict[str, Any]:
    create_source(client, settings.source.index, documents())
    summary = run_once(settings, FakeDetector())
    assert summary.docs_read > LINES and summary.open_groups == 0
    return labels_by_doc(client, settings.source.index, settings.sink.results_index)


def test_in_place_backfill_writes_exactly_what_the_live_worker_writes(os_client: OpenSearch, index_prefix: str) -> None:
    settings = worker_settings(index_prefix, source={"page_size": 100})
    create_source(os_client, settings.source.index, documents())
    run_once(settings, FakeDetector())
    live = snapshot(os_client, settings)
    for index in (settings.source.index, settings.sink.results_index, settings.sink.dead_letter_index):
        os_client.indices.delete(index=index)
    create_source(os_client, settings.source.index, documents())

    report = run_backfill(settings, BackfillRequest(settings.source.index, None, slices=4), FakeDetector())

    backfilled = snapshot(os_client, settings)
    assert report.checkpoint_id == f"backfill:{settings.source.index}" and report.copy is None
    assert report.labelling.open_groups == 0
    assert all(anomaly is not None for anomaly in live["docs"].values())
    assert backfilled["docs"] == live["docs"]  # label, score, group id, model version of every document
    # Results and dead letters name the checkpoint that wrote them; everything else is equal.
    assert {k: without(v, "checkpoint_id") for k, v in backfilled["results"].items()} == {
        k: without(v, "checkpoint_id") for k, v in live["results"].items()
    }
    assert {k: without(v, "checkpoint_id") for k, v in backfilled["dead"].items()} == {
        k: without(v, "checkpoint_id") for k, v in live["dead"].items()
    }


def test_copies_with_1_and_4_slices_carry_the_live_workers_labels(os_client: OpenSearch, index_prefix: str) -> None:
    settings = worker_settings(index_prefix, source={"page_size": 100})
    source = settings.source.index
    live = live_labels(os_client, settings)
    live_groups = groups_of(os_client, settings.sink.results_index, source)
    originals = {hit["_id"]: without(hit["_source"], "anomaly") for hit in all_hits(os_client, source)}

    for slices in (1, 4):
        dest = f"{index_prefix}copy{slices}"
        report = run_backfill(settings, BackfillRequest(source, dest, slices=slices), FakeDetector())

        assert report.copy is not None and report.copy.method == "client"  # the local node has no _reindex
        assert (report.copy.copied, report.copy.already_present) == (len(originals), 0)
        copies = all_hits(os_client, dest)
        assert len(copies) == len(originals)  # one copy per document, same ids
        assert {hit["_id"]: without(hit["_source"], "anomaly") for hit in copies} == originals
        assert labels_by_doc(os_client, dest, settings.sink.results_index) == live
        assert groups_of(os_client, settings.sink.results_index, dest) == live_groups


def test_a_killed_backfill_resumes_to_the_uninterrupted_result(
    os_client: OpenSearch, index_prefix: str, tmp_path: Path
) -> None:
    settings = worker_settings(
        index_prefix, source={"page_size": 100}, scoring={"batch_groups": 2}, state={"lease_ttl_s": 2}
    )
    source, dest = settings.source.index, f"{index_prefix}copy"
    create_source(os_client, source, documents(3000))
    run_backfill(settings, BackfillRequest(source, dest, slices=2), FakeDetector())
    expected = snapshot_of(os_client, settings, dest)
    for index in (dest, settings.sink.results_index, settings.sink.dead_letter_index, settings.state.index):
        os_client.indices.delete(index=index)

    # 0.2 s per detector call and two groups per batch: the labelling takes far longer than the
    # wait for its first checkpoint, so the kill lands in the middle of it.
    env = subprocess_env(settings, LOGLLM_TEST_DETECTOR_DELAY_S="0.2")
    with (tmp_path / "backfill.log").open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_backfill", source, dest, "2"],
            cwd=REPO, env=env, stdout=log, stderr=log,
        )
        try:
            position = wait_until(lambda: checkpoint_position(os_client, settings, dest), 180, "a first checkpoint")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
    interrupted = snapshot_of(os_client, settings, dest)
    assert 0 < sum(anomaly is not None for anomaly in interrupted["docs"].values()) < len(expected["docs"])

    report = run_backfill(settings, BackfillRequest(source, dest, slices=2, lease_wait_s=30), FakeDetector())

    assert report.copy is not None and report.copy.copied + report.copy.already_present == len(expected["docs"])
    assert report.copy.already_present == len(expected["docs"])  # the killed run had copied everything
    assert report.labelling.docs_read < len(expected["docs"]), position  # resumed, not started over
    assert snapshot_of(os_client, settings, dest) == expected  # same labels, results, dead letters; none doubled


def snapshot_of(client: OpenSearch, settings: Settings, index: str) -> dict[str, Any]:
    return snapshot(client, settings.model_copy(update={"source": settings.source.model_copy(update={"index": index})}))


def checkpoint_position(client: OpenSearch, settings: Settings, dest: str) -> Any:
    checkpoint_id = backfill_checkpoint_id(settings.source.index, dest)
    found = client.get(
        index=settings.state.index, id=f"checkpoint:{checkpoint_id}", params={"ignore": [404, 503]}
    )
    return found["_source"]["state"]["read_position"] if found.get("found") else None


def test_a_time_range_labels_only_the_documents_inside_it(
    os_client: OpenSearch, index_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = worker_settings(index_prefix, source={"page_size": 50})
    source = settings.source.index
    create_source(os_client, source, hdfs_documents(hdfs_lines(800)))
    stamps = sorted({hit["sort"][0] for hit in os_client.search(
        index=source, body={"size": 1000, "sort": [{"@timestamp": "asc"}], "_source": False})["hits"]["hits"]})
    start, end = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    bars: list[tqdm[Any]] = []

    def visible_bar(total: int, initial: int, what: str = "label") -> tqdm[Any]:
        bars.append(tqdm(total=total, initial=initial, unit="doc", file=io.StringIO(), mininterval=0))
        return bars[-1]

    monkeypatch.setattr(backfill, "_progress_bar", visible_bar)

    run_backfill(settings, BackfillRequest(source, None, slices=3, start_ms=start, end_ms=end), FakeDetector())

    os_client.indices.refresh(index=source)
    hits = os_client.search(index=source, body={"size": 1000, "sort": [{"@timestamp": "asc"}]})["hits"]["hits"]
    inside = [hit for hit in hits if start <= hit["sort"][0] < end]
    assert inside and len(inside) < len(hits)
    assert all(hit["_source"].get("anomaly", {}).get("label") for hit in inside)
    # The progress bar counted the range, and every document of it went through.
    assert len(bars) == 1 and bars[0].total == bars[0].n == len(inside)
    assert "doc/s" in bars[0].fp.getvalue()  # type: ignore[attr-defined]
    assert not any("anomaly" in hit["_source"] for hit in hits if not start <= hit["sort"][0] < end)


def test_the_local_node_has_no_reindex_so_copies_take_the_client_path(os_client: OpenSearch, index_prefix: str) -> None:
    assert cluster_has_reindex(os_client.nodes.info(metric="plugins")) is False
    assert choose_copy_method("auto", False) == "client"
    settings = worker_settings(index_prefix)
    create_source(os_client, settings.source.index, hdfs_documents(hdfs_lines(50)))
    with pytest.raises(UserError, match="no reindex module"):
        run_backfill(
            settings, BackfillRequest(settings.source.index, f"{index_prefix}copy", copy="server"), FakeDetector()
        )


def test_groups_spanning_slices_stay_whole(os_client: OpenSearch, index_prefix: str) -> None:
    """The reason slices are merged before grouping: with 4 slices, most blocks have lines in
    several slices, yet every block is one group."""
    settings = worker_settings(index_prefix, grouping={"inactivity_gap_s": 86_400, "max_length": 128})
    source = settings.source.index
    create_source(os_client, source, hdfs_documents(hdfs_lines(600)))
    run_backfill(settings, BackfillRequest(source, None, slices=4), FakeDetector())

    blocks: dict[str, set[str]] = defaultdict(set)
    for hit in all_hits(os_client, source):
        blocks[HDFS_BLOCK_ID.findall(hit["_source"]["message"])[0]].add(hit["_id"])
    slice_of = slices_of(os_client, source, 4)
    assert sum(len({slice_of[doc] for doc in members}) > 1 for members in blocks.values()) > len(blocks) // 2
    assert sorted(map(sorted, blocks.values())) == sorted(
        map(sorted, groups_of(os_client, settings.sink.results_index, source))
    )


def slices_of(client: OpenSearch, index: str, slices: int) -> dict[str, int]:
    """Which PIT slice each document of `index` falls in."""
    pit = client.create_pit(index=index, params={"keep_alive": "1m"})["pit_id"]
    try:
        return {
            hit["_id"]: number
            for number in range(slices)
            for hit in client.search(
                body={"size": 10_000, "pit": {"id": pit}, "slice": {"id": number, "max": slices}, "_source": False}
            )["hits"]["hits"]
        }
    finally:
        client.delete_pit(body={"pit_id": [pit]})


def _main() -> int:
    """The backfill subprocess of the kill -9 test: the real `run_backfill`, fake detector."""
    import logging

    from enricher.settings import load_settings

    logging.basicConfig(level=logging.INFO)
    source, dest, slices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    detector = FakeDetector(delay_s=float(os.environ.get("LOGLLM_TEST_DETECTOR_DELAY_S", "0")))
    run_backfill(load_settings(), BackfillRequest(source, dest, slices=slices, progress=False), detector)
    return 0


if __name__ == "__main__":
    sys.exit(_main())


@pytest.mark.parametrize("copy", [False, True], ids=["in-place", "copy"])
def test_a_source_query_backfills_only_its_documents(os_client: OpenSearch, index_prefix: str, copy: bool) -> None:
    settings = worker_settings(index_prefix, source={"page_size": 50, "query": {"term": {"service.keyword": "hdfs"}}})
    source = settings.source.index
    documents = [
        (doc_id, {**fields, "service": "hdfs" if int(doc_id) % 4 else "other"})
        for doc_id, fields in hdfs_documents(hdfs_lines(300))
    ]
    create_source(os_client, source, documents)
    dest = f"{index_prefix}copy" if copy else None
    report = run_backfill(settings, BackfillRequest(source, dest, slices=2), FakeDetector())
    assert report.checkpoint_id.startswith(f"backfill:{source}{'->' + dest if dest else ''}?query=")
    wanted = {doc_id for doc_id, fields in documents if fields["service"] == "hdfs"}
    labelled = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, dest or source)}
    # A copy takes only the query's documents; in place, the others stay untouched.
    assert set(labelled) == (wanted if copy else {doc_id for doc_id, _ in documents})
    assert {doc_id for doc_id, doc in labelled.items() if "anomaly" in doc} == wanted
