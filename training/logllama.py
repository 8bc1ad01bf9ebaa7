"""Training LogLLaMA (METHOD.md §3): next-key fine-tuning on normal sequences, then RL.

    data (training.data) -> normal train sequences -> 90/10 train/validation
      -> key map (Drain on the normal training messages; BGL: its EventIds)
      -> stage "lm": next-key cross-entropy, early stopping on validation NLL
      -> stage "rl": REINFORCE with the Top-K ±1 reward (default) or PPO with a value head,
         early stopping on the validation RL loss (LogGPT's rule)
      -> detector folders + report

REINFORCE, per normal sequence (LogGPT's loss): the first `prompt_fraction` of the targets is
the prompt; each later target t gets r_t = +1 if the observed key is in the Top-K of the
prediction at t, else −1, and

    loss = −(Σ_t log p(x_t | c_<t)) · clip(Σ_t r_t, −c, c) − λ · mean_t H(p_t)

where the context c is the observed sequence (``rl.context = "observed"``, one teacher-forced
pass) or, as in LogGPT's code, the prompt continued by keys the model samples itself
(``"generated"``): the observed keys must then rank high after the model's own, imperfect
continuations, which plain likelihood training never asks for.

PPO (``rl.algorithm = "ppo"``), on-policy over generated contexts: the actions are the keys
the model samples after the prompt, each credited with the same Top-K rewards of the
predictions that follow it (reward-to-go minus a value head on the detached hidden state,
normalised), clipped surrogate, exact KL to the model as it was after the LM stage, the value
loss and the entropy bonus. Under teacher forcing the observed keys are no actions of the
policy, and a normalised advantage lowers the probability of about half of them: tried on
HDFS_2pct, one episode took the validation false-positive rate from 0.2% to 76%.

Only sequences labelled normal train the model; no anomaly label is needed beyond picking them
(`data.assume_normal` takes every sequence of an unlabelled log as normal; incidents left in the
training period are then learnt as normal, which cost most of the recall on HDFS_2pct:
benchmarks/RESULTS.md).

The run folder holds ``detector/`` (the final model), ``without_rl/`` (after the LM stage),
with ``rl.control`` also ``lm_continued/`` (the equal-budget likelihood control: the RL stage's
episodes, sequences, batches and LR, but the plain next-key loss, so RL-vs-control isolates the
reward from the extra training), ``training.json`` (curves, timings, data summary) and, with
``evaluate``, ``report.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from model.detector import RuntimeSettings, Verdict
from model.errors import UserError
from model.logkeys import DrainSettings, LogKeyMap
from model.logllama import (
    DEFAULT_K,
    IGNORE,
    KeyBatch,
    LogLLaMAArchitecture,
    LogLLaMADetector,
    effective_k,
    key_batch,
    outside_topk,
    sampled_inputs,
)
from training.config import DataConfig, format_validation_error, read_config_file
from training.data import Dataset, LabelledSequence, build_split, load_dataset

log = logging.getLogger(__name__)

# dedupe: most copies of one sequence a training row stands for (see `weighted_rows`).
MAX_ROW_WEIGHT = 16
# Held-out sequences listed in the report of a run on unlabelled logs, most surprising first.
MOST_SURPRISING = 20
# Report figures that only mean something against anomaly labels (left out on unlabelled logs).
LABELLED_ONLY = frozenset(
    {"precision", "recall", "f1", "tp", "fp", "fn", "tn", "average_precision", "oracle_threshold", "anomalous_with_unseen_key"}
)


# ============================================================================ configuration
class DrainConfig(BaseModel):
    """drain3 parameters for mining keys (ignored for bgl_windows, whose EventIds are the keys)."""

    model_config = ConfigDict(extra="forbid")

    sim_th: float = Field(0.4, gt=0, le=1, description="similarity threshold for joining a cluster")
    depth: int = Field(4, ge=3, description="prefix-tree depth")
    max_children: int = Field(100, ge=2, description="children per prefix-tree node")
    mask: Literal["logllm-v2", "none"] = Field(
        "logllm-v2", description="clean messages with LogLLM's 16 regex rules before Drain (ids, IPs, numbers -> <*>)"
    )


class LMConfig(BaseModel):
    """Stage "lm": next-key fine-tuning on normal sequences."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1, description="passes over the training sequences")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (a CPU budget)")
    batch_size: int = Field(8, ge=1, description="sequences per step (similar lengths batched together)")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate of the LoRA weights")
    key_lr: float = Field(2e-3, gt=0, description="AdamW learning rate of the new key rows")
    lr_gamma: float = Field(
        1.0, gt=0, le=1, description="ExponentialLR factor applied lr_decays times over the stage (1 = constant LR)"
    )
    lr_decays: int = Field(10, ge=1, description="LR decays spread evenly over the stage's planned steps")
    eval_every: int = Field(50, ge=1, description="validation NLL every N steps (and at each epoch end)")
    patience: int = Field(3, ge=1, description="stop after this many validations without a new best")


