"""The pieces of a training stage that do not depend on the loop: which parameters train, the
β-oversampled sample order of each epoch, and the stepped exponential LR decay (METHOD.md §1.5).

All functions are pure or touch only the model's ``requires_grad``/train flags, so they are
unit-tested without loading a model (`trainable_names` works on any named-parameter list).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.errors import UserError
from training.config import SamplerConfig, StageConfig, TrainableGroup

if TYPE_CHECKING:
    import torch

    from model.logllm import LogLLM

ALL_GROUPS: tuple[TrainableGroup, ...] = ("decoder_lora", "projector", "encoder_lora")


def group_of(name: str) -> TrainableGroup | None:
    """The trainable group a LogLLM parameter belongs to, or None for frozen base weights."""
    if name.startswith("projector."):
        return "projector"
    if "lora_" in name:
        if name.startswith("decoder."):
            return "decoder_lora"
        if name.startswith("encoder."):
            return "encoder_lora"
    return None


def trainable_names(names: Iterable[str], groups: Sequence[TrainableGroup]) -> list[str]:
    """The parameter names that train when `groups` train (everything else is frozen)."""
    wanted = set(groups)
    return [n for n in names if group_of(n) in wanted]


def freeze_for_stage(model: LogLLM, groups: Sequence[TrainableGroup]) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for a stage and the module modes, and return the trainable parameters.

    Modes: everything trains in ``train()`` mode (LoRA dropout on, as in the official code),
    except a frozen encoder, which runs in ``eval()`` mode so its vectors are deterministic and
    can come from the embedding cache (METHOD.md §2).

    Raises:
        UserError: the groups select no parameter (e.g. LoRA targets matched nothing).
    """
    params = []
    wanted = set(groups)
    for name, param in model.named_parameters():
        train = group_of(name) in wanted
        param.requires_grad_(train)
        if train:
            params.append(param)
    if not params:
        raise UserError(f"stage trains {list(groups)} but the model has no such parameters; check the LoRA target modules")
    model.train()
    if "encoder_lora" not in wanted:
        model.encoder.eval()
    return params


# --------------------------------------------------------------------------------------------
# β oversampling
# --------------------------------------------------------------------------------------------


def oversampled_minority(n_majority: int, n_minority: int, beta: float) -> int:
    """Minority samples per epoch: max(floor(β·N_maj/(1−β)), N_min) (METHOD.md §1.5)."""
    return max(int(beta * n_majority / (1 - beta)), n_minority)


