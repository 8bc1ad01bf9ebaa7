"""Shared by the worker's integration tests: HDFS documents in an index, settings for a test's
indices, the settings as environment variables for subprocesses, and a snapshot of everything
the worker wrote (for "same as an uninterrupted run" comparisons)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch, helpers

from enricher.settings import Settings, load_settings
from enricher.sink import content_of
from model.preprocess import parse_line
from training.shared_data import HDFS_2PCT

REPO = Path(__file__).resolve().parents[2]

SOURCE_MAPPING: dict[str, Any] = {
    "properties": {
        # HDFS stamps are "yymmdd HHmmss"; ignore_malformed keeps a bad stamp from rejecting the
        # document, which then has no timestamp and must be dead-lettered, not skipped.
        "@timestamp": {
            "type": "date",
            "format": "yyMMdd HHmmss||strict_date_optional_time||epoch_millis",
            "ignore_malformed": True,
        },
        "message": {"type": "text"},
        "line": {"type": "long"},
    }
}

# Documents the worker cannot score, by expected dead-letter reason (message, timestamp).
MALFORMED: dict[str, tuple[str, dict[str, Any]]] = {
    "bad-missing-message": ("missing_message", {"@timestamp": "081109 203600"}),
    "bad-null-message": ("missing_message", {"@timestamp": "081109 203601", "message": None}),
    "bad-number": ("message_not_string", {"@timestamp": "081109 203602", "message": 12345}),
    "bad-list": ("message_not_string", {"@timestamp": "081109 203603", "message": ["blk_1 a", "b"]}),
    "bad-empty": ("no_session_key", {"@timestamp": "081109 203604", "message": ""}),
    "bad-no-key": ("no_session_key", {"@timestamp": "081109 203605", "message": "no block named here"}),
    "bad-no-timestamp": ("missing_timestamp", {"message": "Receiving block blk_42 at an unknown time"}),
    "bad-timestamp": ("missing_timestamp", {"@timestamp": "yesterday", "message": "Verification succeeded for blk_43"}),
}
HUGE_ID = "huge-message"
HUGE_MESSAGE = "Receiving block blk_4711 src: /10.0.0.1:5 dest: /10.0.0.1:50010 " + "x" * 1_000_000


def hdfs_lines(count: int) -> list[str]:
    """The first `count` raw lines of HDFS_2pct.log (complete blocks, real timestamps)."""
    with HDFS_2PCT.open(encoding="utf-8") as log:
        return [line.rstrip("\n") for line in itertools.islice(log, count)]


def hdfs_documents(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(id, source) per line: _id = line number, the log's own timestamp, the message content."""
    documents = []
    for number, raw in enumerate(lines, start=1):
        parsed = parse_line(raw, number, "hdfs")
        assert parsed is not None, f"HDFS line {number} does not parse"
        documents.append((str(number), {"@timestamp": raw[:13], "message": parsed.message, "line": number}))
    return documents


def create_source(client: OpenSearch, index: str, documents: list[tuple[str, dict[str, Any]]]) -> None:
    """Create `index` with SOURCE_MAPPING and bulk-index `documents`, refreshed."""
    client.indices.create(
        index=index, body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": SOURCE_MAPPING}
    )
    add_documents(client, index, documents)


def add_documents(client: OpenSearch, index: str, documents: list[tuple[str, dict[str, Any]]]) -> None:
    actions = ({"_index": index, "_id": doc_id, "_source": source} for doc_id, source in documents)
    indexed, errors = helpers.bulk(client, actions, chunk_size=500, max_chunk_bytes=50 * 2**20)
    assert (indexed, errors) == (len(documents), [])
    client.indices.refresh(index=index)


def malformed_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = [(doc_id, source) for doc_id, (_, source) in MALFORMED.items()]
    documents.append((HUGE_ID, {"@timestamp": "081109 203606", "message": HUGE_MESSAGE}))
    return documents


def worker_settings(prefix: str, **sections: dict[str, Any]) -> Settings:
    """Settings for the indices of one test: source `<prefix>logs`, results, dead letters and
    state under the same prefix (so the test's teardown deletes them), HDFS block sessions."""
    defaults: dict[str, dict[str, Any]] = {
        "opensearch": {"hosts": ["http://127.0.0.1:9200"], "timeout_s": 30},
        "source": {"index": f"{prefix}logs", "page_size": 500},
        "grouping": {"mode": "session", "inactivity_gap_s": 60, "max_length": 64},
        "scoring": {"batch_groups": 32},
        "sink": {"results_index": f"{prefix}results", "dead_letter_index": f"{prefix}dead"},
        "state": {"index": f"{prefix}state", "lease_ttl_s": 3, "worker_name": "test"},
        "retry": {"initial_backoff_s": 0.2, "max_backoff_s": 2, "max_elapsed_s": 120},
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return load_settings(**defaults)


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as LOGLLM_* variables, for a subprocess (secrets included, so tests only)."""
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            if value is None:
                continue
            key = f"LOGLLM_{section.upper()}__{name.upper()}"
            env[key] = ",".join(value) if isinstance(value, list) else str(value)
    return env


def subprocess_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A clean environment for a worker subprocess: PATH, the repo on PYTHONPATH, the settings."""
    keep = {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LOGLLM_SHARED_DATA", "LOGLLM_CACHE_DIR")
    }
    return {**keep, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **settings_env(settings), **extra}


def cli_command(settings: Settings, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m enricher.cli <argv>` with `settings` in its environment (the real command path)."""
    return subprocess.run(
        [sys.executable, "-m", "enricher.cli", *argv],
        cwd=REPO,
        env=subprocess_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def run_once_command(settings: Settings, timeout_s: float) -> dict[str, Any]:
    """`logllm once` (the detector the settings name): its JSON pass summary; fails the test with
    the end of its stderr if it exits non-zero."""
    once = cli_command(settings, "once", timeout_s=timeout_s)
    assert once.returncode == 0, once.stderr[-4000:]
    return json.loads(once.stdout.strip().splitlines()[-1])


def start_worker(settings: Settings, mode: str, log: Path, **extra: str) -> subprocess.Popen[str]:
    """`python -m tests.integration.worker_main MODE` (the real command path, fake detector)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.worker_main", mode],
        cwd=REPO,
        env=subprocess_env(settings, **extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def all_hits(client: OpenSearch, index: str) -> list[dict[str, Any]]:
    """Every document of `index` (up to 10,000), after a refresh."""
    if not client.indices.exists(index=index):
        return []
    client.indices.refresh(index=index)
    return client.search(index=index, body={"size": 10_000, "query": {"match_all": {}}})["hits"]["hits"]


def snapshot(client: OpenSearch, settings: Settings) -> dict[str, Any]:
    """What the worker wrote, without time fields: each source document's `anomaly` (None if
    unlabelled), each results document, each dead letter; by id."""
    return {
        "docs": {
            hit["_id"]: content_of(hit["_source"]["anomaly"]) if "anomaly" in hit["_source"] else None
            for hit in all_hits(client, settings.source.index)
        },
        "results": {hit["_id"]: content_of(hit["_source"]) for hit in all_hits(client, settings.sink.results_index)},
        "dead": {hit["_id"]: content_of(hit["_source"]) for hit in all_hits(client, settings.sink.dead_letter_index)},
    }


def wait_until(condition: Callable[[], Any], timeout_s: float = 120, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after the timeout
    (a bound for hung processes, not a performance assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)
