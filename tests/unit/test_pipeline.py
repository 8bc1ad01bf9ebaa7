"""The pass (`enricher.pipeline.Worker.run_once`) on memory twins: completeness, idempotency,
crashes at every point, the cursor rule, late documents, dead letters, stops and leases."""

from __future__ import annotations

import copy
import random
import threading
from typing import Any

import pytest

from enricher.interfaces import LeaseLost
from enricher.pipeline import CUTS_AHEAD, Prefetch
from enricher.settings import GroupingSettings
from enricher.sink import content_of
from enricher.types import DocRef
from model.errors import UserError
from tests.fakes import (
    FakeDetector,
    LeaseBoard,
    MemoryCheckpointStore,
    MemoryCluster,
    MemoryLease,
    dead_letter_ids,
    memory_world,
)

GAP_S = 30
MAX_LENGTH = 6
SESSIONS = GroupingSettings(mode="session", session_regex=r"blk_-?\d+", inactivity_gap_s=GAP_S, max_length=MAX_LENGTH)
T0_MS = 1_226_262_930_000  # 2008-11-09 20:35:30 UTC, where HDFS_2pct starts
NOW = T0_MS / 1000 + 10 * 86_400  # long after the data: every session can close
TEMPLATES = [
    "Receiving block {b} src: /10.0.0.{i}:5 dest: /10.0.0.{i}:50010",
    "PacketResponder {i} for block {b} terminating",
    "Received block {b} of size {s} from /10.0.0.{i}",
    "BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.0.0.{i}:50010 is added to {b} size {s}",
    "Verification succeeded for {b}",
]


def hdfs_like(cluster: MemoryCluster, blocks: int = 40, seed: int = 7) -> None:
    """Interleaved HDFS-style block lines: some blocks pause longer than the gap, some exceed the
    maximum length, several lines share a millisecond."""
    rng = random.Random(seed)
    lines = []
    for b in range(blocks):
        start = rng.randrange(0, 600)
        count = rng.randrange(1, 2 * MAX_LENGTH)
        times = sorted(start + rng.choice([0, 1, 2, 5, 45]) * k for k in range(count))
        for t in times:
            template = rng.choice(TEMPLATES)
            lines.append((t, template.format(b=f"blk_{b - 20}", i=rng.randrange(255), s=rng.randrange(10**6))))
    lines.sort(key=lambda line: line[0])
    for n, (t, message) in enumerate(lines, start=1):
        cluster.add("hdfs", f"{n:05d}", T0_MS + t * 1000, message=message)


def expected_sessions(cluster: MemoryCluster) -> list[list[str]]:
    """Sessions computed independently: per block, in time order, cut at gaps > GAP_S or at
    MAX_LENGTH documents."""
    by_block: dict[str, list[Any]] = {}
    for doc in sorted(cluster.docs, key=lambda d: (d.timestamp_ms, d.index, d.id)):
        block = doc.source["message"].split("blk_")[1].split()[0]
        by_block.setdefault(block, []).append(doc)
    sessions = []
    for docs in by_block.values():
        current: list[Any] = []
        for doc in docs:
            if current and (doc.timestamp_ms - current[-1].timestamp_ms > GAP_S * 1000 or len(current) == MAX_LENGTH):
                sessions.append(current)
                current = []
            current.append(doc)
        sessions.append(current)
    return sorted([doc.id for doc in session] for session in sessions)


def snapshot(cluster: MemoryCluster) -> dict[str, Any]:
    """Everything the worker wrote, minus the time fields (`content_of`)."""
    return {
        "docs": {doc.id: content_of(doc.source) for doc in cluster.docs},
        "results": {key: content_of(value) for key, value in cluster.results.items()},
        "dead": {key: content_of(value) for key, value in cluster.dead_letters.items()},
    }


