"""The `logllm` entry point stays cheap to start: building the parser of every command loads
neither torch nor transformers (each takes seconds), so commands that need no model, such as
`logllm node status` or `logllm config show`, answer at once."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from enricher.cli import build_parser
build_parser()
print(json.dumps(sorted(name for name in ("torch", "transformers", "peft") if name in sys.modules)))
"""


def test_building_the_command_line_loads_no_model_library() -> None:
    # A fresh interpreter: this test process has long imported torch.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
