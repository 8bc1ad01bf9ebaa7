"""One typed training configuration, with the paper's recipe (METHOD.md §1.5) as defaults.

A config is a TOML or JSON file (``logllm train --config FILE``) whose tables mirror the
models below: ``[data]``, ``[architecture]``, ``[runtime]``, ``[sampler]``, ``[optim]``,
``[[stages]]``. Every field has a description; unknown keys are errors (a typo must not
silently fall back to a default). Relative paths are relative to the working directory.

    [data]
    kind = "hdfs"                 # HDFS_2pct + anomaly_label.csv from the shared data folder
    [sampler]
    max_samples_per_epoch = 800   # a CPU budget; the paper has no cap
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.backbones import DEFAULT_DECODER, DEFAULT_ENCODER
from model.detector import RuntimeSettings
from model.errors import UserError
from model.logllm import LogLLMArchitecture
from model.preprocess import LineFormat
from training import shared_data

TrainableGroup = Literal["decoder_lora", "projector", "encoder_lora"]


class OpenSearchExportConfig(BaseModel):
    """Where a labelled export of an OpenSearch index comes from, and which fields hold what."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://127.0.0.1:9200", description="cluster URL")
    index: str = Field(description="index name or pattern to export")
    message_field: str = Field("message", description="field holding the log message (dotted path for objects)")
    timestamp_field: str = Field("@timestamp", description="field that orders documents in time")
    tiebreak_field: str | None = Field(
        None, description="second sort field for equal timestamps, e.g. a line number (default: index order, _doc)"
    )
    session_field: str | None = Field(
        None, description="field holding the session key; unset = fixed windows of data.window documents"
    )
    label_field: str = Field(
        "label",
        description="per-document label (0/1, true/false, normal/anomalous); a session label repeated on its documents "
        "works too (not read with data.assume_normal)",
    )
    query: dict[str, Any] | None = Field(None, description="OpenSearch query restricting the export (default match_all)")