def mid_stream_s(cluster: MemoryCluster) -> float:
    """A clock reading in the middle of the data, where sessions are still open."""
    times = sorted(doc.timestamp_ms for doc in cluster.docs if doc.timestamp_ms is not None)
    return (times[len(times) // 2] + 1) / 1000


def reference_run(cluster: MemoryCluster, grouping: GroupingSettings = SESSIONS) -> dict[str, Any]:
    reference = copy.deepcopy(cluster)
    memory_world(reference, grouping, clock=lambda: NOW).worker.run_once()
    return snapshot(reference)


def test_every_document_is_labelled_by_exactly_one_group_and_every_group_is_in_the_results() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW)
    summary = world.worker.run_once()

    assert summary.docs_read == len(cluster.docs) and summary.docs_labelled == len(cluster.docs)
    results = cluster.results.values()
    assert sorted([d["id"] for d in r["docs"]] for r in results) == expected_sessions(cluster)
    for doc in cluster.docs:
        anomaly = doc.source["anomaly"]
        result = cluster.results[anomaly["group_id"]]
        assert doc.id in [d["id"] for d in result["docs"]]
        assert anomaly["label"] == result["label"] and anomaly["score"] == result["score"]
        assert anomaly["model_version"] == "fake-0001" and anomaly["dead_letter"] is None
    # The verdict is the detector's on exactly the group's messages, in order.
    messages = {doc.id: doc.source["message"] for doc in cluster.docs}
    for result in results:
        verdict = FakeDetector.verdict_for([messages[d["id"]] for d in result["docs"]])
        assert (result["label"] == "anomalous") == bool(verdict.label) and result["score"] == verdict.score
    assert summary.groups_scored == len(cluster.results) and summary.open_groups == 0


def test_a_second_pass_changes_nothing() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW)
    world.worker.run_once()
    before, writes = copy.deepcopy(cluster), world.sink.writes
    again = world.worker.run_once()
    assert (again.docs_read, again.groups_scored, world.sink.writes) == (0, 0, writes)
    assert cluster == before  # time fields included: nothing was rewritten


def test_scored_at_is_the_only_field_a_replay_may_change() -> None:
    """The idempotency rule: two writes of the same batch agree on everything but the time
    of the write (`scored_at`, `recorded_at`)."""
    first, second = MemoryCluster(), MemoryCluster()
    hdfs_like(first)
    hdfs_like(second)
    first.add("hdfs", "no-message", T0_MS)
    second.add("hdfs", "no-message", T0_MS)
    memory_world(first, SESSIONS, clock=lambda: NOW).worker.run_once()
    memory_world(second, SESSIONS, clock=lambda: NOW + 3600).worker.run_once()
    assert snapshot(first) == snapshot(second)
    assert first.docs[0].source["anomaly"]["scored_at"] != second.docs[0].source["anomaly"]["scored_at"]


@pytest.mark.parametrize("crash_after_actions", [0, 1, 5, 17, 40, 77, 120, 160, 199, 240])
def test_a_crash_in_the_middle_of_a_write_loses_nothing_and_duplicates_nothing(crash_after_actions: int) -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    cluster.add("hdfs", "bad", T0_MS + 100_000, message=17)
    expected = reference_run(cluster)
    checkpoints = MemoryCheckpointStore()
    crashing = memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints)
    crashing.sink.fail_after_actions = crash_after_actions
    with pytest.raises(ConnectionResetError):
        crashing.worker.run_once()
    restarted = memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints)
    restarted.worker.run_once()
    assert snapshot(cluster) == expected


def test_a_crash_between_a_write_and_its_checkpoint_is_replayed_identically() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    expected = reference_run(cluster)
    checkpoints = MemoryCheckpointStore()
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints)
    saves = {"count": 0}
    real_save = checkpoints.save

    def save_then_crash(checkpoint: Any, expected_version: Any) -> Any:
        saves["count"] += 1
        if saves["count"] == 4:
            raise ConnectionResetError("crash after the write, before the checkpoint")
        return real_save(checkpoint, expected_version)

    checkpoints.save = save_then_crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        world.worker.run_once()
    memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints).worker.run_once()
    assert snapshot(cluster) == expected


def test_the_checkpoint_never_passes_an_open_group() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    clock_s = {"now": mid_stream_s(cluster)}
    world = memory_world(cluster, SESSIONS, clock=lambda: clock_s["now"])
    summary = world.worker.run_once()
    assert summary.open_groups > 0
    stored, _ = world.checkpoints.load("memory") or (None, None)
    assert stored is not None and stored.resume_after is not None
    unlabelled = [doc for doc in cluster.docs if "anomaly" not in doc.source]
    # Every document not written yet lies after the resume point: a restart re-reads it.
    assert unlabelled and all((d.timestamp_ms, d.index, d.id) > stored.resume_after for d in unlabelled)
    # The same worker continues in memory, without re-reading.
    clock_s["now"] = NOW
    resumed = world.worker.run_once()
    assert resumed.docs_replayed == 0
    assert all("anomaly" in doc.source for doc in cluster.docs)


def test_a_restarted_worker_rebuilds_open_groups_from_the_source() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    expected = reference_run(cluster)
    checkpoints = MemoryCheckpointStore()
    memory_world(cluster, SESSIONS, clock=lambda: mid_stream_s(cluster), checkpoints=checkpoints).worker.run_once()
    restarted = memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints).worker.run_once()
    assert restarted.docs_replayed > 0
    assert snapshot(cluster) == expected


