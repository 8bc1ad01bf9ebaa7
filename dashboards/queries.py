"""Definitions -> the OpenSearch search request Dashboards sends for each panel.

This follows how Dashboards 2.x turns a standard visualization into a request: the panel's filters
(and the time picker's range on the index pattern's time field) in a `bool` filter; bucket
aggregations nested in the order they are listed, metrics inside the innermost bucket; terms
ordered by `_count` when the order metric is the count, else by the metric's id; a histogram
with "show empty buckets" as `min_doc_count: 0` plus `extended_bounds`. The integration tests run
these requests on a real node to check the numbers each panel shows, so a change to a definition
changes what they check.

Pure: builds request bodies, sends nothing.
"""

from __future__ import annotations

from typing import Any

from dashboards.definitions import (
    Bucket,
    Chart,
    DashboardConfig,
    DateHistogram,
    Filter,
    Histogram,
    IndexRole,
    SavedSearch,
    Terms,
)
from dashboards.saved_objects import filter_query

TimeRange = tuple[str, str]
"""(from, to) as the time picker gives them: ISO 8601 or date math such as "now-24h"."""

# What a terms aggregation's `missing` bucket is called in the response; Dashboards shows it
# with the Terms' missing_label.
MISSING_KEY = "__missing__"


def _query(
    filters: tuple[Filter, ...], config: DashboardConfig, role: IndexRole, time_range: TimeRange | None
) -> dict[str, Any]:
    clauses = [filter_query(flt) for flt in filters]
    if time_range is not None:
        start, end = time_range
        clauses.append(
            {"range": {config.time_field(role): {"gte": start, "lte": end, "format": "strict_date_optional_time"}}}
        )
    return {"bool": {"filter": clauses}}


def _bucket_request(bucket: Bucket, chart: Chart, auto_interval: str) -> dict[str, Any]:
    if isinstance(bucket, DateHistogram):
        interval = auto_interval if bucket.interval == "auto" else bucket.interval
        return {
            "date_histogram": {
                "field": bucket.field,
                "fixed_interval": interval,
                "time_zone": "UTC",
                "min_doc_count": 1,
            }
        }
    if isinstance(bucket, Terms):
        order_metric = chart.metric(bucket.order_by)
        order_key = "_count" if order_metric.type == "count" else order_metric.id
        body: dict[str, Any] = {"field": bucket.field, "size": bucket.size, "order": {order_key: "desc"}}
        if bucket.missing_bucket:
            body["missing"] = MISSING_KEY
        return {"terms": body}
    assert isinstance(bucket, Histogram)
    return {
        "histogram": {
            "field": bucket.field,
            "interval": bucket.interval,
            "min_doc_count": 0,
            "extended_bounds": {"min": bucket.minimum, "max": bucket.maximum},
        }
    }


def _metric_requests(chart: Chart) -> dict[str, Any]:
    # The count needs no aggregation: every bucket carries doc_count.
    return {metric.id: {metric.type: {"field": metric.field}} for metric in chart.metrics if metric.type != "count"}


def chart_request(
    chart: Chart, config: DashboardConfig, *, time_range: TimeRange | None = None, auto_interval: str = "1h"
) -> tuple[str, dict[str, Any]]:
    """(index, body) of the search behind `chart`.

    auto_interval: the interval a date histogram with interval "auto" gets (Dashboards derives it
    from the time range; the tests fix it).

    Raises:
        ValueError: the chart has no search (markdown).
    """
    if chart.index is None:
        raise ValueError(f"{chart.key}: a {chart.kind} panel runs no search")
    aggs: dict[str, Any] = _metric_requests(chart)
    for bucket in reversed(chart.buckets):
        request = _bucket_request(bucket, chart, auto_interval)
        if aggs:
            request["aggs"] = aggs
        aggs = {bucket.id: request}
    body = {"size": 0, "query": _query(chart.filters, config, chart.index, time_range), "aggs": aggs}
    return config.index_title(chart.index), body


def search_request(
    search: SavedSearch, config: DashboardConfig, *, time_range: TimeRange | None = None, size: int = 500
) -> tuple[str, dict[str, Any]]:
    """(index, body) of the search behind a saved search (Discover's default page: 500 rows)."""
    body = {
        "size": size,
        "track_total_hits": True,
        "query": _query(search.filters, config, search.index, time_range),
        "sort": [{search.sort_field: {"order": search.sort_order, "unmapped_type": "boolean"}}],
    }
    return config.index_title(search.index), body
