"""Labelling by score instead of the detector's rule: the wrapper the worker, backfill and
`logllm score` put around a detector when a label threshold is configured."""

from __future__ import annotations

import pytest

from model.detector import ScoreThresholdDetector, with_label_threshold
from model.errors import UserError
from tests.fakes import FakeDetector

SEQUENCES = [[f"line {i}", f"other {i * 7}", "x" * (i % 5)] for i in range(200)]


def test_labels_follow_the_score_and_the_version_names_the_threshold() -> None:
    inner = FakeDetector()
    wrapped = with_label_threshold(inner, 0.5)
    assert isinstance(wrapped, ScoreThresholdDetector)
    own = inner.score(SEQUENCES)
    relabelled = wrapped.score(SEQUENCES)
    assert wrapped.version == relabelled[0].model_version == "fake-0001@score>=0.5"
    assert [v.label for v in relabelled] == [int(v.score >= 0.5) for v in own]
    assert [v.score for v in relabelled] == [v.score for v in own]
    # The fake's own rule is score > 0.8, so 0.5 flags more: some groups change label.
    assert sum(v.label for v in relabelled) > sum(v.label for v in own) > 0
    for mine, theirs in zip(relabelled, own, strict=True):
        assert mine.answer.startswith(f"score {theirs.score:.4f} {'>=' if mine.label else '<'} threshold 0.5; ")
        # The rule's lines when it flagged the group; else, when the threshold did, the score's line.
        expected = (theirs.positions or theirs.score_positions) if mine.label else ()
        assert mine.positions == expected and mine.score_positions == theirs.score_positions
    flagged_by_score_only = [m for m, t in zip(relabelled, own, strict=True) if m.label and not t.label]
    assert flagged_by_score_only and all(m.positions for m in flagged_by_score_only)
    assert wrapped.cache_stats() == inner.cache_stats()


def test_no_threshold_keeps_the_detector_and_a_threshold_outside_the_scores_is_refused() -> None:
    inner = FakeDetector()
    assert with_label_threshold(inner, None) is inner
    assert [v.label for v in with_label_threshold(inner, 0.0).score(SEQUENCES)] == [1] * len(SEQUENCES)
    with pytest.raises(UserError, match=r"label threshold 1.2: scores are in \[0, 1\]"):
        with_label_threshold(inner, 1.2)
