"""Scoring throughput of LogLLM on HDFS_2pct block sessions: no cache vs cold vs warm cache.

Each mode runs in its own process so peak RSS is per mode:
- no_cache: embedding and verdict caches disabled, on the first --subset blocks (sequences repeated
  within one `score` call are still decoded once: that de-duplication is not a cache);
- cold_cache: fresh caches, one pass over all 11,501 blocks (repeats inside the pass hit);
- warm_cache: the same process scores all blocks again;
- subset_cold: fresh caches on the same subset as no_cache, for a like-for-like ratio.

    python benchmarks/bench_score.py [--model DIR] [--subset 1000] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from model.folder import SHIPPED_MODEL_DIR  # noqa: E402
from model.preprocess import HDFS_BLOCK_ID, LogLine, iter_log_lines, sessions_by_key  # noqa: E402
from training.shared_data import HDFS_2PCT  # noqa: E402


def hdfs_sessions(limit_blocks: int | None) -> list[list[str]]:
    with HDFS_2PCT.open() as handle:
        lines = [line for line in iter_log_lines(handle, "hdfs") if isinstance(line, LogLine)]
    sessions, _ = sessions_by_key(lines, HDFS_BLOCK_ID)
    return [s.messages for s in sessions[:limit_blocks]]


def measure(detector: Any, sessions: list[list[str]]) -> dict[str, float]:
    enc0, hits0 = detector.encoder_seconds, detector.cache_stats()
    started = time.perf_counter()
    detector.score(sessions)
    elapsed = time.perf_counter() - started
    lines = sum(len(s) for s in sessions)
    stats = detector.cache_stats()
    lookups = {
        name: (stats[name]["hits"] - hits0[name]["hits"], stats[name]["misses"] - hits0[name]["misses"])
        for name in stats
    }
    return {
        "sequences": len(sessions),
        "lines": lines,
        "wall_s": round(elapsed, 2),
        "sequences_per_s": round(len(sessions) / elapsed, 2),
        "lines_per_s": round(lines / elapsed, 1),
        "encoder_s_per_line": (detector.encoder_seconds - enc0) / lines,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # verdict-cache hit ratio: the share of sequences answered without the decoder
        "hit_ratio": round(lookups["verdict"][0] / max(sum(lookups["verdict"]), 1), 4),
        "embedding_hit_ratio": round(lookups["embedding"][0] / max(sum(lookups["embedding"]), 1), 4),
    }


def child(args: argparse.Namespace) -> None:
    from model.detector import RuntimeSettings, load_detector

    caches = 0 if args.mode == "no_cache" else 200_000
    runtime = RuntimeSettings(batch_size=args.batch_size, embedding_cache_size=caches, verdict_cache_size=caches)
    started = time.perf_counter()
    detector = load_detector(args.model, runtime)
    load_s = time.perf_counter() - started
    limit = None if args.mode == "cached" else args.subset
    sessions = hdfs_sessions(limit)
    out: dict[str, Any] = {"load_s": round(load_s, 2), "version": detector.version}
    if args.mode == "cached":
        out["cold_cache"] = measure(detector, sessions)
        out["warm_cache"] = measure(detector, sessions)
    else:
        out[args.mode] = measure(detector, sessions)
    print(json.dumps(out))


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--model", str(args.model),
           "--subset", str(args.subset), "--batch-size", str(args.batch_size)]
    print(f"bench_score: running {mode} ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench_score: {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR, help="detector folder (default: the shipped one)")
    parser.add_argument("--subset", type=int, default=1000, help="blocks for the no_cache / subset_cold runs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mode", choices=("cached", "no_cache", "subset_cold"), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    results: dict[str, Any] = {}
    for mode in ("no_cache", "subset_cold", "cached"):
        results.update(run_child(args, mode))
    manifest = json.loads((args.model / "manifest.json").read_text())
    no_cache, cold, warm, sub = (results[k] for k in ("no_cache", "cold_cache", "warm_cache", "subset_cold"))
    ratios = {
        # Warm runs never call the encoder, so the like-for-like encoder ratio is against cold.
        "encoder_cost_no_cache_over_subset_cold": no_cache["encoder_s_per_line"] / sub["encoder_s_per_line"],
        "lines_per_s_cold_over_no_cache": cold["lines_per_s"] / no_cache["lines_per_s"],
        "lines_per_s_subset_cold_over_no_cache": sub["lines_per_s"] / no_cache["lines_per_s"],
        "lines_per_s_warm_over_cold": warm["lines_per_s"] / cold["lines_per_s"],
    }
    payload = {
        "dataset": f"HDFS_2pct block sessions (cold/warm: all {cold['sequences']}; no_cache/subset_cold: first {no_cache['sequences']})",
        "model": {
            "encoder": manifest["architecture"]["encoder"],
            "decoder": manifest["architecture"]["decoder"],
            "detector_version": results["version"],
            "trained": bool(manifest.get("training")),
        },
        "batch_size": args.batch_size,
        "load_s": results["load_s"],
        **{k: results[k] for k in ("no_cache", "subset_cold", "cold_cache", "warm_cache")},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
    }
    rows = "\n".join(
        f"| {name} | {r['sequences']} | {r['lines']} | {r['sequences_per_s']} | {r['lines_per_s']} | "
        f"{r['encoder_s_per_line'] * 1e3:.3f} | {r['hit_ratio']} | {r['embedding_hit_ratio']} | {r['peak_rss_mb']} |"
        for name, r in (("no_cache", no_cache), ("subset_cold", sub), ("cold_cache", cold), ("warm_cache", warm))
    )
    markdown = (
        f"Detector `{results['version']}` ({payload['model']['encoder']} + {payload['model']['decoder']}), "
        f"batch {args.batch_size}, CPU fp32.\n\n"
        "| mode | sequences | lines | seq/s | lines/s | encoder ms/line | verdict hit ratio | embedding hit ratio | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\nno_cache still decodes a sequence repeated within one call once (its verdict hit ratio); "
        "the caches add reuse across calls and across messages.\n\nRatios: "
        + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items())
        + "\n"
    )
    path = write_result("score", payload, markdown)
    print(markdown)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
