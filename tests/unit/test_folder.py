import json
from pathlib import Path

import pytest
import torch

from model.errors import UserError
from model.folder import MANIFEST_FILE, read_manifest, read_weights, write_detector_folder


def _write(folder: Path) -> str:
    return write_detector_folder(folder, {"detector": "logllm", "note": "x"}, {"w.safetensors": {"t": torch.arange(6.0)}})


def test_round_trip_and_version_is_content_hash(tmp_path: Path) -> None:
    version = _write(tmp_path / "a")
    assert _write(tmp_path / "b") == version  # same content, same version
    manifest = read_manifest(tmp_path / "a")
    assert manifest["version"] == version and manifest["detector"] == "logllm"
    assert torch.equal(read_weights(tmp_path / "a", "w.safetensors")["t"], torch.arange(6.0))
    other = write_detector_folder(tmp_path / "c", {"detector": "logllm", "note": "y"}, {"w.safetensors": {"t": torch.arange(6.0)}})
    assert other != version


def test_corrupt_weights_are_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    path = tmp_path / "w.safetensors"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(UserError, match="does not match its hash"):
        read_manifest(tmp_path)


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    manifest["note"] = "edited"
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="edited after it was written"):
        read_manifest(tmp_path)


def test_missing_or_garbage_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(UserError, match="not a detector folder"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        read_manifest(tmp_path)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="upgrade logllm-enricher"):
        read_manifest(tmp_path)


def test_a_folder_of_the_other_detector_kind_is_refused_when_one_is_configured(tmp_path: Path) -> None:
    from model.detector import load_detector

    write_detector_folder(tmp_path / "llama", {"detector": "logllama"}, {})
    with pytest.raises(UserError, match="holds a 'logllama' detector, not the 'logllm' one configured"):
        load_detector(tmp_path / "llama", expect="logllm")
