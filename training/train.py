"""The LogLLM training loop: stages, gradient accumulation, LR decay, checkpoints, metrics.

    config -> data (split, cleaned sequences) -> detector (fresh or init_from)
      -> for each stage: freeze -> fresh AdamW + ExponentialLR -> epochs of β-oversampled
         micro-batches (loss / accumulation) -> checkpoint every N steps and at the stage end
      -> detector folder -> evaluation report (LogLLM and the baseline on the test split)

Run folder (`config.output`):
    config.json          the validated config          metrics.jsonl   one record per optimiser step
    checkpoint-<step>/   the latest checkpoint only     LATEST          name of that checkpoint
    stages/<name>/       a detector folder per finished stage
    detector/            the trained detector            eval/           report, scores, PNGs

Encoder inputs: while the encoder is frozen (paper stages 1 and 2-1) message vectors come
from the detector's embedding cache, filled once per stage with every distinct training
message. While encoder LoRA trains (2-2, 3) the cache is bypassed and each micro-batch encodes
its distinct messages once, with gradients; occurrences of a message within a micro-batch then
share one dropout sample (the official code draws one per occurrence).

A checkpoint is written only right after an optimiser step (no gradients pending) and holds
the trainable weights, the AdamW and scheduler state, the torch RNG and the position in the
stage; epoch orders are a function of (seed, stage, epoch), so a resumed run replays exactly
the steps an uninterrupted run takes (tests/model/test_training.py checks equality).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from model.errors import UserError
from model.preprocess import normalize_sequence
from training import stages as st
from training.config import StageConfig, TrainConfig
from training.data import Split, build_split, load_dataset

if TYPE_CHECKING:
    from model.logllm_detector import LogLLMDetector
    from training.evaluate import Evaluation

log = logging.getLogger(__name__)

LATEST = "LATEST"
METRICS = "metrics.jsonl"


# --------------------------------------------------------------------------------------------
# Memory: peak RSS per stage (ru_maxrss is process-wide and never resets)
# --------------------------------------------------------------------------------------------


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRss:
    """Samples this process's RSS every `interval` seconds in a daemon thread; `peak` is the
    maximum since the last `reset` (forward/backward peaks last far longer than the interval)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, current_rss_mb())

    def reset(self) -> None:
        self.peak = current_rss_mb()

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where a run is: the stage, and inside it the epoch and next micro-batch."""

    stage_index: int = 0
    epoch: int = 0
    next_micro: int = 0
    micro_steps: int = 0  # in this stage, drives the LR decay
    stage_steps: int = 0  # optimiser steps in this stage
    global_step: int = 0  # optimiser steps in the run
    stage_wall_s: float = 0.0  # time spent in this stage before the checkpoint
    finished_stages: list[dict[str, Any]] = field(default_factory=list)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if st.group_of(n)}


def write_checkpoint(
    output: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    param_names: Sequence[str],
    position: Position,
    identity: dict[str, str],
) -> Path:
    """Write checkpoint-<global_step>/ then point LATEST at it (atomic rename), and remove
    older checkpoints. A crash at any point leaves LATEST naming a complete checkpoint."""
    name = f"checkpoint-{position.global_step:07d}"
    final = output / name
    staging = output / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in _trainable_state(model).items()}, str(staging / "weights.safetensors"))
    state: dict[str, Any] = {"position": position.__dict__, "identity": identity, "param_names": list(param_names)}
    if optimizer is not None and scheduler is not None:
        opt = optimizer.state_dict()
        tensors = {
            f"{i}.{key}": value.contiguous()
            for i, per_param in opt["state"].items()
            for key, value in per_param.items()
        }
        save_file(tensors, str(staging / "optimizer.safetensors"))
        state["param_groups"] = opt["param_groups"]
        state["scheduler"] = scheduler.state_dict()
    save_file({"torch": torch.get_rng_state()}, str(staging / "rng.safetensors"))
    (staging / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    pointer = output / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, output / LATEST)
    for old in output.glob("checkpoint-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output: Path) -> Path | None:
    pointer = output / LATEST
    if not pointer.exists():
        return None
    path = output / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    state = json.loads((path / "state.json").read_text())
    state["position"] = Position(**state["position"])
    return state


def restore_weights(model: torch.nn.Module, path: Path) -> None:
    saved = load_file(str(path / "weights.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])


def restore_optimizer(
    path: Path, state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any, param_names: Sequence[str]
) -> None:
    if state.get("param_names") != list(param_names):
        raise UserError(f"checkpoint {path} trains other parameters than this stage; start afresh with --fresh")
    tensors = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in state["param_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """What `on_step` callbacks see after each optimiser step (and its checkpoint, if any)."""

    stage: str
    global_step: int
    loss: float
    checkpointed: bool


@dataclass
class TrainedRun:
    """The outcome of `train`: the detector folder, stage statistics and the split used."""

    detector_dir: Path
    stages: list[dict[str, Any]]
    split: Split
    report: dict[str, Any] | None = None


class _Data:
    """Cleaned training sequences and labels, how many of them are distinct, and the
    distinct-message vocabulary."""

    def __init__(self, split: Split, detector: LogLLMDetector) -> None:
        arch = detector.model.arch
        self.sequences = [normalize_sequence(s.messages, arch.regex_set, arch.max_messages) for s in split.train]
        self.labels = [s.label for s in split.train]
        self.n_distinct = len(set(self.sequences))
        self.vocabulary = list(dict.fromkeys(m for seq in self.sequences for m in seq))
        self.row = {m: i for i, m in enumerate(self.vocabulary)}
        digest = hashlib.sha256()
        for s in split.train:
            digest.update(f"{s.key}\x1f{s.label}\x1e".encode())
        self.digest = digest.hexdigest()[:16]


def _make_detector(config: TrainConfig) -> LogLLMDetector:
    from model.folder import read_manifest
    from model.logllm import LogLLMArchitecture
    from model.logllm_detector import LogLLMDetector

    if config.init_from is not None:
        manifest = read_manifest(config.init_from)
        if manifest.get("detector") != "logllm":
            raise UserError(f"init_from {config.init_from}: holds a {manifest.get('detector')!r} detector, not logllm")
        folder_arch = LogLLMArchitecture.model_validate(manifest["architecture"])
        if "architecture" in config.model_fields_set and folder_arch != config.architecture:
            raise UserError(
                f"init_from {config.init_from} was trained with another architecture than [architecture] in the "
                "config; drop the [architecture] table to continue that model, or drop init_from to start fresh"
            )
        detector = LogLLMDetector.load(config.init_from, manifest, config.runtime)
    else:
        try:
            detector = LogLLMDetector.create(config.architecture, config.runtime, seed=config.seed)
        except ValueError as exc:  # peft: LoRA target modules not found in the base model
            raise UserError(f"[architecture] does not fit the base models: {exc}") from exc
    _check_fits(config, detector)
    return detector


def _check_fits(config: TrainConfig, detector: LogLLMDetector) -> None:
    model = detector.model
    limit = getattr(model.encoder.get_base_model().config, "max_position_embeddings", None)
    if limit is not None and config.architecture.max_message_tokens > limit:
        raise UserError(
            f"architecture.max_message_tokens = {config.architecture.max_message_tokens} exceeds the encoder's "
            f"{limit} positions; lower it to at most {limit}"
        )
    names = [n for n, _ in model.named_parameters()]
    for stage in config.stages:
        missing = [g for g in stage.trains if not st.trainable_names(names, [g])]
        if missing:
            raise UserError(f"stage {stage.name} trains {missing}, which this model does not have")


class _Trainer:
    def __init__(
        self,
        config: TrainConfig,
        detector: LogLLMDetector,
        data: _Data,
        on_step: Callable[[StepInfo], None] | None,
        progress: bool,
    ) -> None:
        self.config = config
        self.detector = detector
        self.model = detector.model
        self.data = data
        self.on_step = on_step
        self.progress = progress
        self.output = config.output
        self.identity = {"config": config.digest(), "data": data.digest}
        self.rss = PeakRss()
        self._vectors: torch.Tensor | None = None

    # ---------------------------------------------------------------- inputs
    def _fill_vectors(self) -> None:
        """All distinct training messages through the embedding cache (frozen encoder)."""
        self.detector.embeddings.bind(f"{self.detector.version}-frozen-encoder")
        started = time.perf_counter()
        self._vectors = self.detector.embed(self.data.vocabulary).to(self.model.placement.device)
        log.info("embedded %d distinct training messages in %.1f s", len(self.data.vocabulary), time.perf_counter() - started)

    def _loss(self, batch: Sequence[int], encoder_trains: bool) -> torch.Tensor:
        sequences = [self.data.sequences[i] for i in batch]
        labels = [self.data.labels[i] for i in batch]
        distinct = list(dict.fromkeys(m for seq in sequences for m in seq))
        local = {m: i for i, m in enumerate(distinct)}
        if encoder_trains:
            vectors = self.model.encode_messages(distinct, self.config.runtime.encoder_batch_size)
        else:
            assert self._vectors is not None
            vectors = self._vectors[torch.tensor([self.data.row[m] for m in distinct])]
        projected = self.model.project(vectors)  # projection is per row: project each distinct message once
        rows = [projected[torch.tensor([local[m] for m in seq], device=projected.device)] for seq in sequences]
        return self.model.answer_loss(rows, labels)

    # ---------------------------------------------------------------- metrics
    def _record(self, record: dict[str, Any]) -> None:
        with (self.output / METRICS).open("a") as out:
            out.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, global_step: int) -> None:
        """Drop records written after the checkpoint we resume from (they will be redone)."""
        path = self.output / METRICS
        if not path.exists():
            return
        kept = [
            line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= global_step
        ]
        path.write_text("".join(line + "\n" for line in kept))

    # ---------------------------------------------------------------- stages
    def run(self) -> list[dict[str, Any]]:
        position = Position()
        checkpoint = latest_checkpoint(self.output)
        state: dict[str, Any] | None = None
        if checkpoint is not None:
            state = read_checkpoint(checkpoint)
            if state["identity"] != self.identity:
                raise UserError(
                    f"{self.output} holds a checkpoint of another config or training set ({checkpoint.name}); "
                    "use a new --output, or --fresh to discard it"
                )
            position = state["position"]
            restore_weights(self.model, checkpoint)
            self._truncate_metrics(position.global_step)
            self._record({"event": "resume", "step": position.global_step, "checkpoint": checkpoint.name})
            log.info("resuming from %s (stage %d, step %d)", checkpoint, position.stage_index, position.global_step)
        # Only now, the folder known to hold this run: a refused run must not relabel another's.
        (self.output / "config.json").write_text(self.config.model_dump_json(indent=2) + "\n")
        try:
            for index, stage in enumerate(self.config.stages):
                if index < position.stage_index:
                    continue
                # Only a checkpoint taken inside this stage carries optimiser and scheduler state.
                mid_stage = state is not None and position.stage_steps > 0
                self._run_stage(index, stage, position, checkpoint if mid_stage else None, state if mid_stage else None)
                state = None
        finally:
            self.rss.close()
        return position.finished_stages

    def _run_stage(
        self,
        index: int,
        stage: StageConfig,
        position: Position,
        checkpoint: Path | None,
        state: dict[str, Any] | None,
    ) -> None:
        cfg = self.config
        encoder_trains = "encoder_lora" in stage.trains
        params = st.freeze_for_stage(self.model, stage.trains)
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=cfg.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.optim.gamma)
        if checkpoint is not None and state is not None:
            restore_optimizer(checkpoint, state, optimizer, scheduler, names)
        if not encoder_trains:
            self._fill_vectors()
        orders = [
            st.epoch_order(
                self.data.labels, cfg.sampler, stage.samples, st.epoch_rng(cfg.seed, index, epoch), self.data.sequences
            )
            for epoch in range(stage.epochs)
        ]
        mb, accumulation = cfg.optim.micro_batch, cfg.optim.accumulation
        per_epoch = [st.micro_batches(len(order), mb) for order in orders]
        horizon = st.schedule_horizon(stage, sum(per_epoch), self.data.labels, cfg.sampler, mb)
        interval = st.decay_interval(horizon, cfg.optim.decays_per_stage)
        samples = sum(len(order) for order in orders)
        distinct = len({self.data.sequences[i] for order in orders for i in order})
        log.info(
            "stage %s: trains %s, %d samples (%d epochs; %d distinct sequences of %d, cut %s), %d micro-batches of %d, "
            "LR %.1e decays x%.2f every %d (schedule over %d micro-batches)",
            stage.name, stage.trains, samples, stage.epochs, distinct, self.data.n_distinct,
            cfg.sampler.cap_order, sum(per_epoch), mb, stage.lr, cfg.optim.gamma, interval, horizon,
        )
        self.rss.reset()
        session_started = time.perf_counter()
        started = session_started - position.stage_wall_s  # wall time of the stage includes earlier sessions
        done_micro = position.micro_steps
        bar = progress_bar(sum(per_epoch), done_micro, f"stage {stage.name}", self.progress)
        micro_losses: list[float] = []
        try:
            for epoch in range(position.epoch, stage.epochs):
                order = orders[epoch]
                for micro in range(position.next_micro, per_epoch[epoch]):
                    batch = order[micro * mb : (micro + 1) * mb].tolist()
                    loss = self._loss(batch, encoder_trains)
                    (loss / accumulation).backward()
                    micro_losses.append(loss.item())
                    stepped = (micro + 1) % accumulation == 0 or micro + 1 == per_epoch[epoch]
                    if stepped:
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    position.micro_steps += 1
                    if position.micro_steps % interval == 0:
                        with warnings.catch_warnings():
                            # With fewer micro-batches per decay than per optimiser step the official
                            # schedule decays before the first step; torch warns about exactly that.
                            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                            scheduler.step()
                    bar.update(1)
                    if not stepped:
                        continue
                    position.stage_steps += 1
                    position.global_step += 1
                    position.epoch, position.next_micro = epoch, micro + 1
                    if position.next_micro == per_epoch[epoch]:
                        position.epoch, position.next_micro = epoch + 1, 0
                    mean_loss = sum(micro_losses) / len(micro_losses)
                    micro_losses = []
                    elapsed = time.perf_counter() - started
                    self._record({
                        "event": "step", "stage": stage.name, "epoch": epoch, "step": position.global_step,
                        "stage_step": position.stage_steps, "micro_steps": position.micro_steps,
                        "loss": round(mean_loss, 6), "lr": optimizer.param_groups[0]["lr"],
                        "samples": min(position.micro_steps * mb, samples), "elapsed_s": round(elapsed, 2),
                        "seq_per_s": round(
                            (position.micro_steps - done_micro) * mb / max(time.perf_counter() - session_started, 1e-9), 3
                        ),
                        "rss_mb": round(current_rss_mb(), 1),
                    })
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
                    due = cfg.checkpoint_every and position.stage_steps % cfg.checkpoint_every == 0
                    if due:
                        position.stage_wall_s = elapsed
                        write_checkpoint(self.output, self.model, optimizer, scheduler, names, position, self.identity)
                    if self.on_step:
                        self.on_step(StepInfo(stage.name, position.global_step, mean_loss, bool(due)))
                position.next_micro = 0
        finally:
            bar.close()
        wall = time.perf_counter() - started
        stats = {
            "stage": stage.name, "trains": list(stage.trains), "epochs": stage.epochs, "lr": stage.lr,
            "samples": samples, "micro_batches": sum(per_epoch), "optimizer_steps": position.stage_steps,
            "schedule_micro_batches": horizon, "final_lr": optimizer.param_groups[0]["lr"],
            "wall_s": round(wall, 1), "peak_rss_mb": round(self.rss.peak, 1),
            "seq_per_s": round(samples / wall, 3) if wall else None,
            "embedding_cache": "used" if not encoder_trains else "bypassed (encoder LoRA trains)",
        }
        self._record({"event": "stage_end", "step": position.global_step, **stats})
        log.info("stage %s done: %s", stage.name, stats)
        if encoder_trains:
            self._vectors = None  # the encoder changed: cached vectors are stale
        self.model.eval()
        self.detector.save(self.output / "stages" / stage.name, training={"stage": stats, "config": self.identity})
        position.finished_stages.append(stats)
        position.stage_index, position.epoch, position.next_micro = index + 1, 0, 0
        position.micro_steps = position.stage_steps = 0
        position.stage_wall_s = 0.0
        write_checkpoint(self.output, self.model, None, None, [], position, self.identity)


def progress_bar(total: int, initial: int, desc: str, enabled: bool, unit: str = "mb") -> Any:
    """A tqdm bar on stderr (hidden when not a terminal, or when not `enabled`); units: micro-batches."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True)