class PPOConfig(BaseModel):
    """PPO settings (used when rl.algorithm = "ppo")."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1, description="optimisation passes over each batch")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="ratio clipping of the surrogate")
    kl_coef: float = Field(0.1, ge=0, description="weight of KL(policy || model after the LM stage)")
    value_coef: float = Field(0.5, ge=0, description="weight of the value-head regression loss")
    gamma: float = Field(1.0, gt=0, le=1, description="discount of the reward-to-go")
    value_lr: float = Field(1e-3, gt=0, description="learning rate of the value head")


class RLConfig(BaseModel):
    """Stage "rl": the Top-K ±1 reward, entropy bonus and reward clipping."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the RL stage after the LM stage")
    algorithm: Literal["reinforce", "ppo"] = Field("reinforce", description="REINFORCE as in LogGPT, or PPO + value head")
    context: Literal["observed", "generated"] = Field(
        "observed",
        description="what the observed keys are predicted from: the observed sequence (one teacher-forced pass) or, "
        "as in LogGPT's code, the prompt followed by keys the model samples itself (one short forward per position; "
        "the model learns to rank the right key from its own, imperfect contexts). PPO needs (and defaults to) "
        "\"generated\": its actions are the sampled keys",
    )
    k: int | None = Field(None, ge=1, description="K of the reward (default: the detection K)")
    prompt_fraction: float = Field(0.2, ge=0, lt=1, description="leading share of each sequence that earns no reward")
    reward_clip: float = Field(10.0, gt=0, description="c: the summed reward is clipped to [-c, c]")
    entropy_coef: float = Field(0.01, ge=0, description="λ: weight of the entropy bonus")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate of the LoRA weights (LogGPT: 1e-6, full GPT-2)")
    key_lr: float = Field(1e-5, gt=0, description="AdamW learning rate of the key rows")
    episodes: int = Field(20, ge=1, description="maximum episodes (LogGPT: 20)")
    sequences_per_episode: int | None = Field(
        None, ge=1, description="training sequences drawn per episode (default: all; a CPU budget)"
    )
    batch_size: int = Field(8, ge=1, description="sequences per step")
    min_relative_gain: float = Field(0.01, ge=0, description="an episode whose validation loss improves less counts as stale")
    patience: int = Field(3, ge=0, description="stop when more than this many episodes were stale (LogGPT: 3)")
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    control: bool = Field(
        False,
        description="also train a control from the same post-lm weights: as many episodes as the RL stage ran, same "
        "sequences, batches and LR, but plain next-key likelihood (best episode by validation NLL), saved as "
        "lm_continued/ and evaluated: it separates the reward's effect from that of more training",
    )

    @model_validator(mode="after")
    def _ppo_acts_on_generated_contexts(self) -> RLConfig:
        if self.algorithm != "ppo":
            return self
        if "context" not in self.model_fields_set:
            self.context = "generated"
        elif self.context != "generated":
            raise ValueError(
                'rl.algorithm = "ppo" needs rl.context = "generated" (or leave context unset): PPO\'s actions are '
                "the keys the model samples after the prompt; teacher-forced observed keys are no actions of the "
                "policy, and a baseline under them lowers the probability of normal keys"
            )
        return self


