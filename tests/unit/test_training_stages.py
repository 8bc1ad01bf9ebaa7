"""Stage freezing rules, β oversampling and LR decay spacing (training/stages.py), no model."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from model.errors import UserError
from training.config import PAPER_STAGES, SamplerConfig, StageConfig
from training.stages import (
    decay_interval,
    epoch_order,
    epoch_rng,
    group_of,
    optimizer_steps,
    oversampled_minority,
    pool_size,
    schedule_horizon,
    trainable_names,
)

# Parameter names as peft and LogLLM produce them (one of each kind).
NAMES = [
    "encoder.base_model.model.encoder.layer.0.attention.self.query.base_layer.weight",
    "encoder.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight",
    "encoder.base_model.model.encoder.layer.0.attention.self.value.lora_B.default.weight",
    "encoder.base_model.model.pooler.dense.weight",
    "decoder.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
    "decoder.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
    "decoder.base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight",
    "decoder.base_model.model.model.embed_tokens.weight",
    "projector.weight",
    "projector.bias",
]


def test_paper_stages_train_exactly_the_documented_parts() -> None:
    """METHOD.md §1.5: 1 = Llama LoRA; 2-1 = projector; 2-2 = projector + BERT LoRA; 3 = all three."""
    expected = {
        "1": {NAMES[5], NAMES[6]},
        "2-1": {NAMES[8], NAMES[9]},
        "2-2": {NAMES[8], NAMES[9], NAMES[1], NAMES[2]},
        "3": {NAMES[1], NAMES[2], NAMES[5], NAMES[6], NAMES[8], NAMES[9]},
    }
    for stage in PAPER_STAGES:
        assert set(trainable_names(NAMES, stage.trains)) == expected[stage.name], stage.name
    # Base weights (including the pooler and the embeddings) never train.
    assert all(group_of(n) is None for n in (NAMES[0], NAMES[3], NAMES[4], NAMES[7]))
    assert [(s.epochs, s.lr, s.samples) for s in PAPER_STAGES] == [(1, 5e-4, 1000), (1, 5e-4, None), (1, 5e-5, None), (2, 5e-5, None)]


def test_oversampled_minority_formula() -> None:
    assert oversampled_minority(8914, 286, 0.3) == 3820  # floor(0.3 * 8914 / 0.7) = floor(3820.28)
    assert oversampled_minority(100, 60, 0.3) == 60  # already above the target: kept as is
    assert oversampled_minority(100, 5, 0.0) == 5


def test_epoch_order_oversamples_the_minority_by_tiling() -> None:
    labels = [1] * 7 + [0] * 93
    order = epoch_order(labels, SamplerConfig(beta=0.3), None, np.random.default_rng(0))
    counts = Counter(labels[i] for i in order)
    assert counts[0] == 93 and counts[1] == oversampled_minority(93, 7, 0.3) == 39
    per_index = Counter(int(i) for i in order)
    # every majority sample exactly once; every minority sample 5 or 6 times (5 whole copies + 4 distinct extra)
    assert all(per_index[i] == 1 for i in range(7, 100))
    assert sorted(per_index[i] for i in range(7)) == [5, 5, 5, 6, 6, 6, 6]


def test_minority_may_be_the_normal_class() -> None:
    labels = [0] * 10 + [1] * 90
    order = epoch_order(labels, SamplerConfig(beta=0.3), None, np.random.default_rng(0))
    assert Counter(labels[i] for i in order) == {1: 90, 0: 38}


def test_epoch_orders_reshuffle_each_epoch_and_replay_exactly() -> None:
    labels = [1] * 5 + [0] * 45
    cfg = SamplerConfig()
    first = epoch_order(labels, cfg, None, epoch_rng(42, 1, 0))
    second = epoch_order(labels, cfg, None, epoch_rng(42, 1, 1))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, epoch_order(labels, cfg, None, epoch_rng(42, 1, 0)))


def test_samples_floor_and_cap() -> None:
    labels = [1] * 5 + [0] * 45
    rng = np.random.default_rng(0)
    assert len(epoch_order(labels, SamplerConfig(), 10, rng)) == 10
    assert len(epoch_order(labels, SamplerConfig(), 500, rng)) == 500  # stage samples beyond the pool: tiled
    floored = epoch_order(labels, SamplerConfig(min_samples_per_epoch=1000), None, rng)
    assert len(floored) == 1000
    assert Counter(labels[i] for i in floored)[1] == pytest.approx(1000 * 19 / 64, abs=1)
    assert len(epoch_order(labels, SamplerConfig(max_samples_per_epoch=20), 1000, rng)) == 20


def _skewed_shapes() -> tuple[list[int], list[str]]:
    """200 normal sequences of 20 shapes (one shape 181 times, 19 seen once) and 20 anomalous
    ones of 4 shapes: the long tail a capped HDFS stage misses when it keeps a uniform prefix."""
    labels = [0] * 200 + [1] * 20
    shapes = ["normal-common"] * 181 + [f"normal-rare-{i}" for i in range(19)] + [f"anomalous-{i % 4}" for i in range(20)]
    return labels, shapes


def test_distinct_first_cut_keeps_every_distinct_sequence_before_a_repeat() -> None:
    labels, shapes = _skewed_shapes()
    distinct = SamplerConfig(cap_order="distinct_first")
    cut = epoch_order(labels, distinct, 40, np.random.default_rng(0), shapes)
    kept = Counter(shapes[i] for i in cut)
    assert len(cut) == 40
    # the cut's 28 normal samples cover all 20 normal shapes; its 12 anomalous ones all 4 shapes, 3 each
    assert {s for s in kept if s.startswith("normal")} == {s for s in shapes if s.startswith("normal")}
    assert [kept[f"anomalous-{i}"] for i in range(4)] == [3, 3, 3, 3]
    # the pool's class ratio holds in every prefix, not only in the whole cut
    pool_share = oversampled_minority(200, 20, 0.3) / (200 + oversampled_minority(200, 20, 0.3))
    for n in (5, 10, 20, 40):
        assert sum(labels[i] for i in cut[:n]) == pytest.approx(n * pool_share, abs=1)
    # a uniform prefix of the same length misses most of the rare normal shapes (seed-fixed draw)
    uniform = Counter(shapes[i] for i in epoch_order(labels, SamplerConfig(), 40, np.random.default_rng(0)))
    assert sum(1 for s in uniform if s.startswith("normal")) < 10


def test_distinct_first_changes_nothing_when_the_epoch_keeps_the_whole_pool() -> None:
    labels, shapes = _skewed_shapes()
    for samples in (None, 1000):  # the whole pool, and a stage tiled beyond it
        uniform = epoch_order(labels, SamplerConfig(), samples, epoch_rng(42, 1, 0))
        distinct = epoch_order(labels, SamplerConfig(cap_order="distinct_first"), samples, epoch_rng(42, 1, 0), shapes)
        assert np.array_equal(uniform, distinct)
    capped = SamplerConfig(cap_order="distinct_first", max_samples_per_epoch=40)
    first = epoch_order(labels, capped, None, epoch_rng(42, 1, 0), shapes)
    assert np.array_equal(first, epoch_order(labels, capped, None, epoch_rng(42, 1, 0), shapes))  # a resume replays it
    assert not np.array_equal(first, epoch_order(labels, capped, None, epoch_rng(42, 1, 1), shapes))
    with pytest.raises(ValueError, match="shape"):
        epoch_order(labels, capped, None, epoch_rng(42, 1, 0))


def test_single_class_cannot_be_balanced() -> None:
    with pytest.raises(UserError, match="both classes"):
        epoch_order([0, 0, 0], SamplerConfig(), None, np.random.default_rng(0))


def test_decay_spacing_and_step_counts() -> None:
    assert decay_interval(250, 10) == 25
    assert decay_interval(7, 10) == 1
    assert decay_interval(109, 11) == 9
    assert optimizer_steps(10, 4) == 3  # 4 + 4 + a partial group of 2 at the epoch's end


def test_pool_size_is_one_epoch_over_the_balanced_pool() -> None:
    labels = [1] * 7 + [0] * 93
    assert pool_size(labels, SamplerConfig()) == 93 + 39
    assert pool_size(labels, SamplerConfig(min_samples_per_epoch=500)) == 500
    assert pool_size(labels, SamplerConfig(max_samples_per_epoch=50)) == 50
    assert pool_size(labels, SamplerConfig(max_samples_per_epoch=50, cap_order="distinct_first")) == 50


def test_schedule_horizon_compressed_or_paper_length() -> None:
    labels = [1] * 7 + [0] * 93  # pool: 132 samples = 33 micro-batches of 4
    stage = StageConfig(name="s", trains=["projector"], lr=1e-3, samples=40, epochs=2)
    assert schedule_horizon(stage, 20, labels, SamplerConfig(), 4) == 20  # official: what runs
    pool = stage.model_copy(update={"schedule_samples": "pool"})
    assert schedule_horizon(pool, 20, labels, SamplerConfig(), 4) == 66
    fixed = stage.model_copy(update={"schedule_samples": 1000, "epochs": 1})
    assert schedule_horizon(fixed, 10, labels, SamplerConfig(), 4) == 250
    assert decay_interval(250, 10) == 25  # stage 1 cut to 400 samples decays 4 times, not 10
