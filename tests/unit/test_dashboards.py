"""The Dashboards export: structure and references of every saved object, stable ids, fields the
worker's mappings have, the request each panel implies, and the import request and its errors
(against a real HTTP server on the loopback interface)."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dashboards.definitions import (
    DashboardConfig,
    SavedSearch,
    anomaly_rate_by_split,
    build_dashboard,
    fields_used,
    score_distribution,
    top_groups,
)
from dashboards.importer import import_ndjson
from dashboards.queries import MISSING_KEY, chart_request, search_request
from dashboards.saved_objects import MIGRATION_VERSIONS, export_ndjson, export_objects
from enricher.cli import main
from enricher.settings import Settings, load_settings
from enricher.sink import ANOMALY_MAPPING, RESULTS_MAPPING
from model.errors import UserError

COMMITTED = Path(__file__).resolve().parents[2] / "dashboards" / "logllm.ndjson"
OTHER = DashboardConfig(
    logs_index="app-logs-*",
    timestamp_field="event.created",
    message_field="log.message",
    results_index="app-anomalies",
    split_field="host.name",
)
# Visualization schemas Dashboards accepts per type (vislib bar chart, data table).
SCHEMAS = {"histogram": {"metric", "segment", "group"}, "table": {"metric", "bucket"}, "markdown": set()}
NESTED_JSON = {
    "visualization": ("visState", "uiStateJSON"),
    "dashboard": ("panelsJSON", "optionsJSON"),
    "search": (),
    "index-pattern": (),
}


@pytest.fixture
def no_logllm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from defaults and files only: the developer's LOGLLM_* variables are removed."""
    for name in [name for name in os.environ if name.startswith("LOGLLM_")]:
        monkeypatch.delenv(name)


