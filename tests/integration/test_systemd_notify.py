"""The worker speaks systemd's notify protocol: the real service loop (`run_service`, real node,
fast detector) in a subprocess, with NOTIFY_SOCKET and WATCHDOG_USEC set as systemd would, and a
datagram socket bound by the test standing in for systemd."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from tests.integration.worker_support import (
    REPO,
    create_source,
    hdfs_documents,
    hdfs_lines,
    subprocess_env,
    worker_settings,
)
from tests.unit.test_systemd import NotifyListener

# `logllm run`'s code path with the fake detector; heartbeats sampled faster than the 5 s default
# so a short watchdog timeout can be used.
WORKER = """
import sys
from enricher.service import Service, run_service
from enricher.settings import load_settings
from enricher.systemd.notify import SystemdNotifier
from tests.fakes import FakeDetector
Service.HEARTBEAT_S = 0.2
sys.exit(run_service(load_settings(), FakeDetector(), SystemdNotifier.from_environ()))
"""
WATCHDOG_S = 2.0
DOCS = 2000


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    """A notify socket standing in for systemd's: a socket file, or an abstract '@' name."""
    bound = NotifyListener.bind(request.param, tmp_path)
    yield bound
    bound.close()


def test_the_service_reports_ready_status_watchdog_and_stopping_over_a_real_socket(
    os_client: OpenSearch,
    index_prefix: str,
    listener: NotifyListener,
    tmp_path: Path,
) -> None:
    settings = worker_settings(index_prefix, schedule={"interval_s": 1})
    create_source(os_client, settings.source.index, hdfs_documents(hdfs_lines(DOCS)))
    env = subprocess_env(settings, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC=str(round(WATCHDOG_S * 1_000_000)))
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO, env=env, stderr=log.open("w"))
    try:
        (ready_at, ready), *_ = listener.wait_for("READY", timeout_s=120)
        assert ready["READY"] == "1"
        statuses = listener.wait_for("STATUS", 3, timeout_s=120)  # READY's, then two passes
        first_pass = statuses[1][1]["STATUS"]
        assert first_pass.startswith(f"active: last pass read {DOCS} docs"), first_pass
        assert statuses[2][1]["STATUS"].startswith("active: last pass read 0 docs")  # nothing new
        pings = listener.wait_for("WATCHDOG", 5, timeout_s=60)
        gaps = [later - earlier for (earlier, _), (later, _) in zip(pings, pings[1:], strict=False)]
        # Half the timeout apart (the bound only rules out a broken schedule, not a slow box).
        assert 0.6 * WATCHDOG_S / 2 < statistics.median(gaps) < 1.4 * WATCHDOG_S / 2, gaps
        assert pings[0][0] - ready_at < WATCHDOG_S  # the first ping comes within one timeout
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    (_, stopping), *_ = listener.wait_for("STOPPING")
    assert stopping["STATUS"].startswith("stopping")
    stopped_at = listener.with_key("STOPPING")[0][0]
    assert not [at for at, _ in listener.with_key("WATCHDOG") if at > stopped_at]
