"""Definitions -> OpenSearch Dashboards 2.x saved objects -> an `.ndjson` file for its import.

The format is the one Dashboards' own export writes (and its import reads): one JSON object per
line with `type`, `id`, `attributes`, `references` and `migrationVersion`. Nested documents that
Dashboards stores as strings (`visState`, `panelsJSON`, `searchSourceJSON`) are JSON strings, and
every link between objects is a named reference (`indexRefName`, `panelRefName`), never a raw id,
so Dashboards can check and remap them on import.

Ids are UUIDv5 of the object's kind, key and the index names it is built for: exporting the same
configuration again gives the same ids, so a re-import overwrites instead of duplicating, while a
configuration for other indices gets its own set of objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboards.definitions import (
    Chart,
    Dashboard,
    DashboardConfig,
    DateHistogram,
    Filter,
    Histogram,
    IndexRole,
    Metric,
    PhraseFilter,
    SavedSearch,
    Terms,
    build_dashboard,
)

# Fixed namespace of this product's saved-object ids (any constant UUID; never change it, or
# re-imports would duplicate every object).
ID_NAMESPACE = uuid.UUID("6f0c0b7e-3f57-4c1e-9d0a-4c6c6f676c6d")
# The newest migration of each type in Dashboards 2.x: objects stamped with it are stored as they
# are, instead of being passed through migrations written for older shapes.
MIGRATION_VERSIONS = {"index-pattern": "7.6.0", "visualization": "7.10.0", "search": "7.9.3", "dashboard": "7.9.3"}
# Panel shape version; >= 7.3 tells Dashboards the panel needs no legacy panel migration.
PANEL_VERSION = "7.10.2"
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
EMPTY_QUERY = {"query": "", "language": "kuery"}


def _compact(value: Any) -> str:
    """A nested document as Dashboards stores it: a compact JSON string."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Reference:
    name: str
    type: str
    id: str


