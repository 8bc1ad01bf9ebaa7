"""`logllm status`: where the worker stands, read from the cluster without changing anything.

What an operator asks of a labelling worker — is one running, how far behind the newest log is
it, and has anything been left unlabelled — answered from the state the worker keeps in the
cluster (checkpoint and lease in the state index, the results and dead-letter indices) and from
the source itself. Nothing is created or written, so it is safe against a live worker and a
cluster where the worker has never run. Exit code 1 when something needs the operator (no
checkpoint yet, unlabelled documents behind the cursor), for scripts and monitoring checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from enricher.sink import iso_ms

if TYPE_CHECKING:
    from enricher.settings import Settings


@dataclass(frozen=True)
class WorkerStatus:
    """The worker's progress over one source (times ISO 8601 UTC).

    cursor: every document stamped before it is labelled or dead-lettered (the checkpoint's
        resume point); read_up_to: the newest document time read so far, open groups included.
    unlabelled_behind_cursor: documents before the cursor (and after source.start_at) with neither
        a label nor a dead-letter mark: late arrivals only a backfill can still label.
    groups / anomalous_groups / dead_letters: what this checkpoint wrote to the results and
        dead-letter indices; groups_by_model_version: results per detector version.
    """

    checkpoint_id: str
    source: str
    cursor: str | None
    read_up_to: str | None
    checkpoint_saved: str | None
    open_groups: int
    lease_holder: str | None
    lease_expires: str | None
    worker_active: bool
    newest_document: str | None
    lag_s: float | None
    unlabelled_behind_cursor: int
    future_documents: int
    groups: int
    anomalous_groups: int
    dead_letters: int
    groups_by_model_version: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What needs the operator, each with the fix."""
        found = []
        if self.cursor is None:
            found.append(
                f"no pass has committed a checkpoint for {self.checkpoint_id!r} yet: start the worker "
                "(`logllm run`, or `logllm once` for one pass)"
            )
        if self.unlabelled_behind_cursor:
            found.append(
                f"{self.unlabelled_behind_cursor} documents before the cursor carry no label: they arrived later than "
                f"source.ingest_lag_s allowed (raise LOGLLM_SOURCE__INGEST_LAG_S); label them with `logllm backfill "
                f"--source {self.source} --in-place --end {self.cursor}` (add --start to narrow it)"
            )
        return found

    def table(self, problems: list[str]) -> str:
        lease = (
            f"held by {self.lease_holder} until {self.lease_expires}"
            if self.worker_active
            else "free: no worker is active" + (f" (last holder {self.lease_holder})" if self.lease_holder else "")
        )
        rows = [
            ("source", self.source),
            ("checkpoint", f"{self.checkpoint_id} (saved {self.checkpoint_saved or 'never'})"),
            ("lease", lease),
            ("cursor", f"{self.cursor or '-'}: everything before it is labelled or dead-lettered"),
            ("read up to", f"{self.read_up_to or '-'} ({self.open_groups} groups open, waiting to close)"),
            ("newest document", self.newest_document or "- (source empty)"),
            ("lag", f"{self.lag_s:.1f} s behind the newest document" if self.lag_s is not None else "-"),
            ("unlabelled behind cursor", str(self.unlabelled_behind_cursor)),
            ("future-stamped documents", str(self.future_documents)),
            ("groups written", f"{self.groups} ({self.anomalous_groups} anomalous)"),
            ("by model version", ", ".join(f"{v}: {n}" for v, n in self.groups_by_model_version.items()) or "-"),
            ("dead letters", str(self.dead_letters)),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"PROBLEM: {problem}" for problem in problems] or ["ok"]
        return "\n".join(lines) + "\n"


def _iso(epoch_ms: int | None) -> str | None:
    # 0 is "never" here: a released lease expires at 0.
    return iso_ms(epoch_ms) if epoch_ms else None


def read_status(settings: Settings, now_s: float | None = None) -> WorkerStatus:
    """Read the worker's status for `settings` (its source and checkpoint) from the cluster.

    Raises:
        RetriesExhausted: the cluster stayed unreachable past the retry budget.
        UserError: the cluster refuses the credentials, or the source index, a configured field
            or `source.query` does not work with it.
    """
    from enricher.checkpoint import OpenSearchCheckpointStore
    from enricher.client import Retrier, build_client
    from enricher.lease import OpenSearchLease
    from enricher.service import checked_source

    now_ms = round((time.time() if now_s is None else now_s) * 1000)
    retrier = Retrier(settings.retry)
    client = build_client(settings.opensearch)
    _, source = checked_source(settings, client, retrier)
    checkpoint_id = settings.checkpoint_id
    saved = OpenSearchCheckpointStore(client, settings.state.index, retrier, clock_ms=lambda: now_ms).saved(checkpoint_id)
    lease = OpenSearchLease(client, settings.state.index, checkpoint_id, "status", 0, retrier, time.time).current()
    checkpoint, saved_ms = saved if saved is not None else (None, None)
    cursor_ms = checkpoint.resume_after[0] if checkpoint is not None and checkpoint.resume_after else None
    read_ms = checkpoint.read_timestamp_ms if checkpoint is not None else None
    survey = source.survey(None, now_ms)
    start_at = settings.source.start_at
    unlabelled = (
        source.unlabelled_before(int(cursor_ms), round(start_at.timestamp() * 1000) if start_at else None)
        if cursor_ms is not None
        else 0
    )

    def written(index: str, aggs: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "size": 0,
            "track_total_hits": True,
            "query": {"term": {"checkpoint_id": checkpoint_id}},
            **({"aggs": aggs} if aggs else {}),
        }
        params = {"ignore_unavailable": "true", "allow_no_indices": "true"}
        return retrier.call(f"count {index}", lambda: client.search(index=index, body=body, params=params))

    results = written(
        settings.sink.results_index,
        {
            "anomalous": {"filter": {"term": {"label": "anomalous"}}},
            "versions": {"terms": {"field": "model_version", "size": 20}},
        },
    )
    aggregations = results.get("aggregations", {})
    return WorkerStatus(
        checkpoint_id=checkpoint_id,
        source=settings.source.index,
        cursor=_iso(cursor_ms),
        read_up_to=_iso(read_ms),
        checkpoint_saved=_iso(saved_ms),
        open_groups=len(checkpoint.open_groups) if checkpoint is not None else 0,
        lease_holder=lease[0] if lease else None,
        lease_expires=_iso(lease[1]) if lease else None,
        worker_active=bool(lease and lease[1] > now_ms),
        newest_document=_iso(survey.newest_ms),
        lag_s=max(0, survey.newest_ms - read_ms) / 1000 if survey.newest_ms is not None and read_ms else None,
        unlabelled_behind_cursor=unlabelled,
        future_documents=survey.future,
        groups=int(results["hits"]["total"]["value"]),
        anomalous_groups=int(aggregations.get("anomalous", {}).get("doc_count", 0)),
        dead_letters=int(written(settings.sink.dead_letter_index)["hits"]["total"]["value"]),
        groups_by_model_version={
            bucket["key"]: bucket["doc_count"] for bucket in aggregations.get("versions", {}).get("buckets", [])
        },
    )
