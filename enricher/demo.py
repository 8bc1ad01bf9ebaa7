"""`logllm demo`: the whole product on a real HDFS sample, in one command.

    local node (started if needed, unless --node-url) -> fresh logllm-demo-* indices
    -> ingest enricher/demo_data/hdfs_sample.log.gz (one document per line, its own timestamp)
    -> one worker pass (`enricher.service.run_once`) with the shipped detector, sessions by block id
    -> summary: documents, groups, anomalies found against the ground truth, and the dashboards file

The sample is 150 complete HDFS blocks (20 anomalous) from the held-out side of the shipped
detector's training split (see enricher/demo_data/README.md), so the precision and recall the
demo prints are those of blocks the detector has not seen.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import UserError

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from enricher.settings import Settings

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
SAMPLE_LOG = DEMO_DATA / "hdfs_sample.log.gz"
SAMPLE_LABELS = DEMO_DATA / "hdfs_sample_labels.csv"
PREFIX = "logllm-demo-"
LOGS_INDEX = f"{PREFIX}logs"
RESULTS_INDEX = f"{PREFIX}results"
DEAD_LETTER_INDEX = f"{PREFIX}dead-letter"
STATE_INDEX = f"{PREFIX}state"
# Blocks span up to ~39 hours of the log; a gap this long keeps each block one session, as in
# training (one sequence per block).
SESSION_GAP_S = 3 * 86_400
LOGS_MAPPING: dict[str, Any] = {
    "properties": {
        "@timestamp": {"type": "date", "format": "yyMMdd HHmmss"},
        "message": {"type": "text"},
        "level": {"type": "keyword"},
        "component": {"type": "keyword"},
        "line": {"type": "long"},
    }
}

log = logging.getLogger(__name__)


def sample_documents(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(id, source) per raw HDFS line: id = line number, @timestamp = the line's own
    "yyMMdd HHmmss", message = the content after the header, level and component.

    Raises:
        UserError: a line is not in HDFS format (the sample file is damaged).
    """
    from model.preprocess import parse_line

    documents = []
    for number, raw in enumerate(lines, start=1):
        parsed = parse_line(raw, number, "hdfs")
        if parsed is None:
            raise UserError(f"{SAMPLE_LOG}: line {number} is not an HDFS log line; reinstall the package")
        _, _, _, level, component = raw.split(" ", 5)[:5]
        documents.append(
            (
                str(number),
                {
                    "@timestamp": raw[:13],
                    "message": parsed.message,
                    "level": level,
                    "component": component.rstrip(":"),
                    "line": number,
                },
            )
        )
    return documents


