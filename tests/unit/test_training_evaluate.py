"""Metric maths against hand-computed cases, the threshold sweep, plots and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.evaluate import (
    Evaluation,
    average_precision,
    best_threshold,
    binary_metrics,
    plot_training_loss,
    threshold_sweep,
    write_report,
)


def test_metrics_hand_computed() -> None:
    # labels:      1 1 1 1 0 0 0 0 0 0
    # predictions: 1 1 1 0 1 0 0 0 0 0  -> TP 3, FN 1, FP 1, TN 5
    m = binary_metrics([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 1, 5)
    assert m.precision == pytest.approx(0.75) and m.recall == pytest.approx(0.75) and m.f1 == pytest.approx(0.75)
    # P = 2/5, R = 2/2 -> F1 = 2 * 0.4 * 1 / 1.4 = 4/7
    m = binary_metrics([1, 1, 0, 0, 0], [1, 1, 1, 1, 1])
    assert (m.precision, m.recall, m.f1) == pytest.approx((0.4, 1.0, 4 / 7))


def test_degenerate_cases_are_zero_not_nan() -> None:
    m = binary_metrics([0, 0, 1], [0, 0, 0])  # nothing flagged
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    m = binary_metrics([0, 0], [0, 0])  # no anomalies at all
    assert (m.precision, m.recall, m.f1, m.tn) == (0.0, 0.0, 0.0, 2)


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="2 labels but 3"):
        binary_metrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0, 2], [0, 1])


def test_threshold_sweep_hand_computed() -> None:
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.4, 0.1]
    sweep = threshold_sweep(labels, scores)
    assert [r["threshold"] for r in sweep] == [0.1, 0.4, 0.8, 0.9, math.inf]
    # t=0.4 flags 0.9, 0.8, 0.4: TP 2, FP 1 -> P 2/3, R 1
    row = sweep[1]
    assert (row["tp"], row["fp"], row["precision"], row["recall"]) == (2, 1, pytest.approx(2 / 3), 1.0)
    assert sweep[-1]["tp"] == 0 and sweep[-1]["f1"] == 0
    assert best_threshold(sweep)["threshold"] == 0.4  # F1 0.8, the best


def test_average_precision_matches_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score

    labels = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    scores = [0.9, 0.85, 0.7, 0.7, 0.6, 0.5, 0.45, 0.3, 0.3, 0.2, 0.1, 0.05]
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    a = Evaluation("logllm", ["a", "b", "c", "d"], [1, 0, 1, 0], [1, 0, 0, 0], [0.9, 0.2, 0.4, 0.1], seconds=2.0)
    b = Evaluation("baseline", ["a", "b", "c", "d"], [1, 0, 1, 0], [1, 1, 1, 0], [1.0, 0.6, 0.7, 0.0])
    loss = [{"event": "step", "stage": s, "step": i, "loss": 2.0 / i} for i, s in enumerate(["1"] * 12 + ["2-1"] * 3, 1)]
    report = write_report(tmp_path, [a, b], title="t", context={"split": {"how": "x"}}, loss_records=loss)
    assert report["results"]["logllm"]["f1"] == pytest.approx(2 / 3)
    assert report["results"]["logllm"]["sequences_per_s"] == 2.0
    assert report["results"]["logllm"]["oracle_threshold"]["threshold"] == 0.4
    for name in ("report.json", "report.md", "pr_curve.png", "training_loss.png", "scores_logllm.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"
    first = json.loads((tmp_path / "scores_baseline.jsonl").read_text().splitlines()[0])
    assert first == {"sequence": "a", "label": 1, "prediction": 1, "score": 1.0}
    assert "| logllm | 1.0000 | 0.5000 | 0.6667 |" in (tmp_path / "report.md").read_text()


def test_loss_plot_needs_no_stage_of_ten_steps(tmp_path: Path) -> None:
    path = plot_training_loss([{"event": "step", "stage": "1", "step": 1, "loss": 1.0}], tmp_path / "l.png", "t")
    assert path.exists()