def test_late_documents_within_the_lag_are_picked_up_and_later_ones_reported() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster, blocks=10)
    last_ms = max(doc.timestamp_ms for doc in cluster.docs if doc.timestamp_ms is not None)
    lag_s = 120
    clock_s = {"now": last_ms / 1000 + lag_s + GAP_S + 1}
    world = memory_world(cluster, SESSIONS, clock=lambda: clock_s["now"], ingest_lag_s=lag_s)
    first = world.worker.run_once()
    assert first.docs_labelled == len(cluster.docs)
    watermark_ms = round(clock_s["now"] * 1000) - lag_s * 1000
    # Arrived late, but within the allowance: stamped after the watermark of the first pass.
    within = cluster.add("hdfs", "late-ok", watermark_ms + 5_000, message="Verification succeeded for blk_900")
    # Arrived later than the allowance: stamped before a watermark that has already passed.
    beyond = cluster.add("hdfs", "late-lost", watermark_ms - 60_000, message="Verification succeeded for blk_901")
    clock_s["now"] += lag_s + GAP_S + 10
    second = world.worker.run_once()
    assert "anomaly" in within.source and second.docs_read == 1
    assert "anomaly" not in beyond.source
    assert second.late_documents == 1
    assert world.metrics.late_docs._value.get() == 1  # noqa: SLF001 - reading the gauge


def test_unscorable_documents_are_dead_lettered_once_with_their_reason() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster, blocks=5)
    bad = {
        "missing": cluster.add("hdfs", "missing", T0_MS + 1000),
        "number": cluster.add("hdfs", "number", T0_MS + 2000, message=12345),
        "list": cluster.add("hdfs", "list", T0_MS + 2000, message=["blk_1"]),
        "nokey": cluster.add("hdfs", "nokey", T0_MS + 3000, message="no block id in here"),
        "no-ts": cluster.add("hdfs", "no-ts", None, message="blk_5 at an unknown time", ts="not a date"),
    }
    huge = cluster.add("hdfs", "huge", T0_MS + 4000, message="Receiving block blk_77 " + "x" * 1_000_000)
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW)
    summary = world.worker.run_once()

    assert summary.dead_lettered == {
        "missing_message": 1,
        "message_not_string": 2,
        "no_session_key": 1,
        "missing_timestamp": 1,
    }
    assert set(cluster.dead_letters) == dead_letter_ids([doc.ref for doc in bad.values()])
    reasons = {letter["source_id"]: letter["reason"] for letter in cluster.dead_letters.values()}
    assert reasons["no-ts"] == "missing_timestamp" and "not a date" in next(
        letter["detail"] for letter in cluster.dead_letters.values() if letter["source_id"] == "no-ts"
    )
    for doc in bad.values():
        assert doc.source["anomaly"]["dead_letter"] == reasons[doc.id] and doc.source["anomaly"]["label"] is None
    assert huge.source["anomaly"]["label"] in ("normal", "anomalous") and huge.source["anomaly"]["truncated"]
    assert summary.messages_truncated == 1
    # Marked documents are not dead-lettered again.
    before = copy.deepcopy(cluster.dead_letters)
    assert world.worker.run_once().dead_lettered == {}
    assert cluster.dead_letters == before


def test_mostly_unscorable_input_stops_the_pass_before_writing_and_names_the_setting() -> None:
    cluster = MemoryCluster()
    for n in range(150):
        cluster.add("hdfs", f"{n:03d}", T0_MS + n, text=f"blk_{n} in the wrong field")
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW, max_dead_letter_ratio=0.5, page_size=200)
    with pytest.raises(UserError, match="LOGLLM_SOURCE__MESSAGE_FIELD") as error:
        world.worker.run_once()
    assert "150 of 150" in str(error.value)
    assert world.sink.writes == 0 and world.checkpoints.saves == 0


def test_a_stop_abandons_unwritten_work_and_the_next_pass_completes_it() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    expected = reference_run(cluster)
    stop = threading.Event()

    class StoppingDetector(FakeDetector):
        def score(self, sequences: Any, progress: Any = None) -> Any:
            if self.calls == 1:
                stop.set()  # SIGTERM arrives while the second batch is being scored
            return super().score(sequences, progress)

    checkpoints = MemoryCheckpointStore()
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints, detector=StoppingDetector())
    stopped = world.worker.run_once(stop)
    assert stopped.stopped and stopped.docs_labelled < len(cluster.docs)
    memory_world(cluster, SESSIONS, clock=lambda: NOW, checkpoints=checkpoints).worker.run_once()
    assert snapshot(cluster) == expected


