"""`logllm run`: passes on an interval (APScheduler 3.x), one active worker per source, clean stops.

    start -> metrics server -> hooks.ready -> every interval_s: take/renew lease -> active: pass
                                                                               standby: wait
    SIGTERM/SIGINT -> hooks.stopping -> the running pass finishes its batch in flight and
    commits it, abandons the rest -> scheduler shut down -> lease released -> exit

The interval job never overlaps itself (`max_instances=1`) and missed runs collapse into one
(`coalesce`). Consecutive failed passes are bounded by `retry.max_failed_passes`; a
configuration error stops the service at once. `ServiceHooks` is where systemd notification
(READY/WATCHDOG/STATUS/STOPPING) plugs in.

`build_worker` wires settings into a `Worker` (client, source, grouper, detector, sink,
checkpoint store, lease, metrics) after checking them against the cluster; `run_once` and
`run_service` are what `logllm once` and `logllm run` call. A detector can be passed in instead
of loaded from `scoring.model_dir` (tests run the real command path with a fast stand-in).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from opensearchpy import OpenSearch

from enricher.checkpoint import OpenSearchCheckpointStore
from enricher.client import Retrier, build_client
from enricher.grouping import EntryBuilder, build_grouper
from enricher.interfaces import CheckpointConflict, Lease, LeaseLost, Source
from enricher.lease import Heartbeat, OpenSearchLease
from enricher.metrics import WorkerMetrics
from enricher.pipeline import PassOptions, PassSummary, Worker
from enricher.settings import DEFAULT_MODEL_DIR, Settings, env_name
from enricher.sink import OpenSearchSink
from enricher.source import OpenSearchSource
from model.detector import Detector, load_detector, with_label_threshold
from model.errors import UserError

log = logging.getLogger(__name__)


class ServiceHooks(Protocol):
    """Lifecycle callbacks, e.g. for systemd's sd_notify. Called from the service's threads;
    implementations must be quick and must not raise."""

    def ready(self) -> None:
        """The service is set up and about to run its first pass."""

    def pass_done(self, role: str, summary: PassSummary | None) -> None:
        """A scheduled run ended: role "active" (with its summary), "standby", or "failed"."""

    def heartbeat(self) -> None:
        """The service is live: called every few seconds while it waits for its next pass, or
        while the running pass makes progress (the worker's counters moved: a page read, a batch
        scored or written, a retry). A pass stuck without progress gets no heartbeats."""

    def stopping(self) -> None:
        """A stop was requested; the current batch is being finished."""


class NoHooks:
    """The default: no notifications."""

    def ready(self) -> None:
        pass

    def pass_done(self, role: str, summary: PassSummary | None) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def stopping(self) -> None:
        pass


@dataclass(frozen=True)
class ServiceOptions:
    interval_s: float
    lease_ttl_s: float
    max_failed_passes: int
    metrics_port: int | None
    metrics_address: str


class Service:
    """Runs `worker` passes on a schedule until stopped; see the module docstring."""

    HEARTBEAT_S = 5.0

    def __init__(
        self,
        worker: Worker,
        lease: Lease,
        metrics: WorkerMetrics,
        options: ServiceOptions,
        hooks: ServiceHooks | None = None,
        install_signals: bool = True,
    ) -> None:
        self.worker = worker
        self.lease = lease
        self.metrics = metrics
        self.options = options
        self.hooks: ServiceHooks = hooks or NoHooks()
        self.install_signals = install_signals
        self.stop_event = threading.Event()
        self.exit_code = 0
        self._failed_in_a_row = 0
        self._fatal: BaseException | None = None
        self._in_pass = False

    def stop(self) -> None:
        """Ask the service to stop (thread-safe; what SIGTERM does)."""
        if not self.stop_event.is_set():
            log.info("stop requested: finishing the batch in flight")
            self.hooks.stopping()
            self.stop_event.set()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 clean stop, 1 error budget
        spent, 2 configuration error)."""
        if self.install_signals:
            _stop_on_signals(self.stop)
        if self.options.metrics_port:
            try:
                self.metrics.serve(self.options.metrics_port, self.options.metrics_address)
            except OSError as error:
                raise UserError(
                    f"{env_name(('metrics', 'port'))}={self.options.metrics_port}: cannot serve metrics on "
                    f"{self.options.metrics_address} ({error.strerror}); choose a free port, or 0 to turn metrics off"
                ) from None
        scheduler = BackgroundScheduler()
        scheduler.add_job(
            self._tick,
            "interval",
            seconds=self.options.interval_s,
            next_run_time=datetime.now(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="pass",
        )
        with Heartbeat(self.lease, self.options.lease_ttl_s):
            self.hooks.ready()
            scheduler.start()
            work = _work_done(self.metrics)
            while not self.stop_event.wait(self.HEARTBEAT_S):
                previous, work = work, _work_done(self.metrics)
                if not self._in_pass or work != previous:
                    self.hooks.heartbeat()
            scheduler.shutdown(wait=True)
        self.lease.release()
        self.metrics.lease_held.set(0)
        if self._fatal is not None:
            log.error("stopped: %s", self._fatal)
        return self.exit_code

    def _tick(self) -> None:
        self._in_pass = True
        try:
            self._pass()
        finally:
            self._in_pass = False

    def _pass(self) -> None:
        if self.stop_event.is_set():
            return
        try:
            status = self.lease.acquire()
            self.metrics.lease_held.set(1 if status.held else 0)
            if not status.held:
                log.info("standby: %s holds the lease until %s", status.holder, _iso(status.expires_ms))
                self.hooks.pass_done("standby", None)
                return
            summary = self.worker.run_once(self.stop_event)
        except (LeaseLost, CheckpointConflict) as error:
            log.warning("another worker took over (%s); going standby", error)
            self.metrics.lease_held.set(0)
            self.hooks.pass_done("standby", None)
            return
        except UserError as error:
            self.metrics.errors.labels("config").inc()
            self._give_up(2, error)
            return
        except Exception as error:  # the job's boundary: count it against the error budget
            self.metrics.errors.labels(type(error).__name__).inc()
            self._failed_in_a_row += 1
            log.exception("pass failed (%d in a row)", self._failed_in_a_row)
            self.hooks.pass_done("failed", None)
            if self._failed_in_a_row >= self.options.max_failed_passes:
                self._give_up(1, error)
            return
        self._failed_in_a_row = 0
        self.hooks.pass_done("active", summary)

    def _give_up(self, code: int, error: BaseException) -> None:
        self.exit_code = code
        self._fatal = error
        self.stop()


def _work_done(metrics: WorkerMetrics) -> float:
    """The sum of the worker's counters and histogram counts: it grows with every page read,
    batch scored or written, retry and pass, so an unchanged sum means no progress."""
    return sum(
        sample.value
        for metric in metrics.registry.collect()
        for sample in metric.samples
        if sample.name.endswith(("_total", "_count"))
    )


def _iso(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_ms / 1000))


