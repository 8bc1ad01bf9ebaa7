"""Test entry point: the worker's real command path (settings from LOGLLM_* variables,
`enricher.service.run_once` / `run_service`) with the fast `FakeDetector` instead of a model.

    python -m tests.integration.worker_main once     one pass, JSON summary on stdout
    python -m tests.integration.worker_main run      the service, until SIGTERM
    python -m tests.integration.worker_main zygote   imports once, then per line on stdin:
        "fork"      -> forks a child that runs one pass; prints the child's pid
        "wait PID"  -> waits for that child; prints its exit status (0 ok, -9 killed)

The zygote makes twenty kill -9 restarts cheap: each child starts with everything imported
(a fresh interpreter would spend seconds importing torch via the model package), yet is its
own process with its own connections, killed for real. The zygote forks before it ever opens a
connection or starts a thread, so the children inherit no locks.

LOGLLM_TEST_DETECTOR_DELAY_S slows each detector call down, to widen the windows faults hit.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from enricher.service import run_once, run_service
from enricher.settings import load_settings
from model.errors import UserError
from tests.fakes import FakeDetector


def _detector() -> FakeDetector:
    return FakeDetector(delay_s=float(os.environ.get("LOGLLM_TEST_DETECTOR_DELAY_S", "0")))


def _once() -> int:
    try:
        summary = run_once(load_settings(), _detector())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_json()), flush=True)
    return 0


def _zygote() -> int:
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    sys.stdout = sys.stderr  # stdout is the zygote's protocol channel
                    code = _once()
                finally:
                    logging.shutdown()
                    os._exit(code)
            print(pid, flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(argument), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
        else:
            return 0
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    mode = sys.argv[1]
    if mode == "once":
        return _once()
    if mode == "run":
        return run_service(load_settings(), _detector())
    if mode == "zygote":
        return _zygote()
    raise SystemExit(f"unknown mode {mode!r}; use once, run or zygote")


if __name__ == "__main__":
    sys.exit(main())