class DataConfig(BaseModel):
    """The log data (labelled, or assumed normal), how it is grouped into sequences and how it is split."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["hdfs", "bgl_windows", "raw", "opensearch"] = Field(
        "hdfs",
        description="hdfs = raw HDFS log + anomaly_label.csv (block sessions); bgl_windows = BGL_windows100.csv; "
        "raw = any log file + labels; opensearch = a labelled index export",
    )
    path: Path | None = Field(
        None, description="log file (hdfs/raw) or windows CSV (bgl_windows); default: the shared benchmark file"
    )
    labels: Path | None = Field(
        None, description="per-session label CSV with a header (key, label); default for hdfs: anomaly_label.csv"
    )
    templates: Path | None = Field(None, description="bgl_windows: EventId -> EventTemplate CSV (default: shared file)")
    format: LineFormat = Field("raw", description="raw: line format (raw, hdfs, bgl; bgl lines carry their label)")
    session_regex: str | None = Field(None, description="raw: group lines by every distinct match of this regex")
    window: int | None = Field(None, ge=1, description="raw/opensearch: group into fixed windows of this many lines")
    line_labels: Path | None = Field(None, description="raw: file with one label per log line")
    session_key_column: str | None = Field(None, description="label CSV key column (default: the first)")
    session_label_column: str | None = Field(None, description="label CSV label column (default: the second)")
    opensearch: OpenSearchExportConfig | None = Field(None, description="opensearch: the index export")
    split: Literal["random", "chronological", "upstream"] | None = Field(
        None,
        description="random by sequence with `seed` (default for hdfs), chronological (default for raw/opensearch; "
        "windows are cut after splitting the lines), upstream = the source's Split column (default for bgl_windows)",
    )
    test_ratio: float = Field(0.2, gt=0, lt=1, description="share of sequences (or lines, for windows) held out for testing")
    seed: int = Field(42, description="seed of the random split and of random training subsets")
    train_fraction: float = Field(1.0, gt=0, le=1, description="share of the training sequences kept (learning curves)")
    fraction_mode: Literal["random", "prefix"] | None = Field(
        None, description="how a training fraction is drawn: fixed-seed random subset (hdfs default) or chronological prefix"
    )
    assume_normal: bool = Field(
        False,
        description="raw/opensearch logs without anomaly labels: every sequence counts as normal (LogLLaMA only, "
        "which learns from normal logs; use a quiet period: incidents in it are learnt as normal). Reports then give "
        "the share of the held-out sequences flagged and the most surprising ones, not precision/recall",
    )
    hold_out_patterns: list[str] = Field(
        default_factory=list,
        description="unseen-template protocol: regexes; training drops every sequence with a matching message and the "
        "test set becomes the test sequences that contain one",
    )

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> DataConfig:
        if self.kind == "hdfs":
            self.path = self.path or shared_data.HDFS_2PCT
            self.labels = self.labels or shared_data.HDFS_LABELS
        elif self.kind == "bgl_windows":
            self.path = self.path or shared_data.BGL_WINDOWS
            self.templates = self.templates or shared_data.BGL_TEMPLATES
        elif self.kind == "raw":
            if self.path is None:
                raise ValueError("data.kind = 'raw' needs data.path (the log file)")
            if (self.session_regex is None) == (self.window is None):
                raise ValueError("data.kind = 'raw' needs exactly one of data.session_regex or data.window")
        elif self.opensearch is None:
            raise ValueError("data.kind = 'opensearch' needs a [data.opensearch] table (index, field names)")
        elif (self.opensearch.session_field is None) == (self.window is None):
            raise ValueError("data.kind = 'opensearch' needs exactly one of data.opensearch.session_field or data.window")
        if self.assume_normal:
            if self.kind not in ("raw", "opensearch"):
                raise ValueError(f"data.assume_normal is for logs without labels (kind 'raw' or 'opensearch'); "
                                 f"kind {self.kind!r} carries its labels, so drop assume_normal")
            if self.labels is not None or self.line_labels is not None:
                raise ValueError("data.assume_normal takes every sequence as normal, so it ignores labels: drop "
                                 "data.labels / data.line_labels, or drop assume_normal to use them")
        if self.split is None:
            self.split = {"hdfs": "random", "bgl_windows": "upstream"}.get(self.kind, "chronological")  # type: ignore[assignment]
        if self.fraction_mode is None:
            self.fraction_mode = "random" if self.kind == "hdfs" else "prefix"
        if self.window is not None and self.split == "random":
            raise ValueError(
                "data.split = 'random' with fixed windows would mix neighbouring windows across train and test "
                "(alerts come in bursts); use 'chronological'"
            )
        return self

    def describe(self) -> str:
        source = self.opensearch.index if self.opensearch else str(self.path)
        return f"{self.kind}:{source}"


class StageConfig(BaseModel):
    """One training stage: which parts train, for how long, at which learning rate."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="stage name used in logs, checkpoints and reports (paper: 1, 2-1, 2-2, 3)")
    trains: list[TrainableGroup] = Field(min_length=1, description="parts that receive gradients; all others are frozen")
    epochs: int = Field(1, ge=1, description="passes over the stage's samples")
    lr: float = Field(gt=0, description="AdamW learning rate at the start of the stage")
    samples: int | None = Field(
        None, ge=1, description="samples per epoch drawn from the balanced pool (paper stage 1: 1,000); unset = the whole pool"
    )
    schedule_samples: int | Literal["pool"] | None = Field(
        None,
        description="samples per epoch the LR decay is spread over: unset = the samples this stage runs (the official "
        "code, also with its max_samples cap); a number or 'pool' (the whole balanced pool) = the paper's stage length, "
        "so a capped stage runs a prefix of the paper's schedule instead of a compressed copy",
    )


PAPER_STAGES: tuple[StageConfig, ...] = (
    StageConfig(name="1", trains=["decoder_lora"], epochs=1, lr=5e-4, samples=1000),
    StageConfig(name="2-1", trains=["projector"], epochs=1, lr=5e-4),
    StageConfig(name="2-2", trains=["projector", "encoder_lora"], epochs=1, lr=5e-5),
    StageConfig(name="3", trains=["projector", "encoder_lora", "decoder_lora"], epochs=2, lr=5e-5),
)


