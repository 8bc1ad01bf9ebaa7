"""The scheduled service on memory twins: passes, standby, the error budget, hooks, stopping."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enricher.pipeline import PassSummary
from enricher.service import Service, ServiceOptions, wait_for_lease
from enricher.settings import GroupingSettings
from model.errors import UserError
from tests.fakes import LeaseBoard, MemoryCluster, MemoryLease, memory_world

NOW = 2_000_000_000.0
SESSIONS = GroupingSettings(mode="session", inactivity_gap_s=5, max_length=10)


class RecordingHooks:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.summaries: list[PassSummary] = []
        self.passes = threading.Semaphore(0)

    def ready(self) -> None:
        self.events.append("ready")

    def pass_done(self, role: str, summary: PassSummary | None) -> None:
        self.events.append(role)
        if summary is not None:
            self.summaries.append(summary)
        self.passes.release()

    def heartbeat(self) -> None:
        self.events.append("heartbeat")

    def stopping(self) -> None:
        self.events.append("stopping")


def cluster_with_blocks(blocks: int = 5) -> MemoryCluster:
    cluster = MemoryCluster()
    for n in range(blocks * 3):
        cluster.add("logs", f"{n:03d}", 1_000_000 + n * 1000, message=f"event {n % 3} for blk_{n % blocks}")
    return cluster


@pytest.fixture
def start() -> Iterator[Callable[[Service], tuple[threading.Thread, dict[str, int]]]]:
    """Runs services in threads; stops any still running when the test ends, even failed."""
    started: list[tuple[Service, threading.Thread]] = []

    def run(service: Service) -> tuple[threading.Thread, dict[str, int]]:
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.setdefault("code", service.run()), daemon=True)
        thread.start()
        started.append((service, thread))
        return thread, result

    yield run
    for service, thread in started:
        service.stop()
        thread.join(timeout=60)


def wait_passes(hooks: RecordingHooks, count: int) -> None:
    for _ in range(count):
        assert hooks.passes.acquire(timeout=60), f"no pass reported; events so far: {hooks.events}"


def options(max_failed: int = 3) -> ServiceOptions:
    return ServiceOptions(
        interval_s=0.05, lease_ttl_s=30, max_failed_passes=max_failed, metrics_port=None, metrics_address="127.0.0.1"
    )


def test_the_service_runs_passes_until_stopped_then_releases_the_lease(start: Any) -> None:
    cluster = cluster_with_blocks()
    board = LeaseBoard()
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW, lease=MemoryLease(board, "a", clock=lambda: NOW))
    hooks = RecordingHooks()
    service = Service(world.worker, world.lease, world.metrics, options(), hooks, install_signals=False)
    thread, result = start(service)
    wait_passes(hooks, 3)
    service.stop()
    thread.join(timeout=60)
    assert result == {"code": 0}
    assert hooks.events[0] == "ready" and "stopping" in hooks.events
    assert hooks.summaries[0].docs_labelled == len(cluster.docs)
    assert all(s.docs_read == 0 for s in hooks.summaries[1:])  # later passes find nothing new
    assert board.holder is None  # released: a standby can take over at once


def test_a_second_worker_waits_as_standby_and_takes_over_when_the_lease_lapses(start: Any) -> None:
    cluster = cluster_with_blocks()
    board = LeaseBoard()
    clock = {"now": NOW}
    other = MemoryLease(board, "other", ttl_s=30, clock=lambda: clock["now"])
    assert other.acquire().held
    lease = MemoryLease(board, "b", ttl_s=30, clock=lambda: clock["now"])
    world = memory_world(cluster, SESSIONS, clock=lambda: clock["now"], lease=lease)
    assert board.holder == "other"
    hooks = RecordingHooks()
    service = Service(world.worker, lease, world.metrics, options(), hooks, install_signals=False)
    thread, result = start(service)
    wait_passes(hooks, 2)
    assert set(hooks.events[1:]) <= {"standby", "heartbeat"} and not any("anomaly" in d.source for d in cluster.docs)
    assert world.metrics.lease_held._value.get() == 0  # noqa: SLF001
    clock["now"] += 31  # the other worker stopped renewing
    while not hooks.summaries:
        wait_passes(hooks, 1)
    service.stop()
    thread.join(timeout=60)
    assert result == {"code": 0} and board.holder is None
    assert all("anomaly" in d.source for d in cluster.docs)


def test_consecutive_failures_spend_the_error_budget_and_exit_1(start: Any) -> None:
    cluster = cluster_with_blocks()
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW)

    def broken_write(*args: Any) -> Any:
        raise ConnectionResetError("the cluster went away")

    world.sink.write = broken_write  # type: ignore[method-assign]
    hooks = RecordingHooks()
    service = Service(world.worker, world.lease, world.metrics, options(max_failed=3), hooks, install_signals=False)
    thread, result = start(service)
    thread.join(timeout=60)
    assert result == {"code": 1}
    assert hooks.events.count("failed") == 3
    assert world.metrics.errors.labels("ConnectionResetError")._value.get() == 3  # noqa: SLF001


def test_a_configuration_error_stops_the_service_at_once_with_exit_2(start: Any) -> None:
    cluster = cluster_with_blocks()
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW)

    def misconfigured(stop: Any = None) -> PassSummary:
        raise UserError("LOGLLM_SOURCE__MESSAGE_FIELD='msg': no such field")

    world.worker.run_once = misconfigured  # type: ignore[method-assign]
    service = Service(world.worker, world.lease, world.metrics, options(), RecordingHooks(), install_signals=False)
    thread, result = start(service)
    thread.join(timeout=60)
    assert result == {"code": 2}


def test_once_waits_as_standby_then_gives_up_or_gets_the_lease() -> None:
    board = LeaseBoard()
    clock = {"now": NOW}
    holder = MemoryLease(board, "holder", ttl_s=30, clock=lambda: clock["now"])
    holder.acquire()
    waiting = MemoryLease(board, "once", ttl_s=30, clock=lambda: clock["now"])
    assert not wait_for_lease(waiting, timeout_s=0.05, stop=threading.Event(), poll_s=0.01)
    holder.release()
    assert wait_for_lease(waiting, timeout_s=0.05, stop=threading.Event(), poll_s=0.01)
    assert board.holder == "once"
