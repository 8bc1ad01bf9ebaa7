"""Shared plumbing for benchmark scripts: machine facts, result JSON, RESULTS.md sections.

Every benchmark writes ``benchmarks/results/<name>.json`` (keys in ../shared/docs/RESULTS.md)
and replaces its own section of ``benchmarks/RESULTS.md`` between marker comments, so the
figures in both are the ones the script measured.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


# Widest first: the first one a CPU has is the best its matrix kernels can use. Machines of one
# model name ("AMD EPYC") differed here by this alone: bf16 matmuls ran ~2x faster than fp32 on
# one (avx512_bf16) and 36x slower on the other (avx2), so results must say which it was.
VECTOR_ISAS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx")


# What the training benchmarks report of a detector on a test split, and what they average over seeds.
DETECTION_KEYS = ("precision", "recall", "f1", "tp", "fp", "fn", "tn", "average_precision")
SPREAD_KEYS = ("precision", "recall", "f1", "average_precision")


def mean_and_std(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over runs (>= 2, e.g. training seeds) of each SPREAD_KEYS key all of them hold."""
    out: dict[str, Any] = {}
    for key in SPREAD_KEYS:
        if all(key in r for r in runs):  # e.g. no average precision in reports written before it was measured
            values = [r[key] for r in runs]
            out[key] = round(statistics.mean(values), 6)
            out[f"{key}_std"] = round(statistics.stdev(values), 6)
    return out


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, its widest vector instruction set and the accelerator."""
    import torch

    cpu, flags = platform.processor() or "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "cpu": cpu,
        "cpu_isa": next((isa for isa in VECTOR_ISAS if isa in flags), "unknown"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], BENCH_DIR.parent), *sys.argv[1:]])


def write_result(name: str, payload: dict[str, Any], markdown: str) -> Path:
    """Write results/<name>.json (with command, date, machine) and the RESULTS.md section."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command_line(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    header = (
        f"Command: `{record['command']}`  \nDate: {record['date']}  \n"
        f"Machine: {record['machine']['cores']} cores, {record['machine']['ram_gb']} GB RAM, "
        f"{record['machine']['cpu']} ({record['machine']['cpu_isa']}), "
        f"{record['machine']['gpu']}\n\n"
    )
    _replace_section(name, header + markdown.strip() + "\n")
    return path


def ingest_hdfs_lines(client: Any, index: str, lines: int, *, shards: int = 1) -> int:
    """Create `index` (`shards` primaries, no replicas) and bulk-index the first `lines` lines of
    HDFS_2pct.log into it, refreshed: _id = line number, the log's own timestamp, the message
    content. Returns the number of documents."""
    from opensearchpy import helpers

    from model.preprocess import parse_line
    from training.shared_data import HDFS_2PCT

    client.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": shards, "number_of_replicas": 0},
            "mappings": {
                "properties": {"@timestamp": {"type": "date", "format": "yyMMdd HHmmss"}, "message": {"type": "text"}}
            },
        },
    )
    with HDFS_2PCT.open(encoding="utf-8") as log:
        raw = [line.rstrip("\n") for line in itertools.islice(log, lines)]
    actions = []
    for number, line in enumerate(raw, start=1):
        parsed = parse_line(line, number, "hdfs")
        assert parsed is not None
        actions.append({"_index": index, "_id": str(number), "_source": {"@timestamp": line[:13], "message": parsed.message}})
    helpers.bulk(client, actions, chunk_size=2000)
    client.indices.refresh(index=index)
    return len(actions)


@functools.cache
def _local_node_stat() -> Path | None:
    """/proc/<pid>/stat of the local node (enricher.localnode), if it runs on this machine."""
    from enricher.localnode import LocalNode

    pid = LocalNode().status().pid
    return Path(f"/proc/{pid}/stat") if pid is not None else None


def node_cpu_s(client: Any) -> float:
    """CPU seconds the OpenSearch node has used so far (user + system).

    For the local node, read from /proc, exact to the clock tick. Otherwise from the nodes stats
    API, whose process figures the node refreshes only about once a second: an interval of a few
    seconds read that way can be off by most of a second of CPU.
    """
    stat = _local_node_stat()
    if stat is not None and stat.exists():
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    stats = client.nodes.stats(metric="process")["nodes"]
    return sum(node["process"]["cpu"]["total_in_millis"] for node in stats.values()) / 1000


def settle_node(client: Any, index: str, *, idle_share: float = 0.05, timeout_s: float = 120.0) -> float:
    """Merge `index` to one segment, then wait until the node's CPU use over one second falls
    below `idle_share` of a core. Returns the seconds waited.

    Bulk indexing leaves refreshes and segment merges running in the node for seconds after the
    bulk returns; on a machine where the node shares the cores, they would be billed to whatever
    is timed next. Every timed round starts from a settled node instead.
    """
    import time

    started = time.monotonic()
    client.indices.forcemerge(index=index, max_num_segments=1)
    while time.monotonic() - started < timeout_s:
        before = node_cpu_s(client)
        time.sleep(1.0)
        if node_cpu_s(client) - before < idle_share:
            break
    return time.monotonic() - started


def _replace_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + f"\n\n## {name}\n\n{block}\n"
    RESULTS_MD.write_text(text)