class LogLLaMATrainConfig(BaseModel):
    """Everything `train_logllama` needs (TOML: top-level ``detector = "logllama"``)."""

    model_config = ConfigDict(extra="forbid")

    detector: Literal["logllama"] = Field("logllama", description="selects this trainer in `logllm train`")
    data: DataConfig = Field(default_factory=DataConfig, description="log data (labelled, or data.assume_normal), grouping and split (training.data)")
    architecture: LogLLaMAArchitecture = Field(default_factory=LogLLaMAArchitecture, description="decoder, LoRA, layout")
    drain: DrainConfig = Field(default_factory=DrainConfig)
    runtime: RuntimeSettings = Field(
        default_factory=lambda: RuntimeSettings(device="auto", dtype="auto"), description="device, dtype, threads"
    )
    k: int | None = Field(None, ge=1, description="detection K (default per dataset: HDFS 7, BGL 80; others 7)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the normal training sequences held out for validation")
    dedupe: bool = Field(
        False,
        description="train on the distinct key sequences, each weighted by how often it occurs (split into rows of at "
        f"most {MAX_ROW_WEIGHT} copies): the same expected gradient as every sequence (frequencies kept, e.g. how often "
        "a block ends after a key) at the cost of the rows only (HDFS_2pct: 1,101 distinct sequences, ~1,430 rows, "
        "for 8,023 normal training blocks); validation is always weighted by count",
    )
    min_key_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="a template found in fewer than this share of the normal training sequences is not made a key: "
        "its lines map to <unk> and are always flagged (0 = every template is a key, as METHOD.md; "
        "e.g. 0.001 when the 'normal' training logs may hold a few incidents)",
    )
    max_train_sequences: int | None = Field(None, ge=1, description="random subset of the training sequences (CPU budget)")
    max_val_sequences: int | None = Field(None, ge=1, description="random subset of the validation sequences (CPU budget)")
    lm: LMConfig = Field(default_factory=LMConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    seed: int = Field(42, description="seed of initialisation, subsets and order")
    output: Path = Field(Path("runs/logllama"), description="run folder (detector/, without_rl/, training.json, report.json)")
    evaluate: bool = Field(True, description="score the test split with both folders and write report.json")

    @model_validator(mode="after")
    def _defaults(self) -> LogLLaMATrainConfig:
        if self.rl.control and not self.rl.enabled:
            raise ValueError("rl.control compares against the RL stage, so it needs rl.enabled = true")
        if self.k is None:
            self.k = DEFAULT_K["bgl"] if self.data.kind == "bgl_windows" else DEFAULT_K["hdfs"]
        if "sequence_kind" not in self.architecture.model_fields_set:
            by_session = self.data.kind == "hdfs" or self.data.session_regex is not None or (
                self.data.opensearch is not None and self.data.opensearch.session_field is not None
            )
            self.architecture = self.architecture.model_copy(
                update={"sequence_kind": "session" if by_session else "window"}
            )
        return self

    @property
    def detection_k(self) -> int:
        assert self.k is not None  # set by the validator
        return self.k


def parse_logllama_config(raw: dict[str, Any], source: str = "config") -> LogLLaMATrainConfig:
    """Validate a config mapping.

    Raises:
        UserError: naming every offending key and why.
    """
    try:
        return LogLLaMATrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from exc


def load_logllama_config(path: Path, overrides: dict[str, Any] | None = None) -> LogLLaMATrainConfig:
    """Read a TOML or JSON config, apply top-level `overrides`, validate.

    Raises:
        UserError: missing, empty or unreadable file, bad syntax, or invalid values.
    """
    raw = read_config_file(path, "training/configs/logllama_*.toml")
    raw.update(overrides or {})
    return parse_logllama_config(raw, str(path))


# ============================================================================ data
@dataclass
class KeyedData:
    """Normal training rows with their weights (all 1, or `weighted_rows` with dedupe),
    distinct validation sequences with their counts, and the test split."""

    keymap: LogKeyMap
    train: list[tuple[int, ...]]
    train_weights: list[float]
    val: list[tuple[int, ...]]
    val_counts: list[int]
    test: tuple[LabelledSequence, ...]
    summary: dict[str, Any] = field(default_factory=dict)
    # With weighted rows: mean targets per training sequence (see `LogLLaMA.next_key_loss`).
    mean_targets: float | None = None
    # Every held-out normal sequence (distinct, with counts) when `val` is a subsample of them.
    held_out: tuple[list[tuple[int, ...]], list[int]] | None = None
    # False for logs without anomaly labels (`DataConfig.assume_normal`): every test label is 0.
    labelled: bool = True

    @property
    def all_validation(self) -> tuple[list[tuple[int, ...]], list[int]]:
        """All the held-out normal sequences with their counts (`k_sweep` rates K on them)."""
        return self.held_out or (self.val, self.val_counts)


def _bgl_keymap(templates_csv: Path, messages: Sequence[str]) -> LogKeyMap:
    """BGL: the EventIds seen in the normal training windows are the keys (METHOD.md §4)."""
    with templates_csv.open(newline="") as handle:
        rows = [(r["EventId"].strip(), r["EventTemplate"]) for r in csv.DictReader(handle)]
    seen = set(messages)
    kept = [(name, text) for name, text in rows if text in seen]
    return LogKeyMap.from_templates([n for n, _ in kept], [t for _, t in kept])


def without_rare_keys(
    keymap: LogKeyMap, normal_keys: Sequence[Sequence[int]], min_share: float
) -> tuple[LogKeyMap, list[dict[str, Any]]]:
    """Drop the keys found in fewer than `min_share` of the normal sequences (their lines become
    <unk>); returns the new map and what was dropped (template, sequences holding it)."""
    support = Counter(k for keys in normal_keys for k in set(keys))
    rare = [k for k in range(keymap.n_keys) if support[k] < min_share * len(normal_keys)]
    if not rare:
        return keymap, []
    if len(rare) == keymap.n_keys:
        raise UserError(f"min_key_share = {min_share} leaves no key (the most common template is in "
                        f"{max(support.values(), default=0)} of {len(normal_keys)} normal sequences); lower it")
    dropped = [{"template": keymap.template(k), "sequences": support[k]} for k in rare]
    log.info("templates in fewer than %.3g%% of normal sequences map to <unk>: %s", 100 * min_share, dropped)
    return keymap.keeping(k for k in range(keymap.n_keys) if k not in rare), dropped


def _distinct(sequences: Sequence[tuple[int, ...]], dedupe: bool) -> tuple[list[tuple[int, ...]], list[int]]:
    if not dedupe:
        return list(sequences), [1] * len(sequences)
    counts = Counter(sequences)
    return list(counts), list(counts.values())


def weighted_rows(
    sequences: Sequence[tuple[int, ...]], counts: Sequence[int], max_weight: int = MAX_ROW_WEIGHT
) -> tuple[list[tuple[int, ...]], list[float]]:
    """Training rows for distinct sequences with their counts: a sequence seen c times becomes
    ⌈c / max_weight⌉ rows sharing the weight c, so no row (and no batch) carries a large share
    of an epoch's gradient; weights are scaled to a mean of 1 per row.

    Every epoch over the rows then has the expected gradient of an epoch over all the copies
    (see `LogLLaMA.next_key_loss`), at the cost of the rows only.
    """
    rows: list[tuple[int, ...]] = []
    weights: list[float] = []
    for sequence, count in zip(sequences, counts, strict=True):
        parts = -(-count // max_weight)
        rows += [sequence] * parts
        weights += [count / parts] * parts
    mean = sum(weights) / len(weights)
    return rows, [w / mean for w in weights]


def prepare_data(config: LogLLaMATrainConfig, dataset: Dataset | None = None) -> KeyedData:
    """Load and split the data, fit the key map on normal training messages, map to keys.

    Raises:
        UserError: no normal training sequence.
    """
    dataset = dataset or load_dataset(config.data)
    split = build_split(config.data, dataset, require_both_classes=False)
    normal = [s for s in split.train if s.label == 0]
    if len(normal) < 2:
        raise UserError(f"{dataset.name}: {len(normal)} normal training sequences; LogLLaMA needs normal sequences to learn from")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(normal))
    n_val = max(1, int(len(normal) * config.val_fraction))
    val_seqs = [normal[i] for i in order[:n_val]]
    train_seqs = [normal[i] for i in order[n_val:]]
    messages = [m for s in normal for m in s.messages]
    if config.data.kind == "bgl_windows":
        assert config.data.templates is not None
        keymap = _bgl_keymap(config.data.templates, messages)
    else:
        settings = DrainSettings(sim_th=config.drain.sim_th, depth=config.drain.depth, max_children=config.drain.max_children)
        keymap = LogKeyMap.fit(messages, settings, config.drain.mask)
    keymap, rare = without_rare_keys(keymap, [keymap.keys_of(s.messages) for s in normal], config.min_key_share)
    # Map again with the final map rather than renumbering the keys above: scoring uses this map,
    # and its exact-template lookup no longer holds the dropped templates.
    train_keys = [tuple(keymap.keys_of(s.messages)) for s in train_seqs]
    val_keys = [tuple(keymap.keys_of(s.messages)) for s in val_seqs]
    train, train_counts = _distinct(train_keys, config.dedupe)
    val, val_counts = _distinct(val_keys, True)  # same metrics as every sequence, weighted by count
    if config.max_train_sequences and len(train) > config.max_train_sequences:
        keep = sorted(rng.permutation(len(train))[: config.max_train_sequences])
        train, train_counts = [train[i] for i in keep], [train_counts[i] for i in keep]
    distinct_train = len(train)
    train_weights: list[float] = [1.0] * len(train)
    if config.dedupe:
        train, train_weights = weighted_rows(train, train_counts)
    held_out = None
    if config.max_val_sequences and len(val) > config.max_val_sequences:
        held_out = (val, val_counts)
        keep = sorted(rng.permutation(len(val))[: config.max_val_sequences])
        val, val_counts = [val[i] for i in keep], [val_counts[i] for i in keep]
    summary = {
        "dataset": dataset.name,
        "split": split.summary(),
        "normal_train": len(train_seqs),
        "normal_val": len(val_seqs),
        "train_sequences_used": sum(train_counts),
        "train_distinct_used": distinct_train,
        "train_rows": len(train),
        "val_sequences_used": len(val),
        "distinct_train_key_sequences": len(set(train_keys)),
        "n_keys": keymap.n_keys,
        "rare_templates_as_unk": rare,
        "unk_in_normal_training": sum(k.count(keymap.unk) for k in train_keys + val_keys),
        "test": len(split.test),
        "test_anomalous": sum(s.label for s in split.test),
        "labelled": not config.data.assume_normal,
    }
    log.info("logllama data: %s", summary)
    mean_targets = None
    if config.dedupe:
        # Targets per training sequence, over every copy: the constant that makes a weighted
        # batch's loss an unbiased estimate of the all-copies token mean.
        # Counted on the very batch layout the loss sees (end targets, cuts, unk skipped).
        arch = config.architecture
        rows = key_batch(train, keymap.n_keys, arch.sequence_kind, arch.max_keys, weights=train_weights)
        counted = ((rows.targets != IGNORE) & (rows.targets != keymap.unk)).sum(-1).float()
        mean_targets = float((counted * rows.weights).sum() / rows.weights.sum())
    return KeyedData(
        keymap, train, train_weights, val, val_counts, split.test, summary, mean_targets, held_out,
        labelled=not config.data.assume_normal,
    )


# ============================================================================ losses
def _length_batches(sequences: Sequence[tuple[int, ...]], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (less padding), in random order."""
    order = rng.permutation(len(sequences)).tolist()
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(sequences[i]))
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _candidate_log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p [B, L, C] and entropy [B, L] over the finite (candidate) logits."""
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -(p * logp.masked_fill(~torch.isfinite(logp), 0.0)).sum(-1)
    return logp, entropy


def reward_mask(batch_targets: torch.Tensor, checked: torch.Tensor, unk: int, prompt_fraction: float) -> torch.Tensor:
    """[B, L] bool: the targets that earn a reward — checked, not padding or `unk`, and past the
    prompt (the first ⌊prompt_fraction · m⌋ of a sequence's m targets)."""
    valid = (batch_targets != IGNORE) & (batch_targets != unk)
    m = (batch_targets != IGNORE).sum(-1, keepdim=True)  # [B, 1]
    positions = torch.arange(batch_targets.shape[1], device=batch_targets.device).unsqueeze(0)
    return valid & checked & (positions >= torch.floor(prompt_fraction * m))


def topk_rewards(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """[B, L] float: +1 where the observed key is within the Top-K, −1 where outside."""
    return 1.0 - 2.0 * outside_topk(logits, targets, k).float()  # padding: arbitrary, masked later


def returns_after(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """[B, L]: what an action at position t earns, Σ_{j>t} γ^(j−t−1) r_j (the rewards of the
    predictions made after it, none of its own)."""
    returns = torch.zeros_like(rewards)
    later = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in range(rewards.shape[1] - 1, -1, -1):
        returns[:, t] = later
        later = rewards[:, t] + gamma * later
    return returns


def reinforce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    rewarded: torch.Tensor,
    k: int,
    clip: float,
    entropy_coef: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LogGPT's loss per sequence, averaged over the batch, each row times its weight in `weights`
    [B] (`weighted_rows`; default 1) (see the module docstring).

    Returns the loss and diagnostics: mean reward per rewarded target (the Top-K hit rate
    mapped to [-1, 1]) and mean entropy.
    """
    logp, entropy = _candidate_log_probs(logits)
    observed = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, L]
    rewards = topk_rewards(logits.detach(), targets, k) * rewarded  # [B, L]
    weight = rewarded.float()
    seq_logp = (observed.masked_fill(~rewarded, 0.0)).sum(-1)  # [B]
    seq_reward = rewards.sum(-1).clamp(-clip, clip)  # [B]
    seq_entropy = (entropy * weight).sum(-1) / weight.sum(-1).clamp(min=1)  # [B]
    per_sequence = -seq_logp * seq_reward - entropy_coef * seq_entropy  # [B]
    # Weights have mean 1 over the training rows, so the plain batch mean estimates the mean
    # over every sequence copy without bias.
    loss = (per_sequence if weights is None else per_sequence * weights).mean()
    n = weight.sum().clamp(min=1)
    return loss, {"reward": float(rewards.sum() / n), "entropy": float((entropy.detach() * weight).sum() / n)}


# ============================================================================ trainer
@dataclass
class StageRecord:
    """What one stage did: wall time, steps, sequences seen, and its curve."""

    name: str
    wall_s: float = 0.0
    steps: int = 0
    sequences: int = 0
    stopped: str = ""
    curve: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)


class LogLLaMATrainer:
    """Runs the LM and RL stages on a `LogLLaMADetector` (in place; keeps the best weights)."""

    def __init__(
        self, config: LogLLaMATrainConfig, detector: LogLLaMADetector, data: KeyedData, show_progress: bool = True
    ) -> None:
        self.config = config
        self.detector = detector
        self.model = detector.model
        self.data = data
        self.rng = np.random.default_rng(config.seed)
        self.show_progress = show_progress
        self.reward_k = detector.k if config.rl.k is None else min(config.rl.k, detector.k_requested)
        # Sampling of generated RL contexts (rl.context = "generated"); validation draws its own
        # fixed stream, so episodes are compared on the same random numbers.
        self.sampler = torch.Generator(device=detector.model.placement.device).manual_seed(config.seed)

    def prompt_lengths(self, batch: KeyBatch) -> torch.Tensor:
        """[B]: the targets of each row that stay observed in a generated context (the RL prompt)."""
        targets = (batch.targets != IGNORE).sum(-1)
        return torch.floor(self.config.rl.prompt_fraction * targets).long()

    def generated(self, batch: KeyBatch, generator: torch.Generator) -> KeyBatch:
        """`batch` with model-sampled contexts after the RL prompt (`LogLLaMA.sample_contexts`)."""
        return self.model.sample_contexts(batch, self.prompt_lengths(batch), generator)

    def _bar(self, total: int, desc: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="seq", file=sys.stderr, disable=None if self.show_progress else True)

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Count-weighted validation metrics: next-key NLL, Top-K hit rate of checked targets,
        REINFORCE loss (the RL stage's early-stopping quantity) and detection false-positive rate."""
        self.model.eval()
        cfg = self.config.rl
        totals = {"nll": 0.0, "targets": 0.0, "hits": 0.0, "checked": 0.0, "rl_loss": 0.0, "seqs": 0.0, "flagged": 0.0}
        seqs, counts = self.data.val, self.data.val_counts
        contexts = torch.Generator(device=self.model.placement.device).manual_seed(self.config.seed + 1)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        bs = max(self.config.runtime.batch_size, 1)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            batch = self.model.make_batch([seqs[i] for i in idx])
            logits = self.model(batch)
            w = torch.tensor([counts[i] for i in idx], dtype=torch.float, device=logits.device)
            targets = batch.targets.masked_fill(batch.targets == self.model.unk, IGNORE)
            nll = nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
            )  # [B, L]
            valid = (targets != IGNORE).float()
            totals["nll"] += float((nll * valid).sum(-1) @ w)
            totals["targets"] += float(valid.sum(-1) @ w)
            outside = outside_topk(logits, batch.targets, self.detector.k) & batch.checked
            totals["hits"] += float((batch.checked & ~outside).float().sum(-1) @ w)
            totals["checked"] += float(batch.checked.float().sum(-1) @ w)
            totals["flagged"] += float(outside.any(-1).float() @ w)
            rewarded = reward_mask(batch.targets, batch.checked, self.model.unk, cfg.prompt_fraction)
            rl_logits = logits if cfg.context == "observed" else self.model(self.generated(batch, contexts))
            for row in range(len(idx)):
                loss, _ = reinforce_loss(
                    rl_logits[row : row + 1], batch.targets[row : row + 1], rewarded[row : row + 1],
                    self.reward_k, cfg.reward_clip, cfg.entropy_coef,
                )
                totals["rl_loss"] += float(loss) * counts[idx[row]]
            totals["seqs"] += float(w.sum())
        return {
            "val_nll": totals["nll"] / max(totals["targets"], 1),
            "val_topk_hit": totals["hits"] / max(totals["checked"], 1),
            "val_rl_loss": totals["rl_loss"] / max(totals["seqs"], 1),
            "val_false_positive_rate": totals["flagged"] / max(totals["seqs"], 1),
        }

    # ---------------------------------------------------------------- stage: lm
    def train_lm(self, on_step: Callable[[int, float], None] | None = None) -> StageRecord:
        """Next-key cross-entropy; keeps the weights with the lowest validation NLL."""
        cfg = self.config.lm
        record = StageRecord("lm")
        started = time.perf_counter()
        model = self.model
        optimizer = torch.optim.AdamW(
            [
                {"params": model.lora_parameters(), "lr": cfg.lr},
                {"params": model.key_parameters(), "lr": cfg.key_lr, "weight_decay": 0.0},
            ]
        )
        best = self.validate()
        best_state = model.trainable_state()
        record.curve.append({"step": 0, **best})
        stale = 0
        ema: float | None = None
        seqs, weights = self.data.train, self.data.train_weights
        planned = cfg.epochs * math.ceil(len(seqs) / cfg.batch_size)
        planned = planned if cfg.max_steps is None else min(planned, cfg.max_steps)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_gamma)
        decay_every = max(planned // cfg.lr_decays, 1)
        total = min(cfg.epochs * len(seqs), planned * cfg.batch_size)
        with self._bar(total, "logllama lm") as bar:
            for epoch in range(cfg.epochs):
                batches = _length_batches(seqs, cfg.batch_size, self.rng)
                for n, idx in enumerate(batches):
                    model.train()
                    batch = model.make_batch([seqs[i] for i in idx], [weights[i] for i in idx])
                    loss = model.next_key_loss(model(batch), batch, self.data.mean_targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    record.steps += 1
                    record.sequences += len(idx)
                    if record.steps % decay_every == 0:
                        scheduler.step()
                    value = loss.item()
                    ema = value if ema is None else 0.9 * ema + 0.1 * value
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{ema:.3f}")
                    if on_step:
                        on_step(record.steps, value)
                    last_of_epoch = n == len(batches) - 1
                    out_of_steps = cfg.max_steps is not None and record.steps >= cfg.max_steps
                    if record.steps % cfg.eval_every and not last_of_epoch and not out_of_steps:
                        continue
                    metrics = self.validate()
                    record.curve.append(
                        {"step": record.steps, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "train_loss_ema": ema, **metrics}
                    )
                    log.info("lm step %d: %s", record.steps, metrics)
                    if metrics["val_nll"] < best["val_nll"]:
                        best, best_state, stale = metrics, model.trainable_state(), 0
                    else:
                        stale += 1
                    if out_of_steps:
                        record.stopped = f"max_steps {cfg.max_steps}"
                        break
                    if stale >= cfg.patience:
                        record.stopped = f"no validation gain in {stale} checks"
                        break
                if record.stopped:
                    break
        return self._finish(record, f"{cfg.epochs} epochs", best_state, best, started)

    def _finish(
        self, record: StageRecord, ran_out: str, best_state: dict[str, torch.Tensor], best: dict[str, float], started: float
    ) -> StageRecord:
        """End a stage: keep the best validated weights, say why it stopped (`ran_out` when it
        went the full length) and how long it took."""
        record.stopped = record.stopped or ran_out
        self.model.load_trainable_state(best_state)
        self.model.eval()
        record.best = best
        record.wall_s = time.perf_counter() - started
        return record

    # ---------------------------------------------------------------- stage: rl
    def train_rl(self, likelihood_control_episodes: int | None = None) -> StageRecord:
        """REINFORCE or PPO episodes; LogGPT's early stopping on the validation RL loss.

        With `likelihood_control_episodes`, the control instead: exactly that many episodes of
        the same shape with the plain next-key loss, keeping the best by validation NLL.
        """
        cfg = self.config.rl
        control = likelihood_control_episodes is not None
        record = StageRecord("lm-continued" if control else f"rl-{cfg.algorithm}")
        criterion = "val_nll" if control else "val_rl_loss"
        episodes = likelihood_control_episodes if likelihood_control_episodes is not None else cfg.episodes
        started = time.perf_counter()
        model = self.model
        params = [
            {"params": model.lora_parameters(), "lr": cfg.lr},
            {"params": model.key_parameters(), "lr": cfg.key_lr, "weight_decay": 0.0},
        ]
        value_head: nn.Linear | None = None
        reference: dict[str, torch.Tensor] | None = None
        if cfg.algorithm == "ppo" and not control:
            value_head = nn.Linear(model.dim, 1).to(model.placement.device)
            params.append({"params": list(value_head.parameters()), "lr": cfg.ppo.value_lr})
            reference = model.trainable_state()
        optimizer = torch.optim.AdamW(params)
        initial = self.validate()
        best, best_state = initial, model.trainable_state()
        last = initial[criterion]
        record.curve.append({"episode": 0, **initial})
        stale = 0
        seqs, weights = self.data.train, self.data.train_weights
        per_episode = min(cfg.sequences_per_episode or len(seqs), len(seqs))
        with self._bar(per_episode * episodes, f"logllama {record.name}") as bar:
            for episode in range(1, episodes + 1):
                chosen = self.rng.permutation(len(seqs))[:per_episode]
                subset = [seqs[i] for i in chosen]
                subset_weights = [weights[i] for i in chosen]
                stats: list[dict[str, float]] = []
                for idx in _length_batches(subset, cfg.batch_size, self.rng):
                    batch = model.make_batch([subset[i] for i in idx], [subset_weights[i] for i in idx])
                    if not control and cfg.context == "generated":
                        batch = self.generated(batch, self.sampler)
                    if control:
                        stats.append(self.likelihood_step(batch, optimizer))
                    elif value_head is None:
                        stats.append(self.reinforce_step(batch, optimizer))
                    else:
                        assert reference is not None
                        stats.append(self.ppo_step(batch, optimizer, value_head, reference))
                    record.steps += 1
                    record.sequences += len(idx)
                    bar.update(len(idx))
                    bar.set_postfix(reward=f"{stats[-1]['reward']:.3f}")
                metrics = self.validate()
                current = metrics[criterion]
                train_reward = float(np.mean([s["reward"] for s in stats])) if stats else 0.0
                record.curve.append({"episode": episode, "train_reward": train_reward, **metrics})
                log.info("%s episode %d: %s", record.name, episode, metrics)
                if current <= best[criterion]:
                    best, best_state = metrics, model.trainable_state()
                if control:
                    continue
                # LogGPT: an episode whose relative validation gain is below 1% is stale; stop after >3.
                if (last - current) / (abs(current) + 1e-7) < cfg.min_relative_gain:
                    stale += 1
                last = current
                if stale > cfg.patience:
                    record.stopped = f"early stop after episode {episode} ({stale} stale episodes)"
                    break
        return self._finish(record, f"{episodes} episodes", best_state, best, started)

    def likelihood_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """The control's step: next-key cross-entropy (reward reported for comparison only)."""
        model = self.model
        model.train()
        logits = model(batch)
        loss = model.next_key_loss(logits, batch, self.data.mean_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rewarded = reward_mask(batch.targets, batch.checked, model.unk, self.config.rl.prompt_fraction)
        rewards = topk_rewards(logits.detach(), batch.targets, self.reward_k) * rewarded
        return {"loss": loss.item(), "reward": float(rewards.sum() / rewarded.sum().clamp(min=1))}

    def reinforce_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        cfg = self.config.rl
        model = self.model
        model.train()
        rewarded = reward_mask(batch.targets, batch.checked, model.unk, cfg.prompt_fraction)
        loss, stats = reinforce_loss(
            model(batch), batch.targets, rewarded, self.reward_k, cfg.reward_clip, cfg.entropy_coef, batch.weights
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), **stats}

    def ppo_step(
        self, batch: Any, optimizer: torch.optim.Optimizer, value_head: nn.Linear, reference: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """One on-policy PPO update on a batch with generated contexts (`generated`).

        The actions are the keys the model sampled after the prompt: the one sampled from the
        prediction at position t is input t+1. An action earns the Top-K rewards of the
        predictions that come after it (whether the observed key ranks in their Top-K), so its
        return is the discounted sum of the rewards from target t+1 on; advantage = return − the
        value head on the detached hidden state, normalised over the batch's actions.
        """
        cfg, ppo = self.config.rl, self.config.rl.ppo
        model = self.model
        # Dropout off throughout, so the policy ratio is 1 before the first update.
        model.eval()
        rewarded = reward_mask(batch.targets, batch.checked, model.unk, cfg.prompt_fraction)
        acted = torch.zeros_like(rewarded)
        acted[:, :-1] = sampled_inputs(batch.mask, self.prompt_lengths(batch))[:, 1:]
        actions = torch.where(acted, batch.inputs.roll(-1, dims=1), 0)  # the last column is never acted
        with torch.no_grad():
            current = model.trainable_state()
            model.load_trainable_state(reference)
            ref_logp, _ = _candidate_log_probs(model.sampling_logits(model(batch)))
            model.load_trainable_state(current)
            hidden = model.hidden(batch)
            old_logits = model.key_logits(hidden)
            old_logp = _candidate_log_probs(model.sampling_logits(old_logits))[0].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            rewards = topk_rewards(old_logits, batch.targets, self.reward_k) * rewarded
            returns = returns_after(rewards, ppo.gamma).clamp(-cfg.reward_clip, cfg.reward_clip)
            advantage = returns - value_head(hidden).squeeze(-1)
            sel = advantage[acted]
            advantage = (advantage - sel.mean()) / (sel.std() + 1e-6) if sel.numel() > 1 else advantage
        weight = acted.float() * batch.weights.unsqueeze(-1)
        n = weight.sum().clamp(min=1e-9)
        for _ in range(ppo.epochs):
            hidden = model.hidden(batch)
            logp, entropy = _candidate_log_probs(model.sampling_logits(model.key_logits(hidden)))
            new_logp = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            ratio = torch.exp((new_logp - old_logp).masked_fill(~acted, 0.0))
            surrogate = torch.min(ratio * advantage, ratio.clamp(1 - ppo.clip_eps, 1 + ppo.clip_eps) * advantage)
            finite = torch.isfinite(logp)
            kl = (logp.exp() * (logp - ref_logp).masked_fill(~finite, 0.0)).sum(-1)  # KL(policy || reference)
            value = value_head(hidden.detach()).squeeze(-1)
            loss = (
                -(surrogate * weight).sum() / n
                + ppo.value_coef * (((value - returns) ** 2) * weight).sum() / n
                + ppo.kl_coef * (kl * weight).sum() / n
                - cfg.entropy_coef * (entropy * weight).sum() / n
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        reward = float(rewards.sum() / rewarded.sum().clamp(min=1))
        return {"loss": loss.item(), "reward": reward, "kl": float((kl.detach() * weight).sum() / n)}


# ============================================================================ entry points
def k_sweep(
    test_needed: Sequence[float],
    test_labels: Sequence[int],
    max_k: int,
    validation: tuple[Sequence[float], Sequence[int]] | None = None,
) -> list[dict[str, float | int]]:
    """The Top-K rule at every K from 1 to `max_k`, from each sequence's smallest passing K
    (`LogLLaMADetector.smallest_passing_ks`): test precision/recall/F1 and confusion counts,
    and with `validation` (smallest passing Ks of normal sequences, their counts) the
    false-positive rate there, the one figure a user without anomaly labels can choose K by.
    """
    from training.evaluate import binary_metrics

    val_needed, val_counts = validation or ((), ())
    n_val = max(sum(val_counts), 1)
    rows = []
    for k in range(1, max_k + 1):
        row: dict[str, float | int] = {"k": k}
        if validation is not None:
            flagged = sum(c for needed, c in zip(val_needed, val_counts, strict=True) if needed > k)
            row["validation_false_positive_rate"] = round(flagged / n_val, 6)
        rows.append({**row, **binary_metrics(test_labels, [int(needed > k) for needed in test_needed]).as_dict()})
    return rows


def detector_k_sweep(
    detector: LogLLaMADetector,
    test_keys: Sequence[tuple[int, ...]],
    test_labels: Sequence[int],
    validation: tuple[Sequence[tuple[int, ...]], Sequence[int]] | None = None,
) -> list[dict[str, float | int]]:
    """`k_sweep` of a detector on labelled key sequences (one scoring pass), every K up to its
    cap; `validation`: normal key sequences and their counts."""
    val = None if validation is None else (detector.smallest_passing_ks(validation[0]), validation[1])
    max_k = effective_k(sys.maxsize, detector.keymap.n_keys)
    return k_sweep(detector.smallest_passing_ks(test_keys), test_labels, max_k, val)


def k_sweep_markdown(rows: Sequence[dict[str, Any]], chosen_k: int) -> str:
    """The K sweep as a markdown table: the chosen K (bold) and every K whose labels differ
    from the K before it (between those, the figures are the same)."""
    shown, previous = [], None
    for row in rows:
        counts = (row["tp"], row["fp"], row["fn"], row["tn"])
        if counts != previous or row["k"] == chosen_k:
            shown.append(row)
        previous = counts
    lines = [
        "| K | precision | recall | F1 | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in shown:
        k = f"**{r['k']}**" if r["k"] == chosen_k else str(r["k"])
        lines.append(
            f"| {k} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['tp']} | {r['fp']} | {r['fn']} | {r['tn']} |"
        )
    return "\n".join(lines)


def most_surprising(test: Sequence[LabelledSequence], verdicts: Sequence[Verdict], n: int) -> list[dict[str, Any]]:
    """The `n` sequences with the highest score, most surprising first: key, score, whether flagged and
    the lines the verdict points at (the failed keys, else the least likely one)."""
    ranked = sorted(zip(test, verdicts, strict=True), key=lambda pair: -pair[1].score)[:n]
    return [
        {
            "sequence": seq.key,
            "score": round(verdict.score, 6),
            "flagged": bool(verdict.label),
            "lines": [{"position": p, "message": seq.messages[p]} for p in verdict.positions or verdict.score_positions],
        }
        for seq, verdict in ranked
    ]


def _metrics_of(detector: LogLLaMADetector, data: KeyedData, name: str) -> dict[str, Any]:
    """Test-split metrics of one detector folder, its unseen-key counts and its `k_sweep`; on
    unlabelled logs also how many held-out sequences it flags and the most surprising ones."""
    from training.evaluate import score_with_verdicts

    test = data.test
    evaluation, verdicts = score_with_verdicts(
        detector, name, [s.key for s in test], [list(s.messages) for s in test], [s.label for s in test]
    )
    test_keys = [tuple(detector.keymap.keys_of(s.messages)) for s in test]
    with_unk = [detector.keymap.unk in keys for keys in test_keys]
    metrics = {
        **evaluation.summary(),
        "k": detector.k,
        "anomalous_with_unseen_key": sum(w for w, s in zip(with_unk, test, strict=True) if s.label),
        "normal_with_unseen_key": sum(w for w, s in zip(with_unk, test, strict=True) if not s.label),
        "k_sweep": detector_k_sweep(detector, test_keys, [s.label for s in test], data.all_validation),
    }
    if data.labelled:
        return metrics
    # Without labels every figure against the anomalous class is 0 by construction: keep only
    # what is measured, how many held-out sequences are flagged (at every K too).
    return {
        **{k: v for k, v in metrics.items() if k not in LABELLED_ONLY},
        "flagged": metrics["fp"],
        "flagged_share": round(metrics["fp"] / max(len(test), 1), 6),
        "most_surprising": most_surprising(test, verdicts, MOST_SURPRISING),
        "k_sweep": [
            {"k": r["k"], "validation_false_positive_rate": r["validation_false_positive_rate"], "flagged": r["fp"]}
            for r in metrics["k_sweep"]
        ],
    }


def train_logllama(
    config: LogLLaMATrainConfig, dataset: Dataset | None = None, show_progress: bool = True
) -> Path:
    """Train LogLLaMA as configured; returns the final detector folder (``<output>/detector``).

    Side effects: writes ``without_rl/`` (when the RL stage runs), ``detector/``,
    ``training.json`` and, with `config.evaluate`, ``report.json`` under `config.output`.

    Raises:
        UserError: bad data or configuration (see `prepare_data`, `LogLLaMATrainConfig`).
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    data = prepare_data(config, dataset)
    detector = LogLLaMADetector.create(config.architecture, data.keymap, config.detection_k, config.runtime, config.seed)
    trainer = LogLLaMATrainer(config, detector, data, show_progress)
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"config": config.model_dump(mode="json"), "data": data.summary, "stages": {}}
    lm = trainer.train_lm()
    record["stages"]["lm"] = lm.__dict__
    folders = {}
    after_lm = None
    draws: dict[str, Any] = {}
    if config.rl.enabled:
        folders["without_rl"] = out / "without_rl"
        detector.save(folders["without_rl"], {"stages": ["lm"], "lm": lm.best, "data": data.summary})
        after_lm = detector.model.trainable_state()
        draws = trainer.rng.bit_generator.state  # the control replays the RL stage's sequence draws
        rl = trainer.train_rl()
        record["stages"]["rl"] = rl.__dict__
    folders["detector"] = out / "detector"
    stages_run = ["lm", *(["rl"] if config.rl.enabled else [])]
    best = {name: record["stages"][name]["best"] for name in record["stages"]}
    detector.save(folders["detector"], {"stages": stages_run, "best": best, "data": data.summary, "algorithm": config.rl.algorithm})
    if after_lm is not None and config.rl.control:
        detector.model.load_trainable_state(after_lm)
        trainer.rng.bit_generator.state = draws
        control = trainer.train_rl(likelihood_control_episodes=len(record["stages"]["rl"]["curve"]) - 1)
        record["stages"]["lm_continued"] = control.__dict__
        folders["lm_continued"] = out / "lm_continued"
        detector.save(folders["lm_continued"], {"stages": ["lm", "lm-continued"], "best": control.best, "data": data.summary})
    record["folders"] = {k: str(v) for k, v in folders.items()}
    record["wall_s"] = time.perf_counter() - started
    (out / "training.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    if config.evaluate:
        evaluate_logllama_run(config, data, folders)
    return folders["detector"]


def evaluate_logllama_run(config: LogLLaMATrainConfig, data: KeyedData, folders: dict[str, Path]) -> None:
    """Score the test split with every folder of a run (`detector`, `without_rl`,
    `lm_continued`) and write the run's report.json, with a `k_sweep` per folder; also
    re-scores a finished run."""
    from model.detector import load_detector

    report: dict[str, Any] = {
        "split": data.summary["split"],
        "labelled": data.labelled,
        "n_keys": data.keymap.n_keys,
        # what each folder's k_sweep measures its validation false-positive rate on
        "validation": {"distinct_sequences": len(data.all_validation[0]), "sequences": sum(data.all_validation[1])},
    }
    names = {"detector": "with_rl" if config.rl.enabled else "without_rl", "without_rl": "without_rl",
             "lm_continued": "lm_continued"}
    for folder_name, folder in folders.items():
        scored = load_detector(folder, config.runtime)
        assert isinstance(scored, LogLLaMADetector)
        report["k"] = scored.k
        report[names[folder_name]] = _metrics_of(scored, data, f"logllama-{names[folder_name]}")
    (config.output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    headline = ("precision", "recall", "f1", "flagged", "flagged_share")
    log.info("logllama report (K %d): %s", report["k"], {
        name: {k: report[name][k] for k in headline if k in report[name]} for name in names.values() if name in report
    })



# ============================================================================ command line
def config_selects_logllama(path: Path) -> bool:
    """Whether a `logllm train --config` file has top-level ``detector = "logllama"`` (an
    unreadable file is left to the LogLLM loader, which reports it)."""
    try:
        raw = read_config_file(path, "training/configs/")
    except UserError:
        return False
    return raw.get("detector") == "logllama"


def run_train_command(config: LogLLaMATrainConfig) -> int:
    """`logllm train --config X` for a LogLLaMA config (loaded with the command line's overrides);
    every run starts fresh (LogLLaMA runs are short and keep no resumable checkpoint)."""
    folder = train_logllama(config)
    print(f"logllm train: LogLLaMA detector written to {folder}", file=sys.stderr)
    report_path = config.output / "report.json"
    if config.evaluate and report_path.exists():
        report = json.loads(report_path.read_text())
        for name in ("without_rl", "with_rl", "lm_continued"):
            if name not in report:
                continue
            r = report[name]
            if report.get("labelled", True):
                result = f"P {r['precision']:.4f} R {r['recall']:.4f} F1 {r['f1']:.4f}"
            else:
                result = (f"flags {r['flagged']} of {r['sequences']} held-out sequences ({r['flagged_share']:.2%}; "
                          f"no labels: false positives if that period was normal; most surprising in {report_path})")
            print(f"logllm train: logllama {name}: {result} (K {report['k']})", file=sys.stderr)
    return 0
