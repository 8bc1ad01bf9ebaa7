"""The detector seam: what the worker, backfill and CLI call, whatever the model behind it.

`Detector.score` takes sequences of raw log messages and returns one `Verdict` per sequence,
stamped with the detector's version. It does no I/O. `load_detector` opens a detector folder
and returns the implementation its manifest names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from model.backbones import DeviceChoice, DtypeChoice, QuantizeChoice
from model.errors import UserError
from model.folder import read_manifest

ProgressFn = Callable[[int], None]
# Defaults of RuntimeSettings.batch_overhead_positions (see its description).
CPU_BATCH_OVERHEAD = 20
CUDA_BATCH_OVERHEAD = 4096


@dataclass(frozen=True)
class Verdict:
    """A detector's decision on one sequence.

    label: 1 anomalous, 0 normal (LogLLM: the parsed greedy answer, as in the paper, or p(anomalous) >=
        the threshold of a calibrated folder).
    score: continuous anomaly score in [0, 1] for ranking and thresholds (LogLLM:
        p(anomalous) vs p(normal) at the answer word).
    model_version: detector name and version hash, e.g. "logllm-3f2a9c81d0e4".
    answer: the decoder's raw answer text (LogLLM) or a short explanation.
    parse_failed: the answer contained neither label word (counted as normal, per the paper).
    positions: indices of the messages that explain the verdict, when the detector has them.
    score_positions: indices of the messages the score is about, whatever the label (LogLLaMA:
        the least likely key's line), so a label set by score alone can still point at a line.
    """

    label: int
    score: float
    model_version: str
    answer: str = ""
    parse_failed: bool = False
    positions: tuple[int, ...] = field(default=())
    score_positions: tuple[int, ...] = field(default=())


class Detector(Protocol):
    """Scores sequences of raw log messages. Implementations: LogLLM, LogLLaMA."""

    name: str
    version: str

    def score(self, sequences: Sequence[Sequence[str]], progress: ProgressFn | None = None) -> list[Verdict]:
        """One verdict per sequence, in order. `progress` is called with the number of
        sequences finished since the last call. Raises nothing for odd content: empty
        sequences and empty messages are valid input."""
        ...

    def cache_stats(self) -> dict[str, dict[str, float]]:
        """Hit/miss counters of the detector's caches, by cache name."""
        ...


class RuntimeSettings(BaseModel):
    """How a detector runs on this machine (not stored with the model)."""

    device: DeviceChoice = Field("auto", description="cpu, cuda, or auto (cuda when torch sees a GPU)")
    dtype: DtypeChoice = Field(
        "auto",
        description="compute dtype; auto = bf16 on CUDA, and on CPU whichever of fp32/bf16 a quick matmul timing finds faster",
    )
    quantize: QuantizeChoice = Field("auto", description="nf4 = 4-bit NF4 via bitsandbytes (CUDA only); auto = nf4 on CUDA")
    batch_size: int = Field(16, ge=1, description="most sequences per decoder batch (sorted by length to limit padding)")
    batch_overhead_positions: int | None = Field(
        None,
        ge=0,
        description="fixed cost of one decoder call, in sequence positions, for planning batches (fewer, fuller calls "
        "vs less left padding); default: 20 on CPU (measured: ~60 ms per SmolLM2 call, ~3.3 ms per position), "
        "4096 on CUDA (positions are cheap there, so batches are filled up to batch_size)",
    )
    encoder_batch_size: int = Field(128, ge=1, description="messages per encoder batch")
    embedding_cache_size: int = Field(
        200_000, ge=0, description="distinct cleaned messages whose encoder vectors are kept (0 disables)"
    )
    verdict_cache_size: int = Field(
        200_000, ge=0, description="distinct cleaned sequences whose verdicts are kept (0 disables)"
    )
    encoder_path: str | None = Field(
        None, description="load the encoder from here instead of the reference in the manifest (same model, moved)"
    )
    decoder_path: str | None = Field(
        None, description="load the decoder from here instead of the reference in the manifest (same model, moved)"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")

    def batch_overhead(self, device: str) -> int:
        """`batch_overhead_positions`, or its default for `device`."""
        if self.batch_overhead_positions is not None:
            return self.batch_overhead_positions
        return CUDA_BATCH_OVERHEAD if device.startswith("cuda") else CPU_BATCH_OVERHEAD


def load_detector(folder: Path, runtime: RuntimeSettings | None = None, expect: str | None = None) -> Detector:
    """Open the detector folder `folder` with the given runtime settings; `expect` ("logllm" or
    "logllama") refuses a folder holding the other kind.

    Raises:
        UserError: the folder is missing or corrupt, names an unknown or unexpected detector, or
            was trained on base models other than the ones configured (`ManifestMismatchError`).
    """
    runtime = runtime or RuntimeSettings()
    manifest = read_manifest(folder)
    kind = manifest.get("detector")
    if expect is not None and kind != expect:
        raise UserError(f"{folder} holds a {kind!r} detector, not the {expect!r} one configured; point at a {expect} folder")
    if kind == "logllm":
        from model.logllm_detector import LogLLMDetector

        return LogLLMDetector.load(folder, manifest, runtime)
    if kind == "logllama":
        from model.logllama import LogLLaMADetector

        return LogLLaMADetector.load(folder, manifest, runtime)
    raise UserError(f"{folder}: unknown detector {kind!r} in manifest; this version knows 'logllm' and 'logllama'")


def check_label_threshold(threshold: float, name: str) -> None:
    """Raises UserError naming `name` when `threshold` is outside the scores' [0, 1]."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"{name} {threshold}: scores are in [0, 1]; pick one with `logllm eval` (oracle_threshold in its report)")


class ScoreThresholdDetector:
    """Labels by the detector's score instead of its own rule: anomalous when score >= threshold.

    For users who have picked a threshold with `logllm eval` on labelled data (e.g. a
    LogLLaMA score threshold where the Top-K rule admits too many candidates). The threshold is
    part of `version`, so labels written under another threshold stay distinguishable. Positions
    are the detector's own (its rule's failed lines); a group its rule found normal but the
    threshold flags points at the lines its score is about (`Verdict.score_positions`).
    """

    def __init__(self, detector: Detector, threshold: float) -> None:
        check_label_threshold(threshold, "label threshold")
        self.detector = detector
        self.threshold = threshold
        self.name = detector.name
        self.version = f"{detector.version}@score>={threshold:g}"

    def score(self, sequences: Sequence[Sequence[str]], progress: ProgressFn | None = None) -> list[Verdict]:
        return [self._relabel(v) for v in self.detector.score(sequences, progress)]

    def _relabel(self, verdict: Verdict) -> Verdict:
        label = int(verdict.score >= self.threshold)
        relation = ">=" if label else "<"
        return Verdict(
            label,
            verdict.score,
            self.version,
            f"score {verdict.score:.4f} {relation} threshold {self.threshold:g}; {verdict.answer}",
            verdict.parse_failed,
            (verdict.positions or verdict.score_positions) if label else (),
            verdict.score_positions,
        )

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return self.detector.cache_stats()


def with_label_threshold(detector: Detector, threshold: float | None) -> Detector:
    """`detector`, or a `ScoreThresholdDetector` around it when a threshold is given."""
    return detector if threshold is None else ScoreThresholdDetector(detector, threshold)
