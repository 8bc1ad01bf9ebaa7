"""Detector-agnostic evaluation: metrics, threshold sweep, per-sequence scores, plots, reports.

Everything here takes plain labels, predictions and scores (any detector: LogLLM, LogLLaMA,
the baseline), except `score_sequences`, which drives anything implementing the `Detector`
protocol. The anomalous class is positive.

The paper decides by the greedy answer and uses no threshold; the sweep over the continuous
score is a diagnostic. Its best threshold is picked *on the test set*, so it is reported as
an oracle upper bound, never as the result.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.detector import Detector, Verdict


@dataclass(frozen=True)
class Metrics:
    """Binary metrics with the anomalous class positive. Undefined ratios (0/0) are 0."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def binary_metrics(labels: Sequence[int], predictions: Sequence[int]) -> Metrics:
    """Precision, recall, F1 and the confusion counts.

    Raises:
        ValueError: lengths differ, or a value is not 0/1.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(predictions, dtype=int)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if not (np.isin(y, (0, 1)).all() and np.isin(p, (0, 1)).all()):
        raise ValueError("labels and predictions must be 0 or 1")
    tp = int(((y == 1) & (p == 1)).sum())
    fp = int(((y == 0) & (p == 1)).sum())
    fn = int(((y == 1) & (p == 0)).sum())
    tn = int(((y == 0) & (p == 0)).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Metrics(precision, recall, f1, tp, fp, fn, tn)


def threshold_sweep(labels: Sequence[int], scores: Sequence[float]) -> list[dict[str, float]]:
    """Metrics of ``score >= t`` for every distinct score t (plus one above the maximum, i.e.
    nothing flagged), in increasing t. The points trace the precision-recall curve."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    thresholds = np.unique(s)
    rows = []
    for t in [*thresholds.tolist(), math.inf]:
        m = binary_metrics(y, (s >= t).astype(int))
        rows.append({"threshold": t, "precision": m.precision, "recall": m.recall, "f1": m.f1, "tp": m.tp, "fp": m.fp})
    return rows