def prepare(config: TrainConfig, os_client: Any | None = None) -> Split:
    """Load and split the configured data (raises UserError for empty or single-class data)."""
    dataset = load_dataset(config.data, os_client)
    split = build_split(config.data, dataset)
    log.info("%s; split %s", dataset.describe(), split.summary())
    return split


def train(
    config: TrainConfig,
    *,
    fresh: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    os_client: Any | None = None,
) -> TrainedRun:
    """Train a LogLLM detector as `config` says, resuming from the run folder's checkpoint.

    Args:
        fresh: discard an existing run in the folder first (checkpoints, metrics, stage
            records, detector, evaluation).
        on_step: called after every optimiser step (tests use it to interrupt a run).
    Returns:
        The trained run; `report` is set when `config.evaluate`.
    Raises:
        UserError: bad data (missing, empty, single-class), a config that does not fit the
            model, or a checkpoint of a different config in `config.output`.
    """
    split = prepare(config, os_client)
    output = config.output
    if fresh and output.exists():
        # Everything a run writes: a detector or evaluation left from the discarded run would
        # otherwise sit beside the new config.json as if this run had produced it.
        written = [output / LATEST, output / METRICS, output / "stages", output / "detector", output / "eval"]
        for path in [*output.glob("checkpoint-*"), *written]:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    detector = _make_detector(config)
    data = _Data(split, detector)
    trainer = _Trainer(config, detector, data, on_step, progress)
    stage_stats = trainer.run()
    detector.model.eval()
    training_record = {
        "config": json.loads(config.model_dump_json()),
        "config_digest": config.digest(),
        "train_digest": data.digest,
        "split": split.summary(),
        "stages": stage_stats,
        "init_from": str(config.init_from) if config.init_from else None,
    }
    detector_dir = output / "detector"
    version = detector.save(detector_dir, training=training_record)
    log.info("trained detector %s written to %s", version, detector_dir)
    run = TrainedRun(detector_dir, stage_stats, split)
    del trainer, detector
    if config.calibrate:
        from training.calibrate import calibrate_on_split

        recorded = calibrate_on_split(detector_dir, split, config.data.describe(), config.runtime, progress)
        log.info("calibrated: label when p(anomalous) >= %.6g (training F1 %.4f); detector %s",
                 recorded["threshold"], recorded["train"]["f1"], recorded["version"])
    if config.evaluate:
        run.report = evaluate_run(
            detector_dir,
            split,
            config,
            output / "eval",
            title=f"LogLLM on {config.data.describe()}",
            context={"split": split.summary(), "stages": stage_stats},
            loss_records=_read_jsonl(output / METRICS),
        )
    return run


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from training.evaluate import read_metrics

    return read_metrics(path)