@dataclass(frozen=True)
class DemoSummary:
    """What the demo found, and where to look next."""

    documents: int
    groups: int
    anomalous_groups: int
    blocks: int
    anomalous_blocks_found: int
    anomalous_blocks_truth: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    model_version: str
    seconds: float
    pass_seconds: float
    dashboards_file: str
    indices_kept: bool

    def table(self) -> str:
        rows = [
            ("documents", self.documents),
            ("groups (block sessions)", self.groups),
            ("anomalous groups", self.anomalous_groups),
            ("blocks", self.blocks),
            ("anomalous blocks found", self.anomalous_blocks_found),
            ("anomalous blocks (ground truth)", self.anomalous_blocks_truth),
            ("true positives", self.tp),
            ("false positives", self.fp),
            ("false negatives", self.fn),
            ("precision", f"{self.precision:.3f}"),
            ("recall", f"{self.recall:.3f}"),
            ("detector", self.model_version),
            ("worker pass seconds", f"{self.pass_seconds:.1f}"),
            ("total seconds", f"{self.seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        lines.append("")
        lines.append(f"dashboards: {self.dashboards_file}")
        if self.indices_kept:
            lines.append(
                f"indices kept: {LOGS_INDEX}, {RESULTS_INDEX} (import the dashboards file into OpenSearch Dashboards: "
                f"logllm dashboards import --url URL --file {self.dashboards_file})"
            )
        else:
            lines.append(f"indices {PREFIX}* deleted; run `logllm demo --keep` to explore them in Dashboards")
        return "\n".join(lines)


def block_verdicts(results: list[dict[str, Any]]) -> dict[str, int]:
    """Per block (a results document's `key`): 1 if any of its groups is anomalous."""
    verdicts: dict[str, int] = {}
    for result in results:
        verdicts[result["key"]] = max(verdicts.get(result["key"], 0), int(result["label"] == "anomalous"))
    return verdicts


def demo_settings(url: str, model_dir: Path | None) -> Settings:
    """Worker settings for the demo indices (the environment still supplies e.g. credentials)."""
    from enricher.settings import load_settings

    settings = load_settings(
        opensearch={"hosts": [url]},
        scoring={"model_dir": model_dir} if model_dir is not None else {},
        metrics={"port": 0},
    )
    from model.preprocess import HDFS_BLOCK_ID

    # The demo's own names and grouping win over anything in the environment: it must never read
    # or write someone's real indices. Its documents carry a unique numeric `line`, the kind of
    # tiebreaker the settings recommend (sorting on _id loads it into heap and is deprecated).
    return settings.model_copy(
        update={
            "opensearch": settings.opensearch.model_copy(update={"hosts": [url]}),
            "source": settings.source.model_copy(
                update={"index": LOGS_INDEX, "timestamp_field": "@timestamp", "message_field": "message",
                        "tiebreaker_field": "line", "start_at": None}
            ),
            "grouping": settings.grouping.model_copy(
                update={"mode": "session", "session_field": None, "session_regex": HDFS_BLOCK_ID.pattern,
                        "inactivity_gap_s": SESSION_GAP_S, "max_length": 128}
            ),
            "sink": settings.sink.model_copy(
                update={"results_index": RESULTS_INDEX, "dead_letter_index": DEAD_LETTER_INDEX}
            ),
            "state": settings.state.model_copy(update={"index": STATE_INDEX, "checkpoint_id": None}),
        }
    )


def _delete_demo_indices(client: OpenSearch) -> None:
    client.indices.delete(index=f"{PREFIX}*", expand_wildcards="all", ignore_unavailable=True)


def _ingest(client: OpenSearch, documents: list[tuple[str, dict[str, Any]]]) -> None:
    from opensearchpy import helpers

    client.indices.create(
        index=LOGS_INDEX,
        body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": LOGS_MAPPING},
    )
    actions = ({"_index": LOGS_INDEX, "_id": doc_id, "_source": source} for doc_id, source in documents)
    indexed, errors = helpers.bulk(client, actions, chunk_size=1000, raise_on_error=False)
    if errors:
        raise UserError(f"{LOGS_INDEX}: the node refused {len(errors)} sample documents, e.g. {errors[0]}")
    client.indices.refresh(index=LOGS_INDEX)


def _all_sources(client: OpenSearch, index: str) -> list[dict[str, Any]]:
    from opensearchpy import helpers

    client.indices.refresh(index=index)
    return [hit["_source"] for hit in helpers.scan(client, index=index, query={"query": {"match_all": {}}})]


def _write_dashboards(settings: Settings, path: Path) -> Path:
    from dashboards.definitions import DashboardConfig
    from dashboards.saved_objects import export_ndjson

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(export_ndjson(DashboardConfig.from_settings(settings)), encoding="utf-8")
    except OSError as error:
        raise UserError(f"--dashboards-file {path}: cannot write ({error.strerror}); choose a writable path") from None
    return path


def default_dashboards_file() -> Path:
    """`$LOGLLM_CACHE_DIR/demo/logllm-demo-dashboards.ndjson` (default ~/.cache/logllm)."""
    from model.backbones import cache_dir

    return cache_dir() / "demo" / "logllm-demo-dashboards.ndjson"


def run_demo(
    node_url: str | None, keep: bool, model_dir: Path | None = None, dashboards_file: Path | None = None
) -> DemoSummary:
    """Ingest the sample into fresh demo indices, run one worker pass, compare with the truth.

    Raises:
        UserError: the node cannot be started or reached, or the detector folder is unusable.
    """
    from enricher.client import build_client
    from enricher.localnode import ensure_running
    from enricher.service import run_once
    from training.data import read_session_labels
    from training.evaluate import binary_metrics

    started = time.monotonic()
    url = node_url or ensure_running()
    settings = demo_settings(url, model_dir)
    with gzip.open(SAMPLE_LOG, "rt", encoding="utf-8") as sample:
        documents = sample_documents([line.rstrip("\n") for line in sample])
    truth = read_session_labels(SAMPLE_LABELS)
    client = build_client(settings.opensearch)
    try:
        _delete_demo_indices(client)
        print(f"demo: {len(documents)} HDFS lines ({len(truth)} blocks) -> {LOGS_INDEX} on {url}", file=sys.stderr)
        _ingest(client, documents)
        print(f"demo: scoring block sessions with {settings.scoring.model_dir}", file=sys.stderr)
        summary = run_once(settings)
        results = _all_sources(client, RESULTS_INDEX)
        stored = int(client.count(index=LOGS_INDEX)["count"])
        dashboards = _write_dashboards(settings, dashboards_file or default_dashboards_file())
        found = block_verdicts(results)
        unknown = sorted(found.keys() - truth.keys())
        if unknown:
            raise UserError(f"{SAMPLE_LABELS} has no label for blocks {unknown[:3]}; reinstall the package")
        keys = sorted(truth)
        metrics = binary_metrics([truth[key] for key in keys], [found.get(key, 0) for key in keys])
        return DemoSummary(
            documents=stored,
            groups=len(results),
            anomalous_groups=sum(result["label"] == "anomalous" for result in results),
            blocks=len(found),
            anomalous_blocks_found=sum(found.values()),
            anomalous_blocks_truth=sum(truth.values()),
            tp=metrics.tp,
            fp=metrics.fp,
            fn=metrics.fn,
            precision=metrics.precision,
            recall=metrics.recall,
            model_version=results[0]["model_version"] if results else "",
            seconds=time.monotonic() - started,
            pass_seconds=summary.seconds,
            dashboards_file=str(dashboards),
            indices_kept=keep,
        )
    finally:
        if not keep:
            _delete_demo_indices(client)
        client.close()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="label a real HDFS sample end to end on a local OpenSearch node and compare with the ground truth",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--node-url", help="use this cluster instead of starting the local node")
    parser.add_argument("--keep", action="store_true", help=f"keep the {PREFIX}* indices afterwards")
    parser.add_argument("--model", type=Path, help="detector folder (default: the shipped small HDFS detector)")
    parser.add_argument("--dashboards-file", type=Path, help="where to write the dashboards .ndjson")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("opensearch").setLevel(logging.ERROR)
    summary = run_demo(args.node_url, args.keep, args.model, args.dashboards_file)
    print(json.dumps(asdict(summary)) if args.json else summary.table())
    return 0
