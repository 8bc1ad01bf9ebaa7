"""The `logllm` command line.

Each area of the product contributes its own subcommands through a `register(subparsers)`
function in its module; this file only wires them together, so commands live next to the code
they drive and importing the CLI stays cheap (heavy modules are imported inside handlers; torch
is not loaded until a handler needs it, so `logllm node status` or `config show` start in well under
a second).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from enricher.interfaces import RetriesExhausted
from enricher.settings import env_name
from model.errors import UserError

# Modules that define a `register(subparsers)` function, in the order their commands are listed.
COMMAND_MODULES: tuple[str, ...] = (
    "enricher.demo",
    "model.cli",
    "enricher.commands",
    "enricher.backfill",
    "enricher.localnode",
    "enricher.systemd.commands",
    "training.cli",
    "dashboards.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logllm",
        description="LLM log anomaly detection for OpenSearch (LogLLM, LogLLaMA).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries we call (peft, transformers) emit deprecation notices about each other that a
    # CLI user can do nothing about.
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # peft imports bitsandbytes when it is installed (the `cuda` extra), which on an AVX-512-bf16
    # CPU warns at import that its CPU 4-bit kernel needs `pip install kernels`. This project never
    # runs 4-bit on a CPU (nf4 is CUDA-only) and must not install `kernels` (METHOD.md §2), so the
    # advice would only mislead.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"logllm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RetriesExhausted as exc:
        # Unreachable or overloaded past the retry budget: not a configuration error, so exit 1
        # (the systemd unit restarts on 1, not on 2).
        print(
            f"logllm {args.command}: error: {exc}; check that the cluster is up and reachable at "
            f"{env_name(('opensearch', 'hosts'))} (and its TLS/auth settings), or give it longer with "
            f"{env_name(('retry', 'max_elapsed_s'))}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
