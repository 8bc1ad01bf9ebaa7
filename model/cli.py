"""`logllm score`: score a raw log file offline and write one JSON line per sequence."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from model.errors import UserError
from model.folder import SHIPPED_MODEL_DIR
from model.preprocess import HDFS_BLOCK_ID, LogLine, build_sequences, iter_log_lines

DEFAULT_WINDOW = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a raw log file and print per-sequence label + score as JSON lines",
        description=(
            "Group the lines of FILE into sequences (by a session-key regex or fixed windows), score each "
            "with the detector in --model, and write one JSON object per sequence."
        ),
    )
    parser.add_argument("file", type=Path, help="raw log file ('-' reads standard input)")
    parser.add_argument(
        "--model",
        type=Path,
        default=SHIPPED_MODEL_DIR,
        help="detector folder (manifest.json + weights); default: the shipped LogLLM-small trained on HDFS",
    )
    parser.add_argument(
        "--format",
        choices=("raw", "hdfs", "bgl"),
        default="raw",
        help="line format: raw = whole line is the message; hdfs/bgl = LogHub formats (header stripped; "
        "BGL's leading label field is never shown to the model)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--session-regex",
        help=f"sequence = all lines sharing a match of this regex (default for --format hdfs: {HDFS_BLOCK_ID.pattern})",
    )
    group.add_argument("--window", type=int, help=f"sequence = {DEFAULT_WINDOW} (or N) consecutive lines (default otherwise)")
    parser.add_argument("--output", "-o", type=Path, help="write JSON lines here instead of standard output")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per decoder batch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--label-threshold",
        type=float,
        help="label a sequence anomalous when its score is at least this, instead of by the detector's rule "
        "(pick it with `logllm eval`: oracle_threshold in its report)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        help="LogLLaMA folders: the Top-K rule's K instead of the folder's (pick it from k_sweep in the training report)",
    )
    parser.set_defaults(handler=run_score)


def _grouping(args: argparse.Namespace) -> dict[str, Any]:
    if args.window is not None:
        if args.window < 1:
            raise UserError(f"--window {args.window}: must be a positive number of lines")
        return {"window_size": args.window}
    if args.session_regex is not None:
        return {"session_pattern": args.session_regex}
    if args.format == "hdfs":
        return {"session_pattern": HDFS_BLOCK_ID.pattern}
    return {"window_size": DEFAULT_WINDOW}


def _read_lines(path: Path, fmt: str) -> tuple[list[LogLine], list[int]]:
    try:
        handle: IO[str] = sys.stdin if str(path) == "-" else path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read log file {path}: {exc.strerror}; check the path") from exc
    parsed: list[LogLine] = []
    unparsed: list[int] = []
    with handle:
        for item in iter_log_lines(handle, fmt):  # type: ignore[arg-type]
            if isinstance(item, LogLine):
                parsed.append(item)
            else:
                unparsed.append(item[0])
    return parsed, unparsed


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.detector import RuntimeSettings, check_label_threshold, load_detector, with_label_threshold
    from model.logllama import with_top_k

    if args.label_threshold is not None:
        check_label_threshold(args.label_threshold, "--label-threshold")
    grouping = _grouping(args)
    lines, unparsed = _read_lines(args.file, args.format)
    if unparsed:
        print(
            f"logllm score: {len(unparsed)} lines do not match --format {args.format} and are not scored "
            f"(first at line {unparsed[0]}); try --format raw",
            file=sys.stderr,
        )
    if not lines:
        raise UserError(f"{args.file}: no lines in --format {args.format}; nothing to score")
    try:
        sequences, keyless = build_sequences(lines, **grouping)
    except ValueError as exc:
        raise UserError(f"--session-regex: {exc}") from exc
    if keyless:
        print(
            f"logllm score: {len(keyless)} lines carry no session key and are not scored "
            f"(first at line {keyless[0].line_no}); use --window to score every line",
            file=sys.stderr,
        )
    runtime = RuntimeSettings(device=args.device, dtype=args.dtype, batch_size=args.batch_size, threads=args.threads)
    detector = with_label_threshold(
        with_top_k(load_detector(args.model, runtime), args.top_k, "--top-k"), args.label_threshold
    )

    started = time.monotonic()
    with tqdm(total=len(sequences), unit="seq", desc="scoring", file=sys.stderr, disable=None) as bar:
        verdicts = detector.score([s.messages for s in sequences], progress=bar.update)
    elapsed = time.monotonic() - started

    sink = args.output.open("w") if args.output else contextlib.nullcontext(sys.stdout)
    with sink as out:
        for sequence, verdict in zip(sequences, verdicts, strict=True):
            record = {
                "sequence": sequence.key,
                "lines": len(sequence.lines),
                "first_line": sequence.lines[0].line_no,
                "label": "anomalous" if verdict.label else "normal",
                "score": round(verdict.score, 6),
                "answer": verdict.answer,
                # Line numbers in the file of the lines the detector points at (LogLLaMA's explanation).
                "top_lines": [sequence.lines[i].line_no for i in verdict.positions if 0 <= i < len(sequence.lines)],
                "parse_failed": verdict.parse_failed,
                "model_version": verdict.model_version,
            }
            out.write(json.dumps(record) + "\n")
    scored_lines = sum(len(s.lines) for s in sequences)
    anomalous = sum(v.label for v in verdicts)
    stats = detector.cache_stats()
    print(
        f"logllm score: {len(sequences)} sequences ({scored_lines} lines), {anomalous} anomalous, "
        f"{elapsed:.1f} s ({scored_lines / max(elapsed, 1e-9):.0f} lines/s); cache hit ratio "
        + ", ".join(f"{name} {cache['hit_ratio']:.3f}" for name, cache in stats.items()),
        file=sys.stderr,
    )
    return 0

