"""Fixtures for the real-small-model tier: MiniLM encoder + SmolLM2 decoder on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.backbones import DEFAULT_DECODER, DEFAULT_ENCODER
from model.detector import RuntimeSettings
from model.logllm import LogLLMArchitecture
from model.logllm_detector import LogLLMDetector

SMALL_ARCH = LogLLMArchitecture(encoder=DEFAULT_ENCODER, decoder=DEFAULT_DECODER)
FP32 = RuntimeSettings(device="cpu", dtype="float32", quantize="off")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def small_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[LogLLMDetector, Path]:
    """An untrained small LogLLM whose adapters are perturbed (fresh LoRA B matrices are zero,
    which would make adapter save/load invisible), saved to a folder."""
    detector = LogLLMDetector.create(SMALL_ARCH, FP32, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in detector.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    detector.model.eval()
    folder = tmp_path_factory.mktemp("detector") / "small"
    detector.save(folder)
    return detector, folder
