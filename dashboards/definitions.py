"""What the dashboard shows, as typed Python values: one definition per panel.

A definition says which index a panel reads, which filters it applies and which aggregations it
runs, in the vocabulary OpenSearch Dashboards uses for its standard visualizations (metrics,
bucket aggregations with a schema, phrase/exists filters). Two renderers read the same
definitions: `dashboards.saved_objects` writes them as Dashboards saved objects, and
`dashboards.queries` writes the OpenSearch request Dashboards sends for them. The tests run the
latter on a real node, so what they check is the definition itself, not a copy of it.

Everything here is pure: no I/O, no OpenSearch Dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from enricher.settings import Settings
from enricher.sink import ANOMALY

IndexRole = Literal["logs", "results"]
"""Which of the two index patterns a panel reads: the log documents or the per-sequence results."""

# The fields the worker writes (enricher.sink.ANOMALY_MAPPING, RESULTS_MAPPING).
LABEL = f"{ANOMALY}.label"
SCORE = f"{ANOMALY}.score"
GROUP_ID = f"{ANOMALY}.group_id"
ANOMALOUS = "anomalous"
RESULTS_TIME_FIELD = "start"  # event time of a sequence's first line, comparable with the logs' time

DEFAULT_SPLIT_FIELD = "component"


@dataclass(frozen=True)
class DashboardConfig:
    """The index and field names the saved objects are built for.

    logs_index: index pattern of the log documents (source.index; a comma-separated list works).
    timestamp_field: their event-time field (source.timestamp_field).
    message_field: their message field (source.message_field).
    results_index: the worker's per-sequence results index (sink.results_index).
    split_field: keyword field that splits anomalies by host or component (grouping.partition_field
        when set, else `component`); documents without it show as their own "missing" bucket.
    """

    logs_index: str = "logs-*"
    timestamp_field: str = "@timestamp"
    message_field: str = "message"
    results_index: str = "logllm-results"
    split_field: str = DEFAULT_SPLIT_FIELD
    top_groups: int = 20
    split_terms: int = 20
    score_interval: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings, split_field: str | None = None) -> DashboardConfig:
        """The configuration for a worker's settings; `split_field` overrides the default."""
        return cls(
            logs_index=settings.source.index,
            timestamp_field=settings.source.timestamp_field,
            message_field=settings.source.message_field,
            results_index=settings.sink.results_index,
            split_field=split_field or settings.grouping.partition_field or DEFAULT_SPLIT_FIELD,
        )

    def index_title(self, role: IndexRole) -> str:
        """The index pattern title Dashboards searches for `role`."""
        return self.logs_index if role == "logs" else self.results_index

    def time_field(self, role: IndexRole) -> str:
        """The time field of the index pattern for `role` (the time picker filters on it)."""
        return self.timestamp_field if role == "logs" else RESULTS_TIME_FIELD


# ---------------------------------------------------------------------------------------------
# Filters (applied to a panel's search, as in Dashboards' filter bar).


@dataclass(frozen=True)
class PhraseFilter:
    """Documents whose `field` equals `value`."""

    field: str
    value: str


@dataclass(frozen=True)
class ExistsFilter:
    """Documents that have a value in `field`."""

    field: str


Filter = PhraseFilter | ExistsFilter


# ---------------------------------------------------------------------------------------------
# Aggregations.

MetricType = Literal["count", "max", "min"]
BucketSchema = Literal["segment", "group", "bucket"]
"""segment: x axis of a chart; group: split series of a chart; bucket: split rows of a table."""


@dataclass(frozen=True)
class Metric:
    """A value per bucket: the document count, or the max/min of `field`."""

    id: str
    type: MetricType
    field: str | None = None
    label: str = ""


@dataclass(frozen=True)
class DateHistogram:
    """Buckets of event time; "auto" lets Dashboards pick the interval from the time range."""

    id: str
    schema: BucketSchema
    field: str
    interval: str = "auto"
    label: str = ""


@dataclass(frozen=True)
class Terms:
    """The `size` most frequent values of `field`, ordered by metric `order_by` (descending).

    missing_bucket: documents without the field form their own bucket (labelled `missing_label`)
    instead of disappearing from the panel.
    """

    id: str
    schema: BucketSchema
    field: str
    size: int
    order_by: str
    missing_bucket: bool = False
    missing_label: str = "Missing"
    label: str = ""


@dataclass(frozen=True)
class Histogram:
    """Fixed-width numeric buckets of `field` from `minimum` to `maximum`, empty ones included."""

    id: str
    schema: BucketSchema
    field: str
    interval: float
    minimum: float
    maximum: float
    label: str = ""


Bucket = DateHistogram | Terms | Histogram

ChartKind = Literal["histogram", "table", "markdown"]


@dataclass(frozen=True)
class Chart:
    """One visualization panel.

    kind: histogram (vertical bars), table (data table) or markdown (text only, no search).
    buckets nest in the order given (the first is the outermost); metrics are computed in the
    innermost bucket. percentage: bars show each series' share of its x bucket (stacked to 100 %).
    """

    key: str
    title: str
    description: str
    kind: ChartKind
    index: IndexRole | None
    metrics: tuple[Metric, ...] = ()
    buckets: tuple[Bucket, ...] = ()
    filters: tuple[Filter, ...] = ()
    percentage: bool = False
    markdown: str = ""

    def metric(self, metric_id: str) -> Metric:
        """The metric with id `metric_id`.

        Raises:
            KeyError: no such metric (a definition error).
        """
        for metric in self.metrics:
            if metric.id == metric_id:
                return metric
        raise KeyError(f"{self.key}: no metric {metric_id!r}")


