"""Fixtures shared by every test tier.

`small_detector` lives here (not in tests/model) because the worker's integration tests score
with it too: a real small LogLLM, created once per session. Its imports are inside the fixture,
so collecting the unit tier does not load the model stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def small_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """An untrained small LogLLM (`LogLLMDetector`) whose adapters are perturbed (fresh LoRA B
    matrices are zero, which would make adapter save/load invisible), saved to a folder.
    Deterministic."""
    import torch

    from model.logllm_detector import LogLLMDetector
    from tests.model.conftest import FP32, SMALL_ARCH

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