def parse_export(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def search_source(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def ref_names_used(obj: dict[str, Any]) -> set[str]:
    """Every reference name the object's nested documents point through."""
    names = set()
    if "kibanaSavedObjectMeta" in obj["attributes"]:
        source = search_source(obj)
        names |= {source["indexRefName"]} if "indexRefName" in source else set()
        names |= {flt["meta"]["indexRefName"] for flt in source.get("filter", [])}
    if obj["type"] == "dashboard":
        names |= {panel["panelRefName"] for panel in json.loads(obj["attributes"]["panelsJSON"])}
    return names


@pytest.mark.parametrize("config", [DashboardConfig(), OTHER], ids=["default", "other-indices"])
def test_every_object_is_well_formed_and_every_reference_resolves(config: DashboardConfig) -> None:
    objects = parse_export(export_ndjson(config))
    by_id = {obj["id"]: obj for obj in objects}
    assert len(by_id) == len(objects), "ids must be unique"
    assert [obj["type"] for obj in objects].count("dashboard") == 1
    seen: set[str] = set()
    for obj in objects:
        assert set(obj) == {"type", "id", "attributes", "references", "migrationVersion"}
        assert obj["migrationVersion"] == {obj["type"]: MIGRATION_VERSIONS[obj["type"]]}
        for key in NESTED_JSON[obj["type"]]:
            json.loads(obj["attributes"][key])
        for ref in obj["references"]:
            # Referenced objects come first, so Dashboards never sees a dangling reference.
            assert ref["id"] in seen, f"{obj['attributes']['title']}: {ref} is not an earlier object"
            assert by_id[ref["id"]]["type"] == ref["type"]
        assert {ref["name"] for ref in obj["references"]} == ref_names_used(obj)
        seen.add(obj["id"])


def test_index_patterns_carry_the_configured_titles_and_time_fields() -> None:
    patterns = {obj["attributes"]["title"]: obj for obj in parse_export(export_ndjson(OTHER)) if obj["type"] == "index-pattern"}
    assert {title: obj["attributes"]["timeFieldName"] for title, obj in patterns.items()} == {
        "app-logs-*": "event.created",
        "app-anomalies": "start",
    }


def test_visualizations_match_their_definitions() -> None:
    objects = {obj["attributes"]["title"]: obj for obj in parse_export(export_ndjson(DashboardConfig()))}
    for panel in build_dashboard(DashboardConfig()).panels:
        obj = objects[panel.item.title]
        if obj["type"] != "visualization":
            continue
        state = json.loads(obj["attributes"]["visState"])
        assert state["title"] == panel.item.title
        aggs = {agg["id"]: agg for agg in state["aggs"]}
        assert len(aggs) == len(state["aggs"])
        assert {agg["schema"] for agg in state["aggs"]} <= SCHEMAS[state["type"]]
        for agg in state["aggs"]:
            if agg["type"] == "terms":
                assert aggs[agg["params"]["orderBy"]]["schema"] == "metric"
        source = search_source(obj)
        assert source["query"] == {"query": "", "language": "kuery"}
        assert [flt["meta"]["key"] for flt in source.get("filter", [])] == [f.field for f in panel.item.filters]


def test_panels_read_only_fields_the_worker_maps() -> None:
    config = DashboardConfig()
    anomaly_fields = {f"anomaly.{name}" for name in ANOMALY_MAPPING["properties"]}
    log_fields = anomaly_fields | {config.timestamp_field, config.message_field, config.split_field}
    results_fields = {name for name, spec in RESULTS_MAPPING["properties"].items() if "type" in spec}
    for panel in build_dashboard(config).panels:
        if panel.item.index == "logs":
            assert fields_used(panel.item) <= log_fields, panel.item.key
        elif panel.item.index == "results":
            assert fields_used(panel.item) <= results_fields, panel.item.key
            # Aggregated and filtered fields must be aggregatable: never `text`.
            assert all(RESULTS_MAPPING["properties"][f]["type"] != "text" for f in fields_used(panel.item))


def test_ids_are_stable_and_per_configuration() -> None:
    first = [(obj.type, obj.id) for obj in export_objects(DashboardConfig())]
    assert first == [(obj.type, obj.id) for obj in export_objects(DashboardConfig())]
    # Another split field only changes panels, not identities: a re-import replaces them.
    assert first == [(obj.type, obj.id) for obj in export_objects(DashboardConfig(split_field="host.name"))]
    other = {obj.id for obj in export_objects(OTHER)}
    assert not other & {object_id for _, object_id in first}


@pytest.mark.usefixtures("no_logllm_env")
def test_committed_export_is_the_generated_default() -> None:
    assert DashboardConfig.from_settings(Settings()) == DashboardConfig()
    assert COMMITTED.read_text(encoding="utf-8") == export_ndjson(DashboardConfig()), (
        "dashboards/logllm.ndjson is stale: regenerate with `logllm dashboards export -o dashboards/logllm.ndjson`"
    )


@pytest.mark.usefixtures("no_logllm_env")
def test_config_follows_the_worker_settings() -> None:
    settings = load_settings(
        source={"index": "hdfs-*", "timestamp_field": "ts", "message_field": "msg"},
        sink={"results_index": "verdicts-hdfs"},
        grouping={"mode": "time_window", "partition_field": "host.name", "session_regex": None},
    )
    config = DashboardConfig.from_settings(settings)
    assert (config.logs_index, config.timestamp_field, config.message_field) == ("hdfs-*", "ts", "msg")
    assert (config.results_index, config.split_field) == ("verdicts-hdfs", "host.name")
    assert DashboardConfig.from_settings(settings, "service.name").split_field == "service.name"


def test_requests_follow_the_definitions() -> None:
    config = DashboardConfig()
    index, body = chart_request(top_groups(config), config, time_range=("2008-11-09T00:00:00Z", "2008-11-10T00:00:00Z"))
    assert index == "logs-*"
    groups = body["aggs"]["5"]
    # Ordered by the max score (metric "1"), which therefore runs inside the terms bucket.
    assert groups["terms"] == {"field": "anomaly.group_id", "size": 20, "order": {"1": "desc"}}
    assert groups["aggs"]["1"] == {"max": {"field": "anomaly.score"}}
    assert body["query"]["bool"]["filter"] == [
        {"match_phrase": {"anomaly.label": "anomalous"}},
        {"range": {"@timestamp": {"gte": "2008-11-09T00:00:00Z", "lte": "2008-11-10T00:00:00Z",
                                  "format": "strict_date_optional_time"}}},
    ]
    index, body = chart_request(score_distribution(config), config)
    assert index == "logllm-results"
    scores = body["aggs"]["2"]
    assert scores["histogram"]["extended_bounds"] == {"min": 0.0, "max": 1.0}
    assert scores["aggs"]["3"]["terms"]["order"] == {"_count": "desc"}
    for panel in build_dashboard(config).panels:
        item = panel.item
        if isinstance(item, SavedSearch):
            index, body = search_request(item, config)
            assert body["sort"] == [{"@timestamp": {"order": "desc", "unmapped_type": "boolean"}}]
        elif item.index is None:
            with pytest.raises(ValueError, match="runs no search"):
                chart_request(item, config)
            continue
        else:
            index, body = chart_request(item, config)
        assert index == config.index_title(item.index)


def test_terms_with_a_missing_bucket_request_one() -> None:
    config = DashboardConfig()
    _, body = chart_request(anomaly_rate_by_split(config), config)
    assert body["aggs"]["2"]["terms"]["missing"] == MISSING_KEY
    assert body["aggs"]["2"]["aggs"]["3"]["terms"] == {"field": "anomaly.label", "size": 2, "order": {"_count": "desc"}}
    assert body["query"]["bool"]["filter"] == [{"exists": {"field": "anomaly.label"}}]


# ---------------------------------------------------------------------------------------------
# The import request, against a real HTTP server on 127.0.0.1.


class FakeDashboards(BaseHTTPRequestHandler):
    """Answers like Dashboards' import API; records what it received."""

    received: list[dict[str, Any]] = []
    status = 200
    answer: dict[str, Any] = {}

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        message = BytesParser(policy=default_policy).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
        )
        parts = [
            (part.get_param("name", header="content-disposition"), part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()
        ]
        self.received.append({"path": self.path, "headers": {key.lower(): value for key, value in self.headers.items()}, "parts": parts})
        payload = json.dumps(self.answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `received` instead."""


@pytest.fixture
def dashboards_url() -> Iterator[str]:
    FakeDashboards.received = []
    FakeDashboards.status, FakeDashboards.answer = 200, {"success": True, "successCount": 9}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboards)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("no_logllm_env")
def test_import_posts_the_file_with_the_xsrf_header(dashboards_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLM_DASHBOARDS_PASSWORD", "s3cret")
    assert main(["dashboards", "import", "--url", dashboards_url + "/", "--username", "admin"]) == 0
    (request,) = FakeDashboards.received
    assert request["path"] == "/api/saved_objects/_import?overwrite=true"
    assert request["headers"]["osd-xsrf"] == "true"
    assert request["headers"]["authorization"] == "Basic YWRtaW46czNjcmV0"  # admin:s3cret
    ((name, filename, content),) = request["parts"]
    assert (name, filename) == ("file", "logllm-dashboards.ndjson")
    assert content.decode() == export_ndjson(DashboardConfig())


def test_import_without_overwrite_reports_conflicts(dashboards_url: str) -> None:
    FakeDashboards.answer = {
        "success": False,
        "successCount": 2,
        "errors": [{"id": "abc", "type": "visualization", "title": "x", "error": {"type": "conflict"}}],
    }
    with pytest.raises(UserError, match=r"rejected 1: visualization abc \(x\): conflict; .*without --no-overwrite"):
        import_ndjson(dashboards_url, export_ndjson(DashboardConfig()), overwrite=False)
    assert FakeDashboards.received[0]["path"].endswith("?overwrite=false")


def test_import_quotes_the_error_dashboards_returns(dashboards_url: str) -> None:
    FakeDashboards.status = 400
    FakeDashboards.answer = {"statusCode": 400, "error": "Bad Request", "message": "Invalid file extension .txt"}
    with pytest.raises(UserError, match=re.escape(f"{dashboards_url} answered 400: Invalid file extension .txt")):
        import_ndjson(dashboards_url, "{}\n")


def test_import_names_an_unreachable_url() -> None:
    # A port nobody listens on: bind one, then close it before connecting.
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboards)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()
    with pytest.raises(UserError, match=re.escape(f"cannot reach OpenSearch Dashboards at {url}")):
        import_ndjson(url, "{}\n", timeout_s=5)


@pytest.mark.usefixtures("no_logllm_env")
def test_export_command_writes_the_file_for_the_config(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.toml"
    config_file.write_text('[source]\nindex = "app-logs-*"\n[sink]\nresults_index = "app-anomalies"\n')
    output = tmp_path / "out.ndjson"
    assert main(["dashboards", "export", "--config", str(config_file), "--split-field", "host.name", "-o", str(output)]) == 0
    expected = DashboardConfig(logs_index="app-logs-*", results_index="app-anomalies", split_field="host.name")
    assert output.read_text() == export_ndjson(expected)
    assert main(["dashboards", "export", "-o", str(tmp_path / "missing" / "x.ndjson")]) == 2


def test_import_needs_the_password_with_a_username(no_logllm_env: None) -> None:
    with pytest.raises(UserError, match="LOGLLM_DASHBOARDS_PASSWORD"):
        import_cli(["--url", "http://127.0.0.1:1", "--username", "admin"])
    assert main(["dashboards", "import", "--url", "http://127.0.0.1:1", "--file", "/nonexistent.ndjson"]) == 2


def import_cli(arguments: list[str]) -> int:
    """`logllm dashboards import ARGUMENTS` without main's error handling (to see the UserError)."""
    from enricher.cli import build_parser

    args = build_parser().parse_args(["dashboards", "import", *arguments])
    return int(args.handler(args))