def evaluate_run(
    detector_dir: Path,
    split: Split,
    config: TrainConfig,
    out_dir: Path,
    *,
    title: str,
    context: dict[str, Any],
    loss_records: Sequence[dict[str, Any]] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Score the test split with the detector folder (and the baseline, if configured) and
    write the report to `out_dir`."""
    from model.detector import load_detector
    from model.logllama import LogLLaMADetector
    from model.logllm import parse_answer
    from training.evaluate import score_with_verdicts, write_report
    from training.logllama import detector_k_sweep, k_sweep_markdown

    evaluations: list[Evaluation] = []
    detector = load_detector(detector_dir, config.runtime)
    test = split.test
    bar = progress_bar(len(test), 0, "evaluating", progress, unit="seq")
    try:
        scored, verdicts = score_with_verdicts(detector, detector.name, [s.key for s in test], [s.messages for s in test],
                                               [s.label for s in test], progress=bar.update)
        evaluations.append(scored)
    finally:
        bar.close()
    threshold = getattr(detector, "threshold", None)
    if isinstance(detector, LogLLaMADetector):
        label_rule = f"Top-K rule, K = {detector.k} (anomalous when an observed next key is outside the Top-K)"
    else:
        label_rule = "greedy answer" if threshold is None else f"p(anomalous) >= {threshold:.6g} (logllm calibrate)"
    context = {
        **context,
        "detector": detector.version,
        "label_rule": label_rule,
        "cache": detector.cache_stats(),
    }
    if threshold is not None:
        # The same verdicts labelled by the greedy answer (the paper's rule), beside the calibrated rule.
        answers = [parse_answer(v.answer)[0] for v in verdicts]
        evaluations.append(replace(scored, name=f"{detector.name}-answer", predictions=answers))
    if config.baseline:
        evaluations.append(run_baseline(split, config.baseline_classifier, config.data.seed))
        context["baseline"] = f"drain3 templates -> event counts -> {config.baseline_classifier}"
    sections, details = [], {}
    if isinstance(detector, LogLLaMADetector):
        # The rule at every K on these labels: what `scoring.top_k` / `logllm score --top-k` would give.
        test_keys = [tuple(detector.keymap.keys_of(s.messages)) for s in test]
        details.update(k=detector.k, k_sweep=detector_k_sweep(detector, test_keys, [s.label for s in test]))
        sections.append(
            f"The Top-K rule at other K on this set (the folder's K = {detector.k} in bold; K values whose labels "
            "equal the row above are left out). Apply another K with `scoring.top_k` or `logllm score --top-k`; a K "
            "read off these labels is tuned on them.\n\n" + k_sweep_markdown(details["k_sweep"], detector.k)
        )
    return write_report(
        out_dir, evaluations, title=title, context=context, loss_records=loss_records, sections=sections, details=details
    )


def run_baseline(split: Split, classifier: Any, seed: int) -> Evaluation:
    """Fit the drain3 + event-count baseline on the split's train side and score its test side."""
    from training.baseline import TemplateCountBaseline
    from training.evaluate import Evaluation

    started = time.perf_counter()
    baseline = TemplateCountBaseline(classifier, seed).fit([s.messages for s in split.train], [s.label for s in split.train])
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    predictions, scores = baseline.predict([s.messages for s in split.test])
    log.info("baseline: %d templates, fit %.1f s, %d unseen test messages", baseline.n_templates, fit_s, baseline.unseen_messages)
    return Evaluation(
        name="baseline",
        keys=[s.key for s in split.test],
        labels=[s.label for s in split.test],
        predictions=predictions,
        scores=scores,
        seconds=time.perf_counter() - started,
        version=baseline.version,
    )