def best_threshold(sweep: Sequence[dict[str, float]]) -> dict[str, float]:
    """The sweep row with the highest F1 (ties: the higher threshold). An oracle on test data."""
    return max(sweep, key=lambda r: (r["f1"], r["threshold"]))


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the step precision-recall curve (sklearn's definition): Σ (R_k − R_{k−1})·P_k."""
    # Within a run of equal recall, the highest threshold is where recall reached that value.
    rows = sorted(threshold_sweep(labels, scores), key=lambda r: (r["recall"], -r["threshold"]))
    area, previous = 0.0, 0.0
    for row in rows:
        area += (row["recall"] - previous) * row["precision"]
        previous = row["recall"]
    return area


@dataclass
class Evaluation:
    """One detector's results on one set of sequences."""

    name: str
    keys: list[str]
    labels: list[int]
    predictions: list[int]
    scores: list[float]
    seconds: float = 0.0
    parse_failures: int = 0
    version: str = ""

    @property
    def metrics(self) -> Metrics:
        return binary_metrics(self.labels, self.predictions)

    def summary(self) -> dict[str, Any]:
        sweep = threshold_sweep(self.labels, self.scores)
        best = best_threshold(sweep)
        return {
            **self.metrics.as_dict(),
            "sequences": len(self.keys),
            "parse_failures": self.parse_failures,
            "seconds": round(self.seconds, 2),
            "sequences_per_s": round(len(self.keys) / self.seconds, 2) if self.seconds else None,
            "average_precision": round(average_precision(self.labels, self.scores), 6),
            "oracle_threshold": {k: (round(v, 6) if math.isfinite(v) else None) for k, v in best.items()},
            "version": self.version,
        }

    def write_scores(self, path: Path) -> None:
        """One JSON line per sequence: key, label, prediction, score."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for key, label, pred, score in zip(self.keys, self.labels, self.predictions, self.scores, strict=True):
                out.write(json.dumps({"sequence": key, "label": label, "prediction": pred, "score": round(score, 6)}) + "\n")


def score_sequences(
    detector: Detector,
    name: str,
    keys: Sequence[str],
    sequences: Sequence[Sequence[str]],
    labels: Sequence[int],
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Score `sequences` with any `Detector` and collect an `Evaluation` (no I/O)."""
    return score_with_verdicts(detector, name, keys, sequences, labels, progress)[0]


def score_with_verdicts(
    detector: Detector,
    name: str,
    keys: Sequence[str],
    sequences: Sequence[Sequence[str]],
    labels: Sequence[int],
    progress: Callable[[int], None] | None = None,
) -> tuple[Evaluation, list[Verdict]]:
    """`score_sequences`, also returning the verdicts (for what else a caller reads off them)."""
    started = time.perf_counter()
    verdicts = detector.score(sequences, progress=progress)
    elapsed = time.perf_counter() - started
    evaluation = Evaluation(
        name=name,
        keys=list(keys),
        labels=list(labels),
        predictions=[v.label for v in verdicts],
        scores=[v.score for v in verdicts],
        seconds=elapsed,
        parse_failures=sum(v.parse_failed for v in verdicts),
        version=detector.version,
    )
    return evaluation, verdicts


# --------------------------------------------------------------------------------------------
# Plots (matplotlib is an optional extra; imported lazily, headless backend)
# --------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(evaluations: Sequence[Evaluation], path: Path, title: str) -> Path:
    """Precision-recall curves of several detectors on the same sequences, with each one's
    default operating point (its own predictions) marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for ev in evaluations:
        sweep = sorted(threshold_sweep(ev.labels, ev.scores), key=lambda r: (r["recall"], -r["precision"]))
        line = ax.step([r["recall"] for r in sweep], [r["precision"] for r in sweep], where="post",
                       label=f"{ev.name} (AP {average_precision(ev.labels, ev.scores):.3f})")
        m = ev.metrics
        ax.plot([m.recall], [m.precision], "o", color=line[0].get_color(),
                label=f"{ev.name} decision: P {m.precision:.3f} R {m.recall:.3f} F1 {m.f1:.3f}")
    ax.set(xlabel="recall (anomalous)", ylabel="precision (anomalous)", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a training metrics JSONL file (empty if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_loss(records: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss per optimiser step, coloured by stage, with a moving average (window 10)."""
    plt = _pyplot()
    steps = [r for r in records if r.get("event") == "step"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for stage in dict.fromkeys(r["stage"] for r in steps):
        rows = [r for r in steps if r["stage"] == stage]
        x = [r["step"] for r in rows]
        y = [r["loss"] for r in rows]
        line = ax.plot(x, y, alpha=0.35, linewidth=0.8)
        if len(y) >= 10:
            smooth = np.convolve(y, np.ones(10) / 10, mode="valid")
            ax.plot(x[9:], smooth, color=line[0].get_color(), label=f"stage {stage}")
        else:
            line[0].set_label(f"stage {stage}")
    ax.set(xlabel="optimiser step", ylabel="answer loss (mean CE)", title=title, yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _row(ev: Evaluation) -> str:
    s = ev.summary()
    return (
        f"| {ev.name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['tp']} | {s['fp']} | "
        f"{s['fn']} | {s['tn']} | {s['average_precision']:.4f} | {s['oracle_threshold']['f1']:.4f} | {s['parse_failures']} |"
    )


def write_report(
    out_dir: Path,
    evaluations: Sequence[Evaluation],
    *,
    title: str,
    context: dict[str, Any],
    loss_records: Sequence[dict[str, Any]] = (),
    sections: Sequence[str] = (),
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md, scores_<name>.jsonl, pr_curve.png (and training_loss.png
    when `loss_records` has steps) to `out_dir`; returns the report dict. `context` is listed at
    the top of report.md; `sections` are more markdown after its results table; `details` go
    to report.json only (figures a section shows as a table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for ev in evaluations:
        ev.write_scores(out_dir / f"scores_{ev.name}.jsonl")
    plots = [plot_pr_curves(evaluations, out_dir / "pr_curve.png", title).name]
    if any(r.get("event") == "step" for r in loss_records):
        plots.append(plot_training_loss(loss_records, out_dir / "training_loss.png", title).name)
    report = {"title": title, **context, "results": {ev.name: ev.summary() for ev in evaluations}, **(details or {}),
              "plots": plots}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        f"# {title}",
        "",
        *(f"- {k}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}" for k, v in context.items()),
        "",
        "| detector | precision | recall | F1 | TP | FP | FN | TN | AP | oracle-threshold F1 | parse failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(ev) for ev in evaluations),
        "",
        "Anomalous is the positive class. LogLLM's decision is its label rule (context: label_rule): its greedy "
        "answer, or p(anomalous) >= the threshold `logllm calibrate` chose on the training split (then the "
        "`-answer` row gives the greedy answer); LogLLaMA's is the Top-K rule. AP and the oracle-threshold F1 come "
        "from sweeping the continuous score on this test set (an upper bound, not a result).",
        "",
        *(line for section in sections for line in (section, "")),
        *(f"![{p}]({p})" for p in plots),
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    print(f"report written to {out_dir / 'report.md'}", file=sys.stderr)
    return report
