"""Choosing LogLLM's label threshold on training data, and the folder's `decision` entry."""

from pathlib import Path

import pytest
import torch

from model.errors import UserError
from model.folder import read_manifest, rewrite_manifest, write_detector_folder
from model.logllm_detector import decision_threshold
from training.calibrate import calibrate, choose_threshold
from training.config import DataConfig


def test_separable_scores_get_a_cut_halfway_between_the_classes() -> None:
    choice = choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9])
    assert choice.threshold == pytest.approx(0.5)
    assert (choice.f1, choice.tp, choice.fp) == (1.0, 2, 0)


def test_overlapping_scores_get_the_best_f1_cut() -> None:
    # Cuts at 0.2 / 0.5 / 0.7 / 0.8 give F1 2/3, 0.8, 1/2, 2/3: the best flags 0.5 and up.
    choice = choose_threshold([0, 1, 0, 1], [0.2, 0.5, 0.7, 0.8])
    assert choice.threshold == pytest.approx(0.35)
    assert (choice.tp, choice.fp) == (2, 1) and choice.f1 == pytest.approx(0.8)


def test_equal_f1_prefers_the_higher_cut() -> None:
    # Cutting at 0.8 (TP 2, FN 2) and at 0.2 (TP 4, FP 4) both give F1 2/3; the higher one wins.
    choice = choose_threshold([1, 1, 0, 0, 0, 0, 1, 1], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert choice.threshold == pytest.approx(0.75) and choice.f1 == pytest.approx(2 / 3)


def test_a_best_cut_at_the_lowest_score_stays_there() -> None:
    assert choose_threshold([1, 1, 1], [0.2, 0.6, 0.6]).threshold == pytest.approx(0.2)


def test_no_anomalous_training_sequence_is_refused() -> None:
    with pytest.raises(UserError, match="needs anomalous sequences"):
        choose_threshold([0, 0], [0.1, 0.9])


def test_decision_entry_is_checked(tmp_path: Path) -> None:
    assert decision_threshold(tmp_path, {}) is None
    assert decision_threshold(tmp_path, {"decision": {"rule": "score_threshold", "threshold": 0.25}}) == 0.25
    for bad in ({"rule": "score_threshold", "threshold": 1.5}, {"rule": "score_threshold", "threshold": "0.5"},
                {"rule": "vote", "threshold": 0.5}, {"rule": "score_threshold", "threshold": True}, [0.5]):
        with pytest.raises(UserError, match=f"{tmp_path}.*re-run `logllm calibrate`"):
            decision_threshold(tmp_path, {"decision": bad})


def test_rewriting_the_manifest_gives_a_new_valid_version(tmp_path: Path) -> None:
    version = write_detector_folder(tmp_path, {"detector": "logllm"}, {"w.safetensors": {"t": torch.zeros(2)}})
    new = rewrite_manifest(tmp_path, {"decision": {"rule": "score_threshold", "threshold": 0.5}})
    manifest = read_manifest(tmp_path)  # hashes still check out
    assert new != version and manifest["version"] == new
    assert manifest["decision"]["threshold"] == 0.5 and manifest["detector"] == "logllm"


def test_calibrating_a_logllama_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    write_detector_folder(tmp_path, {"detector": "logllama"}, {"w.safetensors": {"t": torch.zeros(2)}})
    with pytest.raises(UserError, match="LogLLM only"):
        calibrate(tmp_path, DataConfig(kind="hdfs"), None, progress=False)