def wait_for_lease(lease: Lease, timeout_s: float, stop: threading.Event, poll_s: float = 1.0) -> bool:
    """Standby until `lease` is ours (True), or until `timeout_s` passes or `stop` is set (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = lease.acquire()
        if status.held:
            return True
        log.info("standby: %s holds the lease until %s", status.holder, _iso(status.expires_ms))
        if time.monotonic() >= deadline or stop.is_set():
            return False
        stop.wait(min(poll_s, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------------------------------
# Wiring: settings -> a worker, and the two ways to run it.


@dataclass
class Components:
    """A wired worker and the parts the commands drive directly."""

    worker: Worker
    lease: OpenSearchLease
    metrics: WorkerMetrics
    client: OpenSearch


def load_worker_detector(settings: Settings) -> Detector:
    """The detector in `scoring.model_dir`, with an error naming the setting if it is missing.

    Raises:
        UserError: no usable detector folder there.
    """
    folder = settings.scoring.model_dir
    try:
        expect = None if settings.scoring.detector == "auto" else settings.scoring.detector
        return load_detector(folder, settings.runtime, expect)
    except UserError as error:
        hint = (
            " (the shipped detector is not installed yet: train one with `logllm train`, or point the setting "
            "at a detector folder)"
            if folder == DEFAULT_MODEL_DIR
            else ""
        )
        raise UserError(f"{env_name(('scoring', 'model_dir'))}={folder}: {error}{hint}") from None


def checked_source(settings: Settings, client: OpenSearch, retrier: Retrier) -> tuple[EntryBuilder, OpenSearchSource]:
    """The source the settings describe, checked against the cluster, and how its documents
    become entries.

    Raises:
        UserError: the source index or a configured field does not exist or has the wrong type.
    """
    entries = EntryBuilder(
        settings.grouping,
        settings.source.message_field,
        settings.source.timestamp_field,
        settings.scoring.max_message_chars,
    )
    source = OpenSearchSource(client, settings.source, entries.fields, retrier)
    source.check()
    return entries, source


def build_worker(
    settings: Settings,
    detector: Detector | None = None,
    clock: Callable[[], float] = time.time,
    wrap_source: Callable[[OpenSearchSource], Source] | None = None,
) -> Components:
    """Everything a pass needs, checked against the cluster (mappings, indices, state index).
    `clock` is the worker's notion of now (its watermark is clock() - source.ingest_lag_s).
    `wrap_source` replaces the checked source the worker reads (a backfill bounds and slices it).

    Raises:
        UserError: bad settings for this cluster (fields, indices, credentials, model folder).
    """
    metrics = WorkerMetrics()
    retrier = Retrier(settings.retry, on_retry=lambda operation: metrics.retries.labels(operation).inc())
    client = build_client(settings.opensearch)
    entries, source = checked_source(settings, client, retrier)
    checkpoints = OpenSearchCheckpointStore(
        client, settings.state.index, retrier, clock_ms=lambda: round(time.time() * 1000)
    )
    checkpoints.prepare()
    sink = OpenSearchSink(
        client,
        settings.sink,
        source=settings.source.index,
        checkpoint_id=settings.checkpoint_id,
        retrier=retrier,
        clock=time.time,
        source_indices=source.indices,
    )
    sink.prepare()
    holder = f"{settings.state.worker_name}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
    lease = OpenSearchLease(
        client, settings.state.index, settings.checkpoint_id, holder, settings.state.lease_ttl_s, retrier, time.time
    )
    detector = detector if detector is not None else load_worker_detector(settings)
    if settings.scoring.top_k is not None:
        from model.logllama import with_top_k  # torch + peft: imported only when a K is set

        detector = with_top_k(detector, settings.scoring.top_k, env_name(("scoring", "top_k")))
    worker = Worker(
        options=PassOptions.from_settings(settings),
        source=wrap_source(source) if wrap_source is not None else source,
        entries=entries,
        new_grouper=lambda: build_grouper(settings.grouping),
        detector=with_label_threshold(detector, settings.scoring.label_threshold),
        sink=sink,
        checkpoints=checkpoints,
        lease=lease,
        metrics=metrics,
        clock=clock,
    )
    return Components(worker, lease, metrics, client)


def run_once(
    settings: Settings,
    detector: Detector | None = None,
    lease_wait_s: float | None = None,
    wrap_source: Callable[[OpenSearchSource], Source] | None = None,
) -> PassSummary:
    """One pass as the active worker: wait (standby) for the lease, run, release
    (`wrap_source`: see `build_worker`).

    Raises:
        UserError: configuration problems, or the lease stayed with another worker.
    """
    parts = build_worker(settings, detector, wrap_source=wrap_source)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    wait_s = 2 * settings.state.lease_ttl_s if lease_wait_s is None else lease_wait_s
    if not wait_for_lease(parts.lease, wait_s, stop):
        raise UserError(
            f"another worker holds the lease on {settings.checkpoint_id} (see the log above); stop it, or wait "
            "for it (--lease-wait)"
        )
    try:
        with Heartbeat(parts.lease, settings.state.lease_ttl_s):
            return parts.worker.run_once(stop)
    finally:
        parts.lease.release()
        parts.client.close()


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop` (from the main thread only: Python's rule for handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stop())


def run_service(settings: Settings, detector: Detector | None = None, hooks: ServiceHooks | None = None) -> int:
    """`logllm run`: serve until SIGTERM; returns the exit code."""
    parts = build_worker(settings, detector)
    service = Service(
        parts.worker,
        parts.lease,
        parts.metrics,
        ServiceOptions(
            interval_s=settings.schedule.interval_s,
            lease_ttl_s=settings.state.lease_ttl_s,
            max_failed_passes=settings.retry.max_failed_passes,
            metrics_port=settings.metrics.port,
            metrics_address=settings.metrics.address,
        ),
        hooks,
    )
    try:
        return service.run()
    finally:
        parts.client.close()
