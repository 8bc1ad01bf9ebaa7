"""Faults on the real node: kill -9 at random points, a node restart mid-run, 429s and dropped
connections through a proxy, two workers at once, SIGTERM.

Every scenario ends the same way: the documents, results and dead letters equal those of an
uninterrupted run on the same data (`snapshot`: time fields aside), so nothing was lost,
nothing is duplicated, and no label differs. The worker runs the real command path with the
fast fake detector (tests/integration/worker_main.py); the model is not what is under test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from enricher.localnode import LocalNode, default_home
from enricher.service import build_worker, run_once
from enricher.settings import Settings
from tests.fakes import FakeDetector
from tests.integration.faultproxy import FaultProxy
from tests.integration.worker_support import (
    MALFORMED,
    add_documents,
    create_source,
    hdfs_documents,
    hdfs_lines,
    malformed_documents,
    snapshot,
    start_worker,
    wait_until,
    worker_settings,
)

KILLS = 20
SEED = 20261123


def documents(lines: int) -> list[tuple[str, dict[str, Any]]]:
    return hdfs_documents(hdfs_lines(lines)) + malformed_documents()


def reference_then_reset(client: OpenSearch, settings: Settings, docs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Run once without faults on `docs`, keep the snapshot, then put the indices back as they
    were before (same names, so group ids and document ids are comparable)."""
    create_source(client, settings.source.index, docs)
    run_once(settings, FakeDetector())
    expected = snapshot(client, settings)
    reset(client, settings, docs)
    return expected


def reset(client: OpenSearch, settings: Settings, docs: list[tuple[str, dict[str, Any]]]) -> None:
    for index in (settings.source.index, settings.sink.results_index, settings.sink.dead_letter_index, settings.state.index):
        client.indices.delete(index=index, ignore_unavailable=True)
    create_source(client, settings.source.index, docs)