class SamplerConfig(BaseModel):
    """Minority oversampling (β) and per-epoch sample bounds."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(
        0.3, ge=0, lt=1, description="minority class raised to max(floor(beta*N_maj/(1-beta)), N_min) samples per epoch"
    )
    min_samples_per_epoch: int | None = Field(
        None, ge=1, description="pad each epoch's pool to at least this many samples (current official code: 50,000; paper-era: none)"
    )
    max_samples_per_epoch: int | None = Field(
        None, ge=1, description="cap on samples per epoch of every stage (the official sampler's max_samples; a CPU budget)"
    )
    cap_order: Literal["random", "distinct_first"] = Field(
        "random",
        description="which samples a capped epoch (stage `samples` or max_samples_per_epoch below the pool) keeps: "
        "'random' = a uniform prefix of the shuffled pool (the official code); 'distinct_first' = one copy of every "
        "distinct cleaned sequence of each class before any repeat, classes interleaved at the pool's ratio, so a "
        "CPU-sized cut sees the rare normal shapes the full pool would show; an uncapped epoch is the same either way",
    )


class OptimConfig(BaseModel):
    """Optimiser and learning-rate schedule (METHOD.md §1.5)."""

    model_config = ConfigDict(extra="forbid")

    micro_batch: int = Field(4, ge=1, description="sequences per forward/backward pass")
    accumulation: int = Field(4, ge=1, description="micro-batches per optimiser step (each loss divided by this)")
    gamma: float = Field(0.7, gt=0, le=1, description="ExponentialLR decay factor")
    decays_per_stage: int = Field(
        10, ge=1, description="LR decays every max(floor(micro-steps/this), 1) micro-batches (paper-era code: 11)"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (torch default, as the official code)")


def _default_architecture() -> LogLLMArchitecture:
    return LogLLMArchitecture(encoder=DEFAULT_ENCODER, decoder=DEFAULT_DECODER)


class TrainConfig(BaseModel):
    """Everything `logllm train` needs; defaults are the paper's recipe on the small model pair."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig, description="labelled data, grouping and split")
    architecture: LogLLMArchitecture = Field(
        default_factory=_default_architecture, description="base models, pooling, cleaning, prompt and LoRA settings"
    )
    init_from: Path | None = Field(
        None, description="start from this trained detector folder (e.g. the shipped model) instead of fresh weights"
    )
    runtime: RuntimeSettings = Field(
        default_factory=lambda: RuntimeSettings(device="auto", dtype="auto"),
        description="device, dtype, threads and batch sizes used for training and evaluation",
    )
    stages: list[StageConfig] = Field(default_factory=lambda: list(PAPER_STAGES), min_length=1, description="stages in order")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="oversampling and sample bounds")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimiser and LR schedule")
    seed: int = Field(42, description="seed of weight initialisation, sampling order and dropout")
    output: Path = Field(Path("runs/logllm"), description="run folder: checkpoint, metrics, stage folders, detector, report")
    checkpoint_every: int = Field(
        25, ge=0, description="also checkpoint every N optimiser steps inside a stage (0: only at stage ends)"
    )
    calibrate: bool = Field(
        False,
        description="after training, choose the label threshold on the training split and record it in the detector "
        "folder (`logllm calibrate`; [ours]: the paper labels by the greedy answer)",
    )
    evaluate: bool = Field(True, description="after training, evaluate on the test split and write the report")
    baseline: bool = Field(True, description="also train and evaluate the drain3 + event-count baseline on the same split")
    baseline_classifier: Literal["decision_tree", "logistic_regression"] = Field(
        "decision_tree", description="the baseline's classifier (loglizer style)"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if self.data.assume_normal:
            raise ValueError('data.assume_normal (logs without labels) trains LogLLaMA only (top-level detector = '
                             '"logllama"): LogLLM learns to answer "anomalous" from labelled anomalies')
        return self

    def digest(self) -> str:
        """Hash of everything that changes the training trajectory (not output, calibration or evaluation).

        `data.assume_normal` is left out: this config refuses it, so it never changes a trajectory,
        and hashing it would give every run made before the field existed another digest (which
        stops an interrupted run from resuming and a benchmark from reusing its figures)."""
        body = self.model_dump(mode="json", exclude={"output": True, "calibrate": True, "evaluate": True,
                                                     "baseline": True, "baseline_classifier": True,
                                                     "data": {"assume_normal"}})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def format_validation_error(error: ValidationError, source: str) -> str:
    """`source: field.path: message; ...` for every problem pydantic found."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        problems.append(f"{where}: {item['msg']}")
    return f"{source}: " + "; ".join(problems)


def parse_config(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a config mapping.

    Raises:
        UserError: naming every offending key and why.
    """
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from exc


def read_config_file(path: Path, examples: str) -> dict[str, Any]:
    """The table of a TOML (``.toml``) or JSON config file; `examples` names where working
    configs live, for the error messages.

    An empty file is refused: every field has a default, so an empty config (a failed edit,
    a truncated copy) would otherwise start the paper's full recipe on the default dataset.

    Raises:
        UserError: missing or unreadable file, bad syntax, not a table, or no keys at all.
    """
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; see {examples} for examples")
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        text = path.read_text()
        raw = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} cannot be read: {exc}") from exc
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"config file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a {kind} table of settings, not {type(raw).__name__}")
    if not raw:
        raise UserError(f"config file {path} is empty; start from one of {examples}")
    return raw


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML (``.toml``) or JSON config file, apply top-level `overrides`, validate.

    Raises:
        UserError: missing, empty or unreadable file, bad syntax, or invalid values.
    """
    raw = read_config_file(path, "training/configs/logllm_*.toml")
    raw.update(overrides or {})
    return parse_config(raw, str(path))
