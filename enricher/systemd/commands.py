"""`logllm systemd install`: install the worker as a systemd service (see `enricher.systemd.install`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path, PurePosixPath

from enricher.systemd.install import DEFAULT_ENV_FILE, DEFAULT_UNIT_DIR, DEFAULT_USER, UNIT_NAME


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm systemd install`."""
    systemd = subparsers.add_parser("systemd", help="run the enrichment worker as a systemd service")
    actions = systemd.add_subparsers(dest="systemd_action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help=f"install, enable and start {UNIT_NAME} (run as root)",
        description=f"Render {UNIT_NAME} for this Python environment (Type=notify, watchdog, hardened, "
        "unprivileged user), write a commented settings file if there is none, create the system user, "
        "then `systemctl daemon-reload` and `systemctl enable --now`. Commands are printed instead of run "
        "with --dry-run, with a --root other than /, or when systemd is not PID 1.",
    )
    install.add_argument(
        "--user", default=DEFAULT_USER, help=f"system user (and group) to run as (default: {DEFAULT_USER})"
    )
    install.add_argument(
        "--env-file",
        type=PurePosixPath,
        default=DEFAULT_ENV_FILE,
        help=f"settings file (LOGLLM_* variables) the unit reads; written only if absent (default: {DEFAULT_ENV_FILE})",
    )
    install.add_argument(
        "--unit-dir",
        type=PurePosixPath,
        default=DEFAULT_UNIT_DIR,
        help=f"where the unit goes (default: {DEFAULT_UNIT_DIR})",
    )
    install.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="write the files under this directory instead of / (an image or a look at the result); "
        "commands are then only printed",
    )
    install.add_argument(
        "--dry-run", action="store_true", help="write the files (see --root) but only print the commands"
    )
    install.add_argument("--no-enable", action="store_true", help="do not enable or start the service")
    install.add_argument(
        "--gpu", action="store_true", help="also write a drop-in that opens the NVIDIA devices to the service (CUDA)"
    )
    install.set_defaults(handler=_cmd_install)


def _cmd_install(args: argparse.Namespace) -> int:
    from enricher.systemd.install import Host, InstallOptions, install

    options = InstallOptions(
        user=args.user,
        env_file=args.env_file,
        unit_dir=args.unit_dir,
        root=args.root.resolve(),
        dry_run=args.dry_run,
        enable=not args.no_enable,
        gpu=args.gpu,
    )
    install(options, Host.probe(options.user, options.root), euid=os.geteuid())
    return 0
