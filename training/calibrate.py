"""`logllm calibrate`: choose LogLLM's label threshold on labelled training data [ours].

The paper labels a sequence by the decoder's greedy answer, which amounts to cutting
p(anomalous) near 0.5. A small pair trained on a CPU budget ranks sequences better than that cut
separates them (HDFS, shipped recipe: test AP 0.97 with 4 false positives at the answer). This
step scores the *training* split of the detector's dataset (never its test split), takes the cut
`p(anomalous) >= t` with the best F1 there, and records it in the folder's manifest, where it
replaces the greedy answer as the folder's label rule (and, being part of the manifest, gives the
folder a new version).

    training split -> detector scores -> best-F1 cut (between two training scores) -> manifest `decision`
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.errors import UserError


@dataclass(frozen=True)
class ThresholdChoice:
    """A label threshold and what it gives on the data it was chosen on."""

    threshold: float
    f1: float
    precision: float
    recall: float
    tp: int
    fp: int


def choose_threshold(labels: Sequence[int], scores: Sequence[float]) -> ThresholdChoice:
    """The cut `score >= t` with the best F1 on (labels, scores).

    Of equally good cuts the highest counts (fewest flags); it is then lowered halfway to the
    next lower score, which flags exactly the same sequences but sits between the two scores
    instead of on a training sequence's own score.

    Raises:
        UserError: no anomalous label, so no cut has any F1.
    """
    from training.evaluate import best_threshold, threshold_sweep

    if not any(labels):
        raise UserError("calibration needs anomalous sequences in the training split; this one has none")
    best = best_threshold([row for row in threshold_sweep(labels, scores) if math.isfinite(row["threshold"])])
    top = best["threshold"]
    lower = [score for score in scores if score < top]
    threshold = (max(lower) + top) / 2 if lower else top
    return ThresholdChoice(threshold, best["f1"], best["precision"], best["recall"], int(best["tp"]), int(best["fp"]))


def calibrate(model_dir: Path, data: Any, runtime: Any, progress: bool = True) -> dict[str, Any]:
    """Score the training split of `data` with the LogLLM folder `model_dir`, choose its
    threshold and write it into the folder's manifest; returns what was recorded. The folder is
    checked before the data is loaded, so a wrong folder fails at once.

    Raises:
        UserError: the folder is not a LogLLM detector, or the data is unusable (see `build_split`).
    """
    from model.folder import read_manifest
    from training.data import build_split, load_dataset

    manifest = read_manifest(model_dir)
    if manifest.get("detector") != "logllm":
        raise UserError(
            f"{model_dir} holds a {manifest.get('detector')!r} detector; calibrate applies to LogLLM only "
            "(LogLLaMA learns from normal logs alone: set scoring.label_threshold from `logllm eval` instead)"
        )
    return calibrate_on_split(model_dir, build_split(data, load_dataset(data)), data.describe(), runtime, progress)


def calibrate_on_split(model_dir: Path, split: Any, data_name: str, runtime: Any, progress: bool = True) -> dict[str, Any]:
    """`calibrate` on an already loaded `split` of the data named `data_name`."""
    from model.detector import load_detector
    from model.folder import rewrite_manifest
    from model.logllm_detector import DECISION
    from training.evaluate import binary_metrics
    from training.train import progress_bar

    detector = load_detector(model_dir, runtime, expect="logllm")
    train = split.train
    bar = progress_bar(len(train), 0, "scoring the training split", progress, unit="seq")
    try:
        verdicts = detector.score([s.messages for s in train], progress=bar.update)
    finally:
        bar.close()
    labels = [s.label for s in train]
    choice = choose_threshold(labels, [v.score for v in verdicts])
    # What the rule in force before (the greedy answer, or an earlier threshold) gave on the same data.
    before = binary_metrics(labels, [v.label for v in verdicts])
    decision = {
        "rule": "score_threshold",
        "threshold": choice.threshold,
        "chosen_on": {"data": data_name, **split.summary(), "scored": "the training split"},
        "train": {key: round(value, 6) if isinstance(value, float) else value for key, value in asdict(choice).items()},
        "train_before": {"version": detector.version, **before.as_dict()},
    }
    version = rewrite_manifest(model_dir, {DECISION: decision})
    return {**decision, "version": f"{detector.name}-{version}", "previous_version": detector.version}
