"""The `logllm` entry point: cheap to start (building the parser of every command loads neither
torch nor transformers, each of which takes seconds, so commands that need no model answer at
once), and an unreachable cluster is an error message, not a traceback."""

from __future__ import annotations

import json
import os
import socket
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


def test_an_unreachable_cluster_is_a_clear_error_with_a_restartable_exit_code() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "LOGLLM_OPENSEARCH__HOSTS": f'["http://127.0.0.1:{port}"]',
        "LOGLLM_RETRY__INITIAL_BACKOFF_S": "0.05",
        "LOGLLM_RETRY__MAX_ELAPSED_S": "0.5",
    }
    for command in ("once", "status"):
        done = subprocess.run(
            [sys.executable, "-m", "enricher.cli", command], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        # 1, not the configuration error's 2: the systemd unit restarts the worker once the cluster is back.
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"logllm {command}: error: cluster info from http://127.0.0.1:{port}: still failing"), last
        assert "LOGLLM_OPENSEARCH__HOSTS" in last
        assert "Traceback" not in done.stderr