def _tile(indices: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` draws from `indices`: whole copies, then a without-replacement remainder."""
    copies, remainder = divmod(count, len(indices))
    parts = [np.tile(indices, copies), rng.choice(indices, size=remainder, replace=False)]
    return np.concatenate(parts)


def _distinct_first(pool: np.ndarray, labels: np.ndarray, shapes: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """The shuffled `pool` reordered so that every prefix holds as many distinct shapes as it can.

    Within each class, round r holds the r-th copy of every shape that has one (in shuffled
    order), so the first round is one copy of each distinct shape. The two classes are then
    merged by stratified keys (k + u) / n, so any prefix keeps the pool's class ratio (β).
    """
    ordered = []
    for cls in np.unique(labels[pool]):
        members = pool[labels[pool] == cls]
        copies: Counter[Hashable] = Counter()
        rounds = np.empty(len(members), dtype=np.int64)
        for j, index in enumerate(members):
            rounds[j] = copies[shapes[index]]
            copies[shapes[index]] += 1
        ordered.append(members[np.argsort(rounds, kind="stable")])
    keys = np.concatenate([(np.arange(len(o)) + rng.random(len(o))) / len(o) for o in ordered])
    return np.concatenate(ordered)[np.argsort(keys, kind="stable")]


def epoch_order(
    labels: Sequence[int],
    sampler: SamplerConfig,
    samples: int | None,
    rng: np.random.Generator,
    shapes: Sequence[Hashable] | None = None,
) -> np.ndarray:
    """Indices of the samples of one epoch, shuffled.

    1. Balanced pool: all majority-class indices, plus the minority class raised to
       `oversampled_minority` by tiling and a without-replacement remainder.
    2. Floor: the pool is tiled the same way up to `sampler.min_samples_per_epoch`, if set.
    3. Shuffle; then the first `samples` (stage setting; tiled if larger than the pool) and at
       most `sampler.max_samples_per_epoch`. When that keeps less than the pool and
       `sampler.cap_order` is "distinct_first", the shuffled pool is first reordered by
       `_distinct_first` on `shapes` (one hashable per training sequence, e.g. its cleaned
       messages), so the cut keeps one copy of every distinct sequence before any repeat.

    Raises:
        UserError: fewer than two classes (nothing to balance; `data.check_trainable` says why).
        ValueError: "distinct_first" cuts the pool and no `shapes` were given (a caller's bug).
    """
    y = np.asarray(labels)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(positives) or not len(negatives):
        raise UserError("oversampling needs both classes in the training set")
    minority, majority = (positives, negatives) if len(positives) <= len(negatives) else (negatives, positives)
    pool = np.concatenate([majority, _tile(minority, oversampled_minority(len(majority), len(minority), sampler.beta), rng)])
    if sampler.min_samples_per_epoch and len(pool) < sampler.min_samples_per_epoch:
        pool = _tile(pool, sampler.min_samples_per_epoch, rng)
    pool = rng.permutation(pool)
    kept = min(samples if samples is not None else len(pool), sampler.max_samples_per_epoch or len(pool))
    if sampler.cap_order == "distinct_first" and kept < len(pool):
        if shapes is None:
            raise ValueError("cap_order 'distinct_first' needs the shape of every training sequence")
        pool = _distinct_first(pool, y, shapes, rng)
    if samples is not None:
        pool = pool[:samples] if samples <= len(pool) else _tile(pool, samples, rng)
    if sampler.max_samples_per_epoch is not None:
        pool = pool[: sampler.max_samples_per_epoch]
    return pool


def pool_size(labels: Sequence[int], sampler: SamplerConfig) -> int:
    """Samples in one epoch over the whole balanced pool (after the floor and the cap)."""
    # Only the length is needed, and it does not depend on which samples a cut keeps.
    uniform = sampler.model_copy(update={"cap_order": "random"})
    return len(epoch_order(labels, uniform, None, np.random.default_rng(0)))


def epoch_rng(seed: int, stage_index: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's order: a function of (seed, stage, epoch) only, so a resumed
    run draws exactly the order the interrupted one did without storing it."""
    return np.random.default_rng([seed, stage_index, epoch])


# --------------------------------------------------------------------------------------------
# LR schedule and step counting
# --------------------------------------------------------------------------------------------


def decay_interval(total_micro_steps: int, decays_per_stage: int) -> int:
    """Micro-batches between two ExponentialLR steps: max(floor(total/decays), 1)."""
    return max(total_micro_steps // decays_per_stage, 1)


def schedule_horizon(
    stage: StageConfig, run_micro_batches: int, labels: Sequence[int], sampler: SamplerConfig, micro_batch: int
) -> int:
    """Micro-batches the stage's LR decays are spread over: the ones it runs (unset
    `schedule_samples`, the official code), or the paper's stage length, so that a capped stage
    runs a prefix of the paper's schedule."""
    if stage.schedule_samples is None:
        return run_micro_batches
    length = pool_size(labels, sampler) if stage.schedule_samples == "pool" else stage.schedule_samples
    return micro_batches(length, micro_batch) * stage.epochs


def micro_batches(n_samples: int, micro_batch: int) -> int:
    return -(-n_samples // micro_batch)


def optimizer_steps(n_micro: int, accumulation: int) -> int:
    """Optimiser steps in one epoch of `n_micro` micro-batches: every `accumulation` micro-batches
    and once more for a partial group at the epoch's end (as the official loop)."""
    return -(-n_micro // accumulation)