@dataclass(frozen=True)
class SavedObject:
    type: str
    id: str
    attributes: dict[str, Any]
    references: tuple[Reference, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The object as Dashboards' export writes it."""
        return {
            "type": self.type,
            "id": self.id,
            "attributes": self.attributes,
            "references": [{"name": r.name, "type": r.type, "id": r.id} for r in self.references],
            "migrationVersion": {self.type: MIGRATION_VERSIONS[self.type]},
        }


def object_id(kind: str, key: str, config: DashboardConfig) -> str:
    """The stable id of one object of a configuration (index patterns: per title only)."""
    if kind == "index-pattern":
        name = f"{kind}\x1f{key}"
    else:
        name = f"{kind}\x1f{key}\x1f{config.logs_index}\x1f{config.results_index}"
    return str(uuid.uuid5(ID_NAMESPACE, name))


def index_pattern_id(role: IndexRole, config: DashboardConfig) -> str:
    return object_id("index-pattern", config.index_title(role), config)


# ---------------------------------------------------------------------------------------------
# Pieces shared with dashboards.queries.


def filter_query(flt: Filter) -> dict[str, Any]:
    """The OpenSearch query clause of a filter (what Dashboards sends for it)."""
    if isinstance(flt, PhraseFilter):
        return {"match_phrase": {flt.field: flt.value}}
    return {"exists": {"field": flt.field}}


def _filter_object(flt: Filter, position: int, pattern_id: str) -> tuple[dict[str, Any], Reference]:
    """A filter as Dashboards stores it in searchSourceJSON, and the reference to its index pattern."""
    ref_name = f"kibanaSavedObjectMeta.searchSourceJSON.filter[{position}].meta.index"
    meta: dict[str, Any] = {"alias": None, "negate": False, "disabled": False, "key": flt.field, "indexRefName": ref_name}
    if isinstance(flt, PhraseFilter):
        meta |= {"type": "phrase", "params": {"query": flt.value}}
    else:
        meta |= {"type": "exists", "value": "exists"}
    stored = {"meta": meta, **filter_query(flt), "$state": {"store": "appState"}}
    return stored, Reference(ref_name, "index-pattern", pattern_id)


def _search_source(
    role: IndexRole | None, filters: Sequence[Filter], config: DashboardConfig, **extra: Any
) -> tuple[str, tuple[Reference, ...]]:
    """searchSourceJSON and its references: the index pattern, then one per filter."""
    if role is None:
        return _compact({"query": EMPTY_QUERY, "filter": []}), ()
    pattern = index_pattern_id(role, config)
    source: dict[str, Any] = {"query": EMPTY_QUERY, "filter": [], **extra, "indexRefName": INDEX_REF}
    references = [Reference(INDEX_REF, "index-pattern", pattern)]
    for position, flt in enumerate(filters):
        stored, reference = _filter_object(flt, position, pattern)
        source["filter"].append(stored)
        references.append(reference)
    return _compact(source), tuple(references)


# ---------------------------------------------------------------------------------------------
# Index patterns.


def index_pattern(role: IndexRole, config: DashboardConfig) -> SavedObject:
    """The index pattern for `role`. Its field list is left out on purpose: Dashboards reads it
    from the cluster's mapping on first use, so it always matches the user's real fields."""
    return SavedObject(
        "index-pattern",
        index_pattern_id(role, config),
        {"title": config.index_title(role), "timeFieldName": config.time_field(role)},
    )


# ---------------------------------------------------------------------------------------------
# Visualizations.


def _metric_agg(metric: Metric) -> dict[str, Any]:
    params: dict[str, Any] = {} if metric.field is None else {"field": metric.field}
    if metric.label:
        params["customLabel"] = metric.label
    return {"id": metric.id, "enabled": True, "type": metric.type, "schema": "metric", "params": params}


def _bucket_agg(bucket: DateHistogram | Terms | Histogram) -> dict[str, Any]:
    params: dict[str, Any]
    if isinstance(bucket, DateHistogram):
        kind = "date_histogram"
        params = {
            "field": bucket.field,
            "useNormalizedOpenSearchInterval": True,
            "scaleMetricValues": False,
            "interval": bucket.interval,
            "drop_partials": False,
            "min_doc_count": 1,
            "extended_bounds": {},
        }
    elif isinstance(bucket, Terms):
        kind = "terms"
        params = {
            "field": bucket.field,
            "orderBy": bucket.order_by,
            "order": "desc",
            "size": bucket.size,
            "otherBucket": False,
            "otherBucketLabel": "Other",
            "missingBucket": bucket.missing_bucket,
            "missingBucketLabel": bucket.missing_label,
        }
    else:
        kind = "histogram"
        params = {
            "field": bucket.field,
            "interval": bucket.interval,
            "min_doc_count": True,  # "show empty buckets"
            "has_extended_bounds": True,
            "extended_bounds": {"min": bucket.minimum, "max": bucket.maximum},
        }
    if bucket.label:
        params["customLabel"] = bucket.label
    return {"id": bucket.id, "enabled": True, "type": kind, "schema": bucket.schema, "params": params}


def _bar_params(chart: Chart) -> dict[str, Any]:
    """Vertical-bar parameters (complete: Dashboards fills in missing top-level keys only)."""
    first = chart.metrics[0]
    value_title = "Share of lines" if chart.percentage else (first.label or "Count")
    return {
        "type": "histogram",
        "grid": {"categoryLines": False},
        "categoryAxes": [
            {
                "id": "CategoryAxis-1",
                "type": "category",
                "position": "bottom",
                "show": True,
                "style": {},
                "scale": {"type": "linear"},
                "labels": {"show": True, "filter": True, "truncate": 100},
                "title": {},
            }
        ],
        "valueAxes": [
            {
                "id": "ValueAxis-1",
                "name": "LeftAxis-1",
                "type": "value",
                "position": "left",
                "show": True,
                "style": {},
                "scale": {"type": "linear", "mode": "percentage" if chart.percentage else "normal"},
                "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                "title": {"text": value_title},
            }
        ],
        "seriesParams": [
            {
                "show": True,
                "type": "histogram",
                "mode": "stacked",
                "data": {"label": first.label or "Count", "id": first.id},
                "valueAxis": "ValueAxis-1",
                "drawLinesBetweenPoints": True,
                "lineWidth": 2,
                "showCircles": True,
            }
        ],
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
    }


_TABLE_PARAMS = {
    "perPage": 10,
    "showPartialRows": False,
    "showMetricsAtAllLevels": False,
    "sort": {"columnIndex": None, "direction": None},
    "showTotal": False,
    "totalFunc": "sum",
    "percentageCol": "",
}


def vis_state(chart: Chart) -> dict[str, Any]:
    """The `visState` document of a chart (stored as a JSON string)."""
    if chart.kind == "markdown":
        params: dict[str, Any] = {"fontSize": 12, "openLinksInNewTab": False, "markdown": chart.markdown}
    elif chart.kind == "table":
        params = dict(_TABLE_PARAMS)
    else:
        params = _bar_params(chart)
    aggs = [_metric_agg(m) for m in chart.metrics] + [_bucket_agg(b) for b in chart.buckets]
    return {"title": chart.title, "type": chart.kind, "aggs": aggs, "params": params}


def visualization(chart: Chart, config: DashboardConfig) -> SavedObject:
    source, references = _search_source(chart.index, chart.filters, config)
    return SavedObject(
        "visualization",
        object_id("visualization", chart.key, config),
        {
            "title": chart.title,
            "visState": _compact(vis_state(chart)),
            "uiStateJSON": "{}",
            "description": chart.description,
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": source},
        },
        references,
    )


def saved_search(search: SavedSearch, config: DashboardConfig) -> SavedObject:
    source, references = _search_source(search.index, search.filters, config, highlightAll=True, version=True)
    return SavedObject(
        "search",
        object_id("search", search.key, config),
        {
            "title": search.title,
            "description": search.description,
            "hits": 0,
            "columns": list(search.columns),
            "sort": [[search.sort_field, search.sort_order]],
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": source},
        },
        references,
    )


def _item_object(item: Chart | SavedSearch, config: DashboardConfig) -> SavedObject:
    return visualization(item, config) if isinstance(item, Chart) else saved_search(item, config)


def dashboard(board: Dashboard, config: DashboardConfig) -> SavedObject:
    panels = []
    references = []
    for number, panel in enumerate(board.panels):
        ref_name = f"panel_{number}"
        target = _item_object(panel.item, config)
        panel_index = str(number + 1)
        panels.append(
            {
                "version": PANEL_VERSION,
                "gridData": {"x": panel.x, "y": panel.y, "w": panel.w, "h": panel.h, "i": panel_index},
                "panelIndex": panel_index,
                "embeddableConfig": {},
                "panelRefName": ref_name,
            }
        )
        references.append(Reference(ref_name, target.type, target.id))
    return SavedObject(
        "dashboard",
        object_id("dashboard", board.key, config),
        {
            "title": board.title,
            "hits": 0,
            "description": board.description,
            "panelsJSON": _compact(panels),
            "optionsJSON": _compact({"hidePanelTitles": False, "useMargins": True}),
            "version": 1,
            "timeRestore": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _compact({"query": EMPTY_QUERY, "filter": []})},
        },
        tuple(references),
    )


# ---------------------------------------------------------------------------------------------
# The export.


def export_objects(config: DashboardConfig) -> list[SavedObject]:
    """Every saved object of the LogLLM dashboard, each after the objects it references."""
    board = build_dashboard(config)
    objects = [index_pattern("logs", config), index_pattern("results", config)]
    objects += [_item_object(panel.item, config) for panel in board.panels]
    objects.append(dashboard(board, config))
    return objects


def to_ndjson(objects: Sequence[SavedObject]) -> str:
    """One compact JSON object per line, newline-terminated, keys sorted (stable diffs)."""
    return "".join(json.dumps(obj.to_json(), sort_keys=True, separators=(",", ":")) + "\n" for obj in objects)


def export_ndjson(config: DashboardConfig) -> str:
    """The `.ndjson` file Dashboards' saved-objects import accepts, for `config`."""
    return to_ndjson(export_objects(config))
