"""A trained detector is a folder: ``manifest.json`` plus safetensors weight files.

The manifest says which detector it is, which base models and preprocessing it was trained
with, and carries a version hash over its own content and every weight file. Loading verifies
the hashes (a truncated or edited file is refused, never half-loaded). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from model.errors import UserError

if TYPE_CHECKING:
    import torch

MANIFEST_FILE = "manifest.json"
# The detector that ships with the package: LogLLM-small trained on HDFS (see its report.md).
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "shipped" / "logllm-small-hdfs"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_hash(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "version"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def write_detector_folder(
    folder: Path, manifest: dict[str, Any], weights: Mapping[str, Mapping[str, torch.Tensor]]
) -> str:
    """Write weight files and the manifest atomically enough that a crash leaves either the
    previous manifest or the new one (the manifest is written last, via rename).

    Args:
        folder: target folder (created).
        manifest: detector-specific content; `format_version`, `weights` and `version` are added.
        weights: file name (``*.safetensors``) -> tensors to store.
    Returns:
        The version hash, also stored as ``manifest["version"]``.
    """
    from safetensors.torch import save_file  # torch: only when weights are written

    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, tensors in weights.items():
        path = folder / name
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))
        hashes[name] = _sha256(path)
    return _write_manifest(folder, {**manifest, "format_version": FORMAT_VERSION, "weights": hashes})


def rewrite_manifest(folder: Path, changes: Mapping[str, Any]) -> str:
    """Set top-level manifest entries of the checked folder `folder` (weights untouched) and
    return its new version hash: a changed manifest is another detector version, so labels
    written before and after stay distinguishable.

    Raises:
        UserError: the folder fails `read_manifest`'s checks.
    """
    manifest = read_manifest(folder)
    return _write_manifest(folder, {**manifest, **changes})


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> str:
    full = {**manifest, "version": _version_hash(manifest)}
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(full, out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(tmp, folder / MANIFEST_FILE)
    return str(full["version"])


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check a detector folder's manifest and weight hashes.

    Raises:
        UserError: no folder or manifest, unreadable JSON, newer format, a missing weight file,
            or a weight file whose hash differs from the manifest (corrupt or edited).
    """
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist; train one with `logllm train` or use the shipped model")
    if not path.exists():
        raise UserError(f"{folder} is not a detector folder (no {MANIFEST_FILE}); point --model at a folder written by `logllm train`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); the folder is corrupt, re-copy or retrain it") from exc
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise UserError(f"{path} has no format_version; it was not written by this tool")
    if manifest["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{path} has format_version {manifest['format_version']}, newer than this version of logllm "
            f"understands ({FORMAT_VERSION}); upgrade logllm-enricher"
        )
    for name, expected in manifest.get("weights", {}).items():
        weight_path = folder / name
        if not weight_path.exists():
            raise UserError(f"{folder}: weight file {name} named in the manifest is missing; re-copy the whole folder")
        if _sha256(weight_path) != expected:
            raise UserError(f"{folder}: {name} does not match its hash in the manifest (corrupt or edited); re-copy or retrain")
    if manifest.get("version") != _version_hash(manifest):
        raise UserError(f"{path} was edited after it was written (version hash mismatch); re-copy or retrain the folder")
    return manifest


def read_weights(folder: Path, name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load one safetensors file of a folder already checked by `read_manifest`."""
    from safetensors.torch import load_file  # torch: only when weights are read

    try:
        return load_file(str(folder / name), device=device)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{folder / name} cannot be read as safetensors ({exc}); re-copy or retrain the folder") from exc
