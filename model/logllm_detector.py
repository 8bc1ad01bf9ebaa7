"""LogLLM as a `Detector`: caching, batching, and the detector-folder format.

Scoring path for a batch of raw sequences:
    normalise -> verdict cache -> (misses, sorted by length) -> embedding cache -> encoder
    -> projector -> decoder greedy answer + p(anomalous) -> verdict cache

Folder layout: ``manifest.json``, ``projector.safetensors``, ``decoder_lora.safetensors``,
``encoder_lora.safetensors``. The manifest records the architecture, fingerprints of both base
models, the prompt's token ids and the preprocessing version; `load` refuses a folder whose
record does not match the base models it is asked to run on. An optional `decision` entry
(written by `logllm calibrate`) replaces the greedy answer as the label rule: anomalous when
p(anomalous) >= its threshold.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from model.backbones import choose_placement
from model.cache import CountingLRU, score_through_cache
from model.detector import ProgressFn, RuntimeSettings, Verdict
from model.errors import ManifestMismatchError, UserError
from model.folder import read_weights, write_detector_folder
from model.logllm import LogLLM, LogLLMArchitecture, parse_answer
from model.preprocess import PREPROCESSING_VERSION, normalize_sequence

log = logging.getLogger(__name__)

PROJECTOR_FILE = "projector.safetensors"
DECODER_LORA_FILE = "decoder_lora.safetensors"
ENCODER_LORA_FILE = "encoder_lora.safetensors"
DECISION = "decision"  # manifest entry: {"rule": "score_threshold", "threshold": t, ...how it was chosen}


def _fingerprint(module: torch.nn.Module) -> dict[str, Any]:
    """What identifies a base model independent of where it is stored or how it is quantised."""
    config = module.config  # type: ignore[union-attr]
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
    }


def _sequence_key(messages: tuple[str, ...]) -> bytes:
    # A digest keeps the verdict cache small however long the sequences; 128 bits make a
    # collision between distinct sequences practically impossible.
    return hashlib.blake2b("\x1e".join(messages).encode(), digest_size=16).digest()


class LogLLMDetector:
    """LogLLM behind the `Detector` interface, with embedding and verdict caches."""

    name = "logllm"

    def __init__(
        self, model: LogLLM, runtime: RuntimeSettings, version: str = "untrained", threshold: float | None = None
    ) -> None:
        self.model = model
        self.runtime = runtime
        # None: the label is the greedy answer (the paper's rule); else p(anomalous) >= threshold.
        self.threshold = threshold
        self.version = f"{self.name}-{version}"
        self.embeddings: CountingLRU[torch.Tensor] = CountingLRU(runtime.embedding_cache_size, self.version)
        self.verdicts: CountingLRU[Verdict] = CountingLRU(runtime.verdict_cache_size, self.version)
        # Wall time spent in each model half, for benchmarks and metrics.
        self.encoder_seconds = 0.0
        self.decoder_seconds = 0.0
        if runtime.threads:
            torch.set_num_threads(runtime.threads)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, arch: LogLLMArchitecture, runtime: RuntimeSettings | None = None, seed: int = 0) -> LogLLMDetector:
        """A fresh, untrained detector (random projector, zero-effect LoRA adapters)."""
        runtime = runtime or RuntimeSettings()
        torch.manual_seed(seed)
        placement = choose_placement(runtime.device, runtime.dtype, runtime.quantize)
        return cls(LogLLM(arch, placement), runtime)

    @classmethod
    def load(cls, folder: Path, manifest: dict[str, Any], runtime: RuntimeSettings) -> LogLLMDetector:
        """Open a checked detector folder (see `model.detector.load_detector`).

        Raises:
            ManifestMismatchError: base models, prompt tokens or preprocessing differ.
        """
        arch = LogLLMArchitecture.model_validate(manifest["architecture"])
        overrides = {k: v for k, v in (("encoder", runtime.encoder_path), ("decoder", runtime.decoder_path)) if v}
        run_arch = arch.model_copy(update=overrides)
        placement = choose_placement(runtime.device, runtime.dtype, runtime.quantize)
        model = LogLLM(run_arch, placement)
        _check_compatible(folder, manifest, model)
        model.projector.load_state_dict(read_weights(folder, PROJECTOR_FILE, placement.device))
        for module, file in ((model.decoder, DECODER_LORA_FILE), (model.encoder, ENCODER_LORA_FILE)):
            result = set_peft_model_state_dict(module, read_weights(folder, file, placement.device))
            if result.unexpected_keys:
                raise ManifestMismatchError(
                    f"{folder / file} holds adapter weights for modules the base model lacks "
                    f"({result.unexpected_keys[:3]}...); it was trained on another architecture"
                )
        model.eval()
        threshold = decision_threshold(folder, manifest)
        rule = "greedy answer" if threshold is None else f"p(anomalous) >= {threshold:g}"
        log.info("loaded %s (%s) on %s; label rule: %s", folder, manifest["version"], placement.describe(), rule)
        return cls(model, runtime, manifest["version"], threshold)

    def save(self, folder: Path, training: dict[str, Any] | None = None) -> str:
        """Write this detector as a folder; returns and adopts the new version hash."""
        model = self.model
        manifest = {
            "detector": self.name,
            "architecture": model.arch.model_dump(mode="json"),
            "base_models": {"encoder": _fingerprint(model.encoder), "decoder": _fingerprint(model.decoder)},
            "dims": {"encoder": model.encoder_dim, "decoder": model.decoder_dim},
            "prompt_token_ids": model.prompt_token_ids(),
            "preprocessing_version": PREPROCESSING_VERSION,
            "training": training or {},
        }
        if self.threshold is not None:
            manifest[DECISION] = {"rule": "score_threshold", "threshold": self.threshold}
        weights = {
            PROJECTOR_FILE: model.projector.state_dict(),
            DECODER_LORA_FILE: get_peft_model_state_dict(model.decoder),
            ENCODER_LORA_FILE: get_peft_model_state_dict(model.encoder),
        }
        version = write_detector_folder(folder, manifest, weights)
        self.version = f"{self.name}-{version}"
        self.embeddings.bind(self.version)
        self.verdicts.bind(self.version)
        return self.version

    # ------------------------------------------------------------------ scoring
    def embed(self, messages: Sequence[str]) -> torch.Tensor:
        """Encoder vectors [N, E] for cleaned messages, through the embedding cache.

        Only valid while the encoder (and its LoRA) is frozen; training stages that update the
        encoder call `model.encode_messages` directly.
        """
        vectors: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for text in dict.fromkeys(messages):
            cached = self.embeddings.get(text)
            if cached is None:
                missing.append(text)
            else:
                vectors[text] = cached
        if missing:
            started = time.perf_counter()
            with torch.inference_mode():
                fresh = self.model.encode_messages(missing, self.runtime.encoder_batch_size)
            self.encoder_seconds += time.perf_counter() - started
            for text, vector in zip(missing, fresh, strict=True):
                vectors[text] = vector
                self.embeddings.put(text, vector)
        if not messages:
            return torch.zeros(0, self.model.encoder_dim)
        return torch.stack([vectors[text] for text in messages])

    def score(self, sequences: Sequence[Sequence[str]], progress: ProgressFn | None = None) -> list[Verdict]:
        arch = self.model.arch
        normalized = [normalize_sequence(list(seq), arch.regex_set, arch.max_messages) for seq in sequences]
        prompt = self.model.prompt_positions
        return score_through_cache(
            normalized, _sequence_key, self.verdicts, self._score_unique, self.runtime.batch_size, progress,
            positions_of=lambda messages: prompt + len(messages),
            batch_overhead=self.runtime.batch_overhead(self.model.placement.device),
        )

    def _score_unique(self, batch: Sequence[tuple[str, ...]]) -> list[Verdict]:
        with torch.inference_mode():
            projected = [self.model.project(self.embed(messages).to(self.model.placement.device)) for messages in batch]
            started = time.perf_counter()
            texts, scores = self.model.generate(projected)
            self.decoder_seconds += time.perf_counter() - started
        verdicts = []
        for text, score in zip(texts, scores.tolist(), strict=True):
            label, failed = parse_answer(text)
            if self.threshold is not None:
                label = int(score >= self.threshold)
            verdicts.append(Verdict(label, float(score), self.version, text.strip(), failed))
        return verdicts

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return {"embedding": self.embeddings.stats(), "verdict": self.verdicts.stats()}


def decision_threshold(folder: Path, manifest: dict[str, Any]) -> float | None:
    """The calibrated threshold of a folder's `decision` entry, or None for the greedy answer.

    Raises:
        UserError: the entry is not a score-threshold rule with a threshold in [0, 1].
    """
    decision = manifest.get(DECISION)
    if decision is None:
        return None
    threshold = decision.get("threshold") if isinstance(decision, dict) else None
    if (
        not isinstance(decision, dict)
        or decision.get("rule") != "score_threshold"
        or isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 <= threshold <= 1.0
    ):
        raise UserError(
            f"{folder}: manifest entry {DECISION!r} = {decision!r} is not a score_threshold rule with a threshold "
            "in [0, 1]; re-run `logllm calibrate` on the folder or re-copy it"
        )
    return float(threshold)


def _check_compatible(folder: Path, manifest: dict[str, Any], model: LogLLM) -> None:
    problems = []
    if manifest.get("preprocessing_version") != PREPROCESSING_VERSION:
        problems.append(
            f"preprocessing version {manifest.get('preprocessing_version')} != this code's {PREPROCESSING_VERSION}"
        )
    for role, module in (("encoder", model.encoder), ("decoder", model.decoder)):
        expected = manifest.get("base_models", {}).get(role)
        actual = _fingerprint(module)
        if expected != actual:
            problems.append(f"{role} {model.arch.model_dump()[role]!r} is {actual}, the folder was trained on {expected}")
    if manifest.get("prompt_token_ids") != model.prompt_token_ids():
        problems.append("the decoder tokenizer splits the prompt into different token ids than at training time")
    if problems:
        raise ManifestMismatchError(
            f"{folder} does not match the configured base models: "
            + "; ".join(problems)
            + ". Point encoder_path/decoder_path at the models it was trained on, or retrain."
        )