def assert_complete(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert all(anomaly is not None for anomaly in expected["docs"].values())
    assert actual["docs"] == expected["docs"]
    assert actual["results"] == expected["results"]  # same group ids: no duplicates, none missing
    assert {letter["source_id"] for letter in actual["dead"].values()} == set(MALFORMED)
    assert actual["dead"] == expected["dead"]


def checkpoint_position(client: OpenSearch, settings: Settings) -> Any:
    """The stored read position (None before the first checkpoint, or while the state index is
    still being created by the worker)."""
    found = client.get(
        index=settings.state.index, id=f"checkpoint:{settings.checkpoint_id}", params={"ignore": [404, 503]}
    )
    return found["_source"]["state"]["read_position"] if found.get("found") else None


def running(pid: int) -> bool:
    """Whether `pid` still runs (a child that exited stays a zombie until the zygote reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_kill_9_at_random_points_twenty_times_then_finish(os_client: OpenSearch, index_prefix: str, tmp_path: Path) -> None:
    docs = documents(3000)
    # Two groups per batch and 0.2 s per detector call: a full run takes at least ~30 s of
    # batches, far more than the twenty short lives below can get through.
    settings = worker_settings(
        index_prefix, source={"page_size": 100}, scoring={"batch_groups": 2}, state={"lease_ttl_s": 2}
    )
    expected = reference_then_reset(os_client, settings, docs)
    rng = random.Random(SEED)
    zygote = start_worker(settings, "zygote", tmp_path / "zygote.log", LOGLLM_TEST_DETECTOR_DELAY_S="0.2")
    assert zygote.stdin is not None and zygote.stdout is not None

    def command(text: str) -> int:
        zygote.stdin.write(text + "\n")  # type: ignore[union-attr]
        zygote.stdin.flush()  # type: ignore[union-attr]
        return int(zygote.stdout.readline())  # type: ignore[union-attr]

    positions, statuses = [], []
    try:
        for _ in range(KILLS):
            before = checkpoint_position(os_client, settings)
            child = command("fork")
            if rng.random() < 0.3:
                # Anywhere: start-up, waiting for the dead worker's lease, re-reading, writing.
                time.sleep(rng.uniform(0, 3))
            else:
                # After it made progress, at a random moment of the following batches.
                wait_until(
                    lambda before=before, child=child: checkpoint_position(os_client, settings) != before
                    or not running(child),
                    300,
                    "progress",
                )
                time.sleep(rng.uniform(0, 0.3))
            os.kill(child, signal.SIGKILL)
            statuses.append(command(f"wait {child}"))
            positions.append(checkpoint_position(os_client, settings))
        final = command("fork")
        assert command(f"wait {final}") == 0, log_text(tmp_path / "zygote.log")[-3000:]
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    # Every kill hit a running worker, and the checkpoint was caught at many positions.
    assert statuses == [-signal.SIGKILL] * KILLS
    assert len({json.dumps(p) for p in positions}) > KILLS // 2
    assert_complete(expected, snapshot(os_client, settings))


def test_429s_and_dropped_connections_are_retried_without_loss(os_client: OpenSearch, index_prefix: str) -> None:
    docs = documents(1500)
    settings = worker_settings(index_prefix, source={"page_size": 200}, scoring={"batch_groups": 16})
    expected = reference_then_reset(os_client, settings, docs)

    def plan(number: int, method: str, path: str) -> str | None:
        if number % 7 == 1:
            return "429"
        if number % 11 == 4:
            return "drop_before"
        if number % 13 == 6:
            return "drop_after"  # applied, answer lost: bulk writes, checkpoint and lease CAS
        if "_bulk" in path and number % 2 == 0:
            return "bulk_items"
        return None

    proxy = FaultProxy("http://127.0.0.1:9200", plan).start()
    try:
        faulty = settings.model_copy(update={"opensearch": settings.opensearch.model_copy(update={"hosts": [proxy.url]})})
        parts = build_worker(faulty, FakeDetector())
        assert parts.lease.acquire().held
        summary = parts.worker.run_once()
        parts.lease.release()
        parts.client.close()
    finally:
        proxy.stop()
    assert set(proxy.injected) == {"429", "drop_before", "drop_after", "bulk_items"}
    assert summary.items_retried >= proxy.injected["bulk_items"]
    retried = {sample.labels["operation"] for sample in parts.metrics.retries.collect()[0].samples if sample.value}
    assert "bulk write" in retried and "bulk item" in retried
    assert_complete(expected, snapshot(os_client, settings))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def second_node() -> Iterator[LocalNode]:
    """A node of its own for the restart test, so the shared node keeps serving everyone else.

    It lives beside the shared node's home, is installed once (from Maven's cache) and stopped
    after the tests of this module.
    """
    home = default_home(os.environ, os.geteuid() == 0).parent / "opensearch-restart-test"
    node = LocalNode(home=home, port=free_port())
    node.start(timeout=300)
    yield node
    node.stop()


def log_text(path: Path) -> str:
    return path.read_text(errors="replace")


@pytest.mark.slow
def test_a_node_restart_mid_run_is_ridden_out(
    os_client: OpenSearch, index_prefix: str, second_node: LocalNode, tmp_path: Path
) -> None:
    docs = documents(1500)
    settings = worker_settings(
        index_prefix,
        source={"page_size": 100},
        scoring={"batch_groups": 4},
        state={"lease_ttl_s": 30},
        retry={"max_backoff_s": 2, "max_elapsed_s": 600},
    )
    expected = reference_then_reset(os_client, settings, docs)
    on_second = settings.model_copy(
        update={"opensearch": settings.opensearch.model_copy(update={"hosts": [second_node.url]})}
    )
    other = OpenSearch(hosts=[second_node.url], timeout=60)
    log = tmp_path / "worker.log"
    try:
        reset(other, on_second, docs)
        worker = start_worker(on_second, "once", log, LOGLLM_TEST_DETECTOR_DELAY_S="0.3")
        wait_until(lambda: checkpoint_position(other, on_second) is not None, 300, "the first checkpoint")
        second_node.stop()
        second_node.start(timeout=300)
        worker.communicate(timeout=1200)
        assert worker.returncode == 0, log_text(log)[-4000:]
        assert "retry 1 in" in log_text(log)  # it did meet the node down, and retried
        assert_complete(expected, snapshot(other, on_second))
    finally:
        for index in (on_second.source.index, on_second.sink.results_index, on_second.sink.dead_letter_index,
                      on_second.state.index):
            other.indices.delete(index=index, ignore_unavailable=True)
        other.close()


def metric(port: int, name: str) -> float | None:
    """A sample's value from the worker's /metrics endpoint (None while it is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.slow
def test_two_workers_one_active_then_a_clean_handover_on_sigterm(
    os_client: OpenSearch, index_prefix: str, tmp_path: Path
) -> None:
    docs = documents(1500)
    settings = worker_settings(
        index_prefix,
        source={"page_size": 100},
        scoring={"batch_groups": 4},
        state={"lease_ttl_s": 3},
        schedule={"interval_s": 0.5},
    )
    expected = reference_then_reset(os_client, settings, docs)
    reset(os_client, settings, [])  # the logs arrive once both workers run
    ports = free_port(), free_port()
    logs = tmp_path / "a.log", tmp_path / "b.log"
    workers: list[subprocess.Popen[str]] = []
    try:
        for port, log in zip(ports, logs, strict=True):
            configured = settings.model_copy(
                update={"metrics": settings.metrics.model_copy(update={"port": port, "address": "127.0.0.1"})}
            )
            workers.append(start_worker(configured, "run", log, LOGLLM_TEST_DETECTOR_DELAY_S="0.5"))
            if len(workers) == 1:  # let the first one become the active worker
                wait_until(lambda: metric(ports[0], "logllm_lease_held") == 1, 300, "worker a to take the lease")
        a, b = workers
        wait_until(lambda: "standby" in log_text(logs[1]), 300, "worker b to report standby")
        assert metric(ports[0], "logllm_lease_held") == 1
        wait_until(lambda: metric(ports[1], "logllm_lease_held") == 0, 60, "worker b's metrics")
        add_documents(os_client, settings.source.index, docs)
        assert "acquired" not in log_text(logs[1])

        # SIGTERM a in the middle of its pass (about 40 batches of 0.5 s each): it finishes the
        # batch in flight, releases the lease and exits 0.
        wait_until(lambda: checkpoint_position(os_client, settings) is not None, 300, "worker a's progress")
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=300) == 0, log_text(logs[0])[-3000:]
        assert "stop requested" in log_text(logs[0]) and "released" in log_text(logs[0])

        # b takes over at once (the lease was released, not left to expire) and finishes.
        wait_until(lambda: snapshot(os_client, settings)["docs"] == expected["docs"], 600, "worker b to finish")
        assert metric(ports[1], "logllm_lease_held") == 1
        assert (metric(ports[1], "logllm_docs_written_total") or 0) > 0
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=300) == 0, log_text(logs[1])[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    b_log = log_text(logs[1])
    assert b_log.index("standby") < b_log.index("acquired")
    assert_complete(expected, snapshot(os_client, settings))
