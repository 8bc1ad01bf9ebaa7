"""The drain3 + event-count baseline on small hand-made logs."""

from __future__ import annotations

import pytest

from model.errors import UserError
from training.baseline import TemplateCountBaseline


def _session(i: int, anomalous: bool) -> list[str]:
    lines = [f"Receiving block blk_{i} src: /10.0.0.{i % 250}:5001", f"Received block blk_{i} of size {1000 + i}"]
    if anomalous:
        lines.append(f"Exception in receiveBlock for block blk_{i} java.io.IOException")
    return lines


@pytest.mark.parametrize("classifier", ["decision_tree", "logistic_regression"])
def test_baseline_learns_an_anomalous_event(classifier: str) -> None:
    train = [_session(i, i % 5 == 0) for i in range(60)]
    labels = [int(i % 5 == 0) for i in range(60)]
    baseline = TemplateCountBaseline(classifier, seed=0).fit(train, labels)  # type: ignore[arg-type]
    assert baseline.n_templates == 3  # block ids, IPs and sizes are masked, not separate templates
    predictions, scores = baseline.predict([_session(1000, True), _session(1001, False)])
    assert predictions == [1, 0]
    assert scores[0] > 0.5 > scores[1]


def test_unseen_events_count_nothing_and_are_reported() -> None:
    train = [_session(i, i % 2 == 0) for i in range(20)]
    baseline = TemplateCountBaseline().fit(train, [int(i % 2 == 0) for i in range(20)])
    baseline.predict([["totally new kind of message here"]])
    assert baseline.unseen_messages == 1


def test_single_class_is_refused() -> None:
    with pytest.raises(UserError, match="both classes"):
        TemplateCountBaseline().fit([_session(1, False)], [0])