@dataclass(frozen=True)
class SavedSearch:
    """A Discover search: matching documents as rows of `columns`, newest first."""

    key: str
    title: str
    description: str
    index: IndexRole
    columns: tuple[str, ...]
    sort_field: str
    filters: tuple[Filter, ...] = ()
    sort_order: Literal["asc", "desc"] = "desc"


@dataclass(frozen=True)
class Panel:
    """A chart or saved search placed on the dashboard grid (48 columns wide)."""

    item: Chart | SavedSearch
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Dashboard:
    key: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def fields_used(item: Chart | SavedSearch) -> set[str]:
    """Every document field a panel reads (filters, aggregations, columns, sort)."""
    fields = {f.field for f in item.filters}
    if isinstance(item, SavedSearch):
        return fields | set(item.columns) | {item.sort_field}
    fields |= {metric.field for metric in item.metrics if metric.field is not None}
    return fields | {bucket.field for bucket in item.buckets}


# ---------------------------------------------------------------------------------------------
# The dashboard.

_ANOMALOUS_ONLY = (PhraseFilter(LABEL, ANOMALOUS),)
_LABELLED_ONLY = (ExistsFilter(LABEL),)


def anomalies_over_time(config: DashboardConfig) -> Chart:
    return Chart(
        key="anomalies-over-time",
        title="[LogLLM] Anomalous log lines over time",
        description=f"Log lines labelled anomalous per time bucket, stacked by {config.split_field}.",
        kind="histogram",
        index="logs",
        metrics=(Metric("1", "count", label="Anomalous lines"),),
        buckets=(
            DateHistogram("2", "segment", config.timestamp_field),
            Terms("3", "group", config.split_field, 10, "1", missing_bucket=True, missing_label=f"(no {config.split_field})"),
        ),
        filters=_ANOMALOUS_ONLY,
    )


def anomaly_rate_by_split(config: DashboardConfig) -> Chart:
    return Chart(
        key="anomaly-rate-by-split",
        title=f"[LogLLM] Anomaly rate by {config.split_field}",
        description=f"Share of labelled log lines that are anomalous, per {config.split_field} "
        f"(the {config.split_terms} with the most labelled lines).",
        kind="histogram",
        index="logs",
        metrics=(Metric("1", "count", label="Labelled lines"),),
        buckets=(
            Terms(
                "2",
                "segment",
                config.split_field,
                config.split_terms,
                "1",
                missing_bucket=True,
                missing_label=f"(no {config.split_field})",
            ),
            Terms("3", "group", LABEL, 2, "1", label="Label"),
        ),
        filters=_LABELLED_ONLY,
        percentage=True,
    )


def top_groups(config: DashboardConfig) -> Chart:
    return Chart(
        key="top-anomalous-groups",
        title="[LogLLM] Top anomalous sequences",
        description="Sequences with anomalous lines, highest score first. Filter on a group id (the + next to it) "
        "to list that sequence's lines in the search panel.",
        kind="table",
        index="logs",
        metrics=(
            Metric("1", "max", SCORE, "Score"),
            Metric("2", "count", label="Anomalous lines"),
            Metric("3", "min", config.timestamp_field, "First line"),
            Metric("4", "max", config.timestamp_field, "Last line"),
        ),
        buckets=(Terms("5", "bucket", GROUP_ID, config.top_groups, "1", label="Sequence (group id)"),),
        filters=_ANOMALOUS_ONLY,
    )


def score_distribution(config: DashboardConfig) -> Chart:
    return Chart(
        key="score-distribution",
        title="[LogLLM] Anomaly score distribution",
        description="Scored sequences per score bucket, stacked by label.",
        kind="histogram",
        index="results",
        metrics=(Metric("1", "count", label="Sequences"),),
        buckets=(
            Histogram("2", "segment", "score", config.score_interval, 0.0, 1.0, label="Score"),
            Terms("3", "group", "label", 2, "1", label="Label"),
        ),
    )


def anomalous_lines(config: DashboardConfig) -> SavedSearch:
    return SavedSearch(
        key="anomalous-lines",
        title="[LogLLM] Anomalous log lines",
        description="Log lines labelled anomalous, newest first, with their score and sequence.",
        index="logs",
        columns=(config.message_field, SCORE, GROUP_ID, config.split_field),
        sort_field=config.timestamp_field,
        filters=_ANOMALOUS_ONLY,
    )


def how_to_read(config: DashboardConfig) -> Chart:
    return Chart(
        key="how-to-read",
        title="[LogLLM] How to read this dashboard",
        description="",
        kind="markdown",
        index=None,
        markdown=(
            "**LogLLM anomalies.** The worker labels every scored log line `anomaly.label` = normal or "
            "anomalous and groups lines into sequences (`anomaly.group_id`).\n\n"
            "To see the lines of a sequence, click **+** (filter for value) next to its group id in "
            "*Top anomalous sequences*: the *Anomalous log lines* panel below then lists that sequence only. "
            f"Remove the filter to go back. Split field: `{config.split_field}`; logs: `{config.logs_index}`; "
            f"sequences: `{config.results_index}`."
        ),
    )


def build_dashboard(config: DashboardConfig) -> Dashboard:
    """The LogLLM anomalies dashboard for `config`: every panel with its place on the grid."""
    return Dashboard(
        key="anomalies",
        title=f"[LogLLM] Anomalies ({config.logs_index})",
        description="Anomaly labels written by the LogLLM enrichment worker.",
        panels=(
            Panel(how_to_read(config), 0, 0, 48, 6),
            Panel(anomalies_over_time(config), 0, 6, 24, 15),
            Panel(anomaly_rate_by_split(config), 24, 6, 24, 15),
            Panel(top_groups(config), 0, 21, 24, 15),
            Panel(score_distribution(config), 24, 21, 24, 15),
            Panel(anomalous_lines(config), 0, 36, 48, 20),
        ),
    )
