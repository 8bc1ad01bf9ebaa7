"""The worker end to end with a LogLLaMA folder on the real local OpenSearch node: `logllm once`
loads the folder through the manifest, labels every document, and writes the failed positions
as `anomaly.top_lines` (the line-level explanation); with `scoring.top_k`, by the rule at that K."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from opensearchpy import OpenSearch

from model.logkeys import LogKeyMap
from model.logllama import LogLLaMAArchitecture, LogLLaMADetector, with_top_k
from model.preprocess import HDFS_BLOCK_ID
from tests.integration.conftest import index_prefix, opensearch_url, os_client  # noqa: F401 (fixtures)
from tests.integration.worker_support import (
    all_hits,
    create_source,
    hdfs_documents,
    hdfs_lines,
    run_once_command,
    worker_settings,
)
from tests.model.conftest import FP32

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOVEL_ID = "novel-line"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """300 HDFS lines plus one line of a kind the key map never saw, inside the first block."""
    documents = hdfs_documents(hdfs_lines(300))
    first = documents[0][1]
    block = HDFS_BLOCK_ID.findall(first["message"])[0]
    novel = {"@timestamp": first["@timestamp"], "message": f"Disk quota exceeded while writing {block}", "line": 0}
    return [documents[0], (NOVEL_ID, novel), *documents[1:]]


@pytest.mark.parametrize("top_k", [None, 3], ids=["folder-k", "top_k-3"])
def test_once_with_a_logllama_folder_labels_documents_and_points_at_the_failed_lines(
    os_client: OpenSearch,  # noqa: F811
    index_prefix: str,  # noqa: F811
    tmp_path: Path,
    top_k: int | None,
) -> None:
    documents = _documents()
    keymap = LogKeyMap.fit(source["message"] for doc_id, source in documents if doc_id != NOVEL_ID)
    detector = LogLLaMADetector.create(LogLLaMAArchitecture(), keymap, k=7, runtime=FP32, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # fresh LoRA B matrices are zero; make the adapters matter
        for name, param in detector.model.decoder.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    folder = tmp_path / "logllama"
    version = detector.save(folder)

    settings = worker_settings(
        index_prefix,
        scoring={"model_dir": folder, "detector": "logllama", "batch_groups": 32, "top_k": top_k},
        runtime={"device": "cpu", "dtype": "float32", "quantize": "off", "threads": 1},
    )
    create_source(os_client, settings.source.index, documents)
    summary = run_once_command(settings, timeout_s=1800)
    assert summary["docs_read"] == summary["docs_labelled"] == len(documents)

    docs = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, settings.source.index)}
    results = {hit["_id"]: hit["_source"] for hit in all_hits(os_client, settings.sink.results_index)}
    # Another K is part of the version: labels written under the folder's K stay distinguishable.
    assert {doc["anomaly"]["model_version"] for doc in docs.values()} == {version if top_k is None else f"{version}-k{top_k}"}
    for result in results.values():
        members = [ref["id"] for ref in result["docs"]]
        tops = [ref["id"] for ref in result["top_lines"]]
        assert set(tops) <= set(members)
        assert (result["label"] == "anomalous") == bool(tops), result
    # The unseen line is <unk>, always outside the Top-K: its group is anomalous and points at it.
    novel = docs[NOVEL_ID]["anomaly"]
    assert novel["label"] == "anomalous" and NOVEL_ID in novel["top_lines"]
    group = results[novel["group_id"]]
    assert NOVEL_ID in [ref["id"] for ref in group["top_lines"]] and "<unk>" in group["answer"]
    # The worker's verdicts are the detector's on exactly each group's messages.
    sample = sorted(results.values(), key=lambda r: r["group_id"])[::5]
    verdicts = with_top_k(detector, top_k, "top_k").score([[docs[ref["id"]]["message"] for ref in r["docs"]] for r in sample])
    for result, verdict in zip(sample, verdicts, strict=True):
        assert result["label"] == ("anomalous" if verdict.label else "normal")
        assert [ref["id"] for ref in result["top_lines"]] == [result["docs"][i]["id"] for i in verdict.positions]