def test_changed_grouping_settings_are_refused_with_the_fix() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    checkpoints = MemoryCheckpointStore()
    memory_world(cluster, SESSIONS, clock=lambda: mid_stream_s(cluster), checkpoints=checkpoints).worker.run_once()
    changed = SESSIONS.model_copy(update={"max_length": 9})
    with pytest.raises(UserError, match="LOGLLM_STATE__CHECKPOINT_ID"):
        memory_world(cluster, changed, clock=lambda: NOW, checkpoints=checkpoints).worker.run_once()


def test_a_worker_that_lost_its_lease_commits_nothing() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    board = LeaseBoard()
    clock_s = {"now": NOW}
    lease = MemoryLease(board, "a", ttl_s=10, clock=lambda: clock_s["now"])
    checkpoints = MemoryCheckpointStore()
    world = memory_world(cluster, SESSIONS, clock=lambda: clock_s["now"], lease=lease, checkpoints=checkpoints)
    clock_s["now"] += 11  # a's lease lapses...
    assert MemoryLease(board, "b", clock=lambda: clock_s["now"]).acquire().held  # ...and b takes it
    with pytest.raises(LeaseLost):
        world.worker.run_once()
    assert checkpoints.saves == 0


def test_detector_explanations_are_written_as_top_lines() -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    memory_world(cluster, SESSIONS, clock=lambda: NOW).worker.run_once()
    anomalous = [r for r in cluster.results.values() if r["label"] == "anomalous"]
    normal = [r for r in cluster.results.values() if r["label"] == "normal"]
    assert anomalous and normal
    docs = cluster.by_ref()
    for result in anomalous:
        (top,) = result["top_lines"]
        longest = max(result["docs"], key=lambda d: len(docs[DocRef(d["index"], d["id"])].source["message"]))
        assert top["id"] == longest["id"]
        for ref in result["docs"]:
            assert docs[DocRef(ref["index"], ref["id"])].source["anomaly"]["top_lines"] == [top["id"]]
    assert all(r["top_lines"] == [] for r in normal)


@pytest.mark.parametrize(
    "grouping",
    [
        GroupingSettings(mode="time_window", window_s=60, step_s=20),
        GroupingSettings(mode="count_window", count=5, inactivity_gap_s=30),
    ],
    ids=["sliding-window", "count-window"],
)
def test_windows_label_every_document_once_and_survive_a_crash(grouping: GroupingSettings) -> None:
    cluster = MemoryCluster()
    hdfs_like(cluster)
    expected = reference_run(cluster, grouping)
    assert all(doc["anomaly"]["group_id"] in expected["results"] for doc in expected["docs"].values())
    checkpoints = MemoryCheckpointStore()
    crashing = memory_world(cluster, grouping, clock=lambda: NOW, checkpoints=checkpoints)
    crashing.sink.fail_after_actions = 90
    with pytest.raises(ConnectionResetError):
        crashing.worker.run_once()
    memory_world(cluster, grouping, clock=lambda: NOW, checkpoints=checkpoints).worker.run_once()
    assert snapshot(cluster) == expected


def test_scoring_takes_every_group_closed_while_the_previous_call_ran() -> None:
    # A slow detector: while a call runs, the reader cuts the next pages (up to CUTS_AHEAD), so
    # the next call gets all groups closed meanwhile instead of one page's.
    cluster = MemoryCluster()
    hdfs_like(cluster, blocks=60)
    expected = reference_run(cluster)
    detector = FakeDetector(delay_s=0.3)
    world = memory_world(cluster, SESSIONS, clock=lambda: NOW, detector=detector, batch_groups=1000, page_size=5)
    summary = world.worker.run_once()

    pages = -(-len(cluster.docs) // 5)
    assert pages > 3 * CUTS_AHEAD
    assert detector.calls <= -(-pages // CUTS_AHEAD) + 1
    assert summary.groups_scored > 100
    assert snapshot(cluster) == expected


def test_prefetch_ready_yields_what_is_waiting_up_to_enough_then_the_producers_error() -> None:
    def produce() -> Any:
        yield from range(10)
        raise ValueError("source broke")

    items = Prefetch(produce(), depth=32)
    items._thread.join(timeout=5)  # everything is waiting before the first take
    taken = []
    with pytest.raises(ValueError, match="source broke"):
        for batch in items.ready(lambda batch: len(batch) >= 4):
            taken.append(batch)
    assert taken == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    items.close()
