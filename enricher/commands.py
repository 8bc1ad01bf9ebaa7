"""`logllm run`, `logllm once`, `logllm status`, `logllm config show`: the enrichment worker's command line.

Thin handlers over `enricher.service` (wiring and running) and `enricher.settings`. They import
those inside the handlers: loading the detector stack takes seconds, and `logllm --help` should
not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

CONFIG_HELP = "TOML settings file (default: $LOGLLM_CONFIG_FILE); the environment overrides it"


# ---------------------------------------------------------------------------------------------
# Command line.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm run`, `logllm once`, `logllm status` and `logllm config show`."""
    run = subparsers.add_parser(
        "run",
        help="run the enrichment worker: label new OpenSearch log documents every interval",
        description="Serve until SIGTERM: read new documents, group, score, write labels back, checkpoint.",
    )
    run.add_argument("--config", type=Path, help=CONFIG_HELP)
    run.set_defaults(handler=_cmd_run)

    once = subparsers.add_parser(
        "once",
        help="run one enrichment pass and print a JSON summary",
        description="One pass of the worker (as `logllm run` does each interval), then exit.",
    )
    once.add_argument("--config", type=Path, help=CONFIG_HELP)
    once.add_argument(
        "--lease-wait",
        type=float,
        help="seconds to wait while another worker holds the lease (default: twice state.lease_ttl_s)",
    )
    once.set_defaults(handler=_cmd_once)

    status = subparsers.add_parser(
        "status",
        help="show where the worker stands: lease, cursor, lag, unlabelled documents, groups written",
        description="Read the worker's checkpoint, lease and output for the configured source from the cluster "
        "(nothing is written). Exit code 1 when something needs attention: no checkpoint yet, or unlabelled "
        "documents behind the cursor.",
    )
    status.add_argument("--config", type=Path, help=CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="print JSON: the status and its problems")
    status.set_defaults(handler=_cmd_status)

    config = subparsers.add_parser("config", help="show the worker's effective settings")
    actions = config.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the effective settings (secrets masked) as TOML, or --json",
        description="Print the effective settings (environment > --config file > defaults), each with its "
        "description; secrets are masked. The TOML output is itself a valid config file.",
    )
    show.add_argument("--config", type=Path, help=CONFIG_HELP)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=_cmd_config_show)


def _quiet_client_logs(args: argparse.Namespace) -> None:
    # opensearch-py logs every request at INFO and every failed one with a traceback at WARNING;
    # the worker logs one line per pass and one per retry instead.
    if not args.verbose:
        logging.getLogger("opensearch").setLevel(logging.ERROR)


def _cmd_run(args: argparse.Namespace) -> int:
    from enricher.service import run_service
    from enricher.settings import load_settings
    from enricher.systemd.notify import SystemdNotifier

    _quiet_client_logs(args)
    # Under systemd (Type=notify) this reports READY/STATUS/WATCHDOG/STOPPING; elsewhere a no-op.
    return run_service(load_settings(args.config), hooks=SystemdNotifier.from_environ())


def _cmd_once(args: argparse.Namespace) -> int:
    from enricher.service import run_once
    from enricher.settings import load_settings

    _quiet_client_logs(args)
    summary = run_once(load_settings(args.config), lease_wait_s=args.lease_wait)
    print(json.dumps(summary.to_json()))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from enricher.settings import load_settings
    from enricher.status import read_status

    _quiet_client_logs(args)
    status = read_status(load_settings(args.config))
    problems = status.problems()
    if args.json:
        print(json.dumps({**asdict(status), "problems": problems}, indent=2))
    else:
        sys.stdout.write(status.table(problems))
    return 1 if problems else 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from enricher.settings import load_settings, masked_dump, render_settings

    settings = load_settings(args.config)
    if args.json:
        print(json.dumps(masked_dump(settings), indent=2))
    else:
        sys.stdout.write(render_settings(settings))
    return 0
