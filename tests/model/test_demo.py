"""`logllm demo`, the README's first command, end to end: the real command in a subprocess, the
local OpenSearch node, the shipped detector. Its printed summary must be what the indices hold
and what the ground-truth file says; no figure of the model's quality is asserted."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opensearchpy import OpenSearch, helpers

from enricher.demo import LOGS_INDEX, PREFIX, RESULTS_INDEX, SAMPLE_LABELS
from enricher.localnode import ensure_running

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def node() -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[ensure_running()], timeout=60)
    yield client
    # The demo's indices have fixed names (it is the user's command); the test removes them.
    client.indices.delete(index=f"{PREFIX}*", expand_wildcards="all", ignore_unavailable=True)
    client.close()


def printed_rows(output: str) -> dict[str, str]:
    """The summary table's rows: "name<two or more spaces>value"."""
    return {m["name"]: m["value"] for m in re.finditer(r"^(?P<name>\S.*?)\s{2,}(?P<value>\S+)$", output, re.M)}


@pytest.mark.slow
def test_demo_prints_what_the_indices_hold_and_the_ground_truth(node: OpenSearch, tmp_path: Path) -> None:
    dashboards = tmp_path / "dashboards.ndjson"
    done = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "demo", "--keep", "--dashboards-file", str(dashboards)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = printed_rows(done.stdout)

    with SAMPLE_LABELS.open(newline="") as handle:
        truth = {row["BlockId"]: row["Label"] == "Anomaly" for row in csv.DictReader(handle)}
    node.indices.refresh(index=f"{PREFIX}*")
    results = [hit["_source"] for hit in helpers.scan(node, index=RESULTS_INDEX, query={"query": {"match_all": {}}})]
    flagged = {result["key"] for result in results if result["label"] == "anomalous"}
    labelled = node.count(index=LOGS_INDEX, body={"query": {"exists": {"field": "anomaly.label"}}})["count"]
    documents = node.count(index=LOGS_INDEX)["count"]

    assert labelled == documents > 0  # every line got a label
    assert int(rows["documents"]) == documents
    assert int(rows["groups (block sessions)"]) == len(results)
    assert {result["key"] for result in results} == set(truth)  # one session per block, none missing
    assert int(rows["anomalous groups"]) == sum(result["label"] == "anomalous" for result in results)
    assert int(rows["anomalous blocks found"]) == len(flagged)
    assert int(rows["anomalous blocks (ground truth)"]) == sum(truth.values())
    assert int(rows["true positives"]) == sum(truth[key] for key in flagged)
    assert int(rows["false positives"]) == sum(not truth[key] for key in flagged)
    assert int(rows["false negatives"]) == sum(truth.values()) - sum(truth[key] for key in flagged)
    assert rows["detector"] == results[0]["model_version"]
    assert f"dashboards: {dashboards}" in done.stdout
    assert LOGS_INDEX in dashboards.read_text() and RESULTS_INDEX in dashboards.read_text()
