"""`logllm dashboards export|import`: the OpenSearch Dashboards saved objects for the worker's labels.

`export` writes the `.ndjson` file for the indices in the worker's settings; `import` posts it (the
generated one, or `--file`) to a Dashboards instance.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model.errors import UserError

CONFIG_HELP = "worker TOML settings file (default: $LOGLLM_CONFIG_FILE): index and field names come from it"
SPLIT_HELP = (
    "keyword field that splits anomalies by host or component (default: grouping.partition_field, else component)"
)
PASSWORD_ENV = "LOGLLM_DASHBOARDS_PASSWORD"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm dashboards export` and `logllm dashboards import`."""
    parser = subparsers.add_parser(
        "dashboards",
        help="export or import the OpenSearch Dashboards saved objects (dashboard, panels, index patterns)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="dashboards_action", required=True, metavar="ACTION")

    export = actions.add_parser(
        "export",
        help="write the saved objects as .ndjson (Dashboards: Stack Management > Saved objects > Import)",
        description="Write the index patterns, visualizations, saved search and dashboard for the indices in the "
        "worker's settings, as the .ndjson file Dashboards' saved-objects import accepts.",
    )
    export.add_argument("--config", type=Path, help=CONFIG_HELP)
    export.add_argument("--split-field", help=SPLIT_HELP)
    export.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(handler=_cmd_export)

    imp = actions.add_parser(
        "import",
        help="post the saved objects to an OpenSearch Dashboards instance",
        description="Import the saved objects into Dashboards through its saved-objects API. Ids are stable, so "
        f"importing again updates the objects. Basic auth: --username, password from ${PASSWORD_ENV}.",
    )
    imp.add_argument("--url", required=True, help="Dashboards base URL, e.g. http://localhost:5601")
    imp.add_argument("--file", type=Path, help="import this .ndjson file instead of generating one from the settings")
    imp.add_argument("--config", type=Path, help=CONFIG_HELP)
    imp.add_argument("--split-field", help=SPLIT_HELP)
    imp.add_argument(
        "--no-overwrite",
        dest="overwrite",
        action="store_false",
        help="fail on objects that already exist instead of replacing them",
    )
    imp.add_argument("--username", help=f"basic-auth user (password from ${PASSWORD_ENV})")
    imp.add_argument("--ca-certs", type=Path, help="PEM file of the CA that signed Dashboards' certificate")
    imp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for Dashboards (default: 60)")
    imp.set_defaults(handler=_cmd_import)


def _generated(args: argparse.Namespace) -> str:
    from dashboards.definitions import DashboardConfig
    from dashboards.saved_objects import export_ndjson
    from enricher.settings import load_settings

    return export_ndjson(DashboardConfig.from_settings(load_settings(args.config), args.split_field))


def _cmd_export(args: argparse.Namespace) -> int:
    text = _generated(args)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"-o {args.output}: cannot write ({exc.strerror}); choose a writable path") from None
    print(f"wrote {len(text.splitlines())} saved objects to {args.output}", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dashboards.importer import import_ndjson

    if args.file is not None:
        try:
            text = args.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--file {args.file}: cannot read ({exc.strerror}); give an exported .ndjson file") from None
    else:
        text = _generated(args)
    password = os.environ.get(PASSWORD_ENV)
    if args.username is not None and password is None:
        raise UserError(f"--username {args.username}: set the password in ${PASSWORD_ENV}")
    result = import_ndjson(
        args.url,
        text,
        overwrite=args.overwrite,
        username=args.username,
        password=password,
        ca_certs=args.ca_certs,
        timeout_s=args.timeout,
    )
    print(f"imported {result.success_count} saved objects into {args.url}", file=sys.stderr)
    return 0
