"""Prometheus metrics of the worker, in a registry of its own (one per worker, so tests and a
backfill beside a live worker never share counters).

Counters only go up; gauges describe the latest pass. `serve` exposes them on a port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Batch latency spans a cached verdict (ms) to a cold GPU-less batch of long sequences (minutes).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class WorkerMetrics:
    """Every metric the worker reports; label values are small fixed sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.docs_read = Counter("logllm_docs_read", "Source documents read (replays excluded)", registry=registry)
        self.docs_scored = Counter("logllm_docs_scored", "Documents in groups given to the detector", registry=registry)
        self.docs_written = Counter("logllm_docs_written", "Source documents labelled", registry=registry)
        self.groups = Counter("logllm_groups_scored", "Groups scored and written", registry=registry)
        self.anomalies = Counter("logllm_anomalies", "Groups labelled anomalous", registry=registry)
        self.dead_letters = Counter(
            "logllm_dead_letters", "Documents dead-lettered, by reason", ["reason"], registry=registry
        )
        self.truncated = Counter(
            "logllm_messages_truncated", "Messages cut to scoring.max_message_chars", registry=registry
        )
        self.missing = Counter("logllm_docs_missing", "Documents deleted before their label was written", registry=registry)
        self.errors = Counter("logllm_errors", "Failed passes, by error kind", ["kind"], registry=registry)
        self.retries = Counter("logllm_retries", "Retried requests and bulk items, by operation", ["operation"], registry=registry)
        self.batch_seconds = Histogram(
            "logllm_batch_seconds",
            "Time per batch, by stage (score: detector; write: bulk writes + checkpoint)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.pass_seconds = Histogram("logllm_pass_seconds", "Duration of one pass", buckets=_LATENCY_BUCKETS, registry=registry)
        self.lag_seconds = Gauge(
            "logllm_lag_seconds", "Newest source document's time minus the read position's time", registry=registry
        )
        self.cursor_age_seconds = Gauge(
            "logllm_cursor_age_seconds", "Now minus the time of the position a restart resumes from", registry=registry
        )
        self.open_groups = Gauge("logllm_open_groups", "Groups waiting to close", registry=registry)
        self.late_docs = Gauge(
            "logllm_late_documents", "Unlabelled documents behind the cursor (arrived later than the lag)", registry=registry
        )
        self.future_docs = Gauge("logllm_future_documents", "Documents stamped too far in the future", registry=registry)
        self.cache_hit_ratio = Gauge("logllm_cache_hit_ratio", "Detector cache hit ratio", ["cache"], registry=registry)
        self.lease_held = Gauge("logllm_lease_held", "1 while this worker is the active one", registry=registry)
        self.last_success = Gauge(
            "logllm_last_success_timestamp_seconds", "End of the last successful pass", registry=registry
        )

    def serve(self, port: int, address: str) -> None:
        """Expose /metrics on `address:port` from a daemon thread."""
        start_http_server(port, addr=address, registry=self.registry)
