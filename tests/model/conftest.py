"""The real-small-model tier: MiniLM encoder + SmolLM2 decoder on the CPU (the `small_detector`
fixture is in tests/conftest.py, shared with the worker's tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.backbones import DEFAULT_DECODER, DEFAULT_ENCODER
from model.detector import RuntimeSettings
from model.logllm import LogLLMArchitecture

SMALL_ARCH = LogLLMArchitecture(encoder=DEFAULT_ENCODER, decoder=DEFAULT_DECODER)
FP32 = RuntimeSettings(device="cpu", dtype="float32", quantize="off")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.model)
