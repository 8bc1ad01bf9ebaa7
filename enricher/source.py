"""Reading log documents from OpenSearch in cursor order: point in time + `search_after`.

    resolve indices -> open PIT -> pages sorted by (timestamp, _index, tiebreaker) -> close PIT

The sort key is made of stored values, not `_shard_doc`, so a position stays meaningful across
PITs, restarts and node restarts: the durable cursor is just a position. A PIT that disappears
mid-read (node restart, keep-alive lapse) is reopened and reading continues after the last
position. Clusters without PIT (OpenSearch < 2.4) are read with plain `search_after`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError

from enricher.client import Retrier, cluster_address
from enricher.grouping import field_value
from enricher.interfaces import Survey
from enricher.settings import SourceSettings, env_name
from enricher.types import DocRef, LogDoc, Position
from model.errors import UserError

log = logging.getLogger(__name__)

DATE_TYPES = frozenset({"date", "date_nanos"})
TEXT_TYPES = frozenset({"text", "keyword", "match_only_text", "wildcard", "constant_keyword"})
SORTABLE_TYPES = frozenset(
    {"keyword", "long", "integer", "short", "byte", "unsigned_long", "double", "float", "date", "date_nanos"}
)
# Fields the worker writes on every source document it handles.
LABEL_FIELD = "anomaly.label"
DEAD_LETTER_FIELD = "anomaly.dead_letter"


def mapped_fields(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a mapping's `properties` into {dotted path: type}, multi-fields included."""
    fields: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            fields.update(mapped_fields(spec["properties"], f"{path}."))
        else:
            fields[path] = spec.get("type", "object")
        for sub, sub_spec in spec.get("fields", {}).items():
            fields[f"{path}.{sub}"] = sub_spec.get("type", "object")
    return fields


def check_field_types(settings: SourceSettings, key_fields: list[str], mappings: dict[str, dict[str, str]]) -> None:
    """Check the configured fields against the mappings of the source indices ({index: fields}).

    Raises:
        UserError: a field is missing from every index or has a type it cannot serve as, naming
            the setting, the indices and the candidates to use instead.
    """
    indices = ", ".join(sorted(mappings)) or "(none)"

    def candidates(types: frozenset[str]) -> str:
        names = sorted({f for fields in mappings.values() for f, t in fields.items() if t in types})
        return ", ".join(names[:10]) or "none"

    def check(setting: str, field: str, allowed: frozenset[str], what: str) -> None:
        types = {index: fields[field] for index, fields in mappings.items() if field in fields}
        if not types:
            raise UserError(
                f"{env_name(('source', setting))}={field!r}: no such field in {indices}; "
                f"set it to the {what} field (candidates: {candidates(allowed)})"
            )
        wrong = {index: kind for index, kind in types.items() if kind not in allowed}
        if wrong:
            index, kind = next(iter(sorted(wrong.items())))
            raise UserError(
                f"{env_name(('source', setting))}={field!r} is mapped as {kind} in {index}; it must be a "
                f"{what} field ({'/'.join(sorted(allowed))}); candidates: {candidates(allowed)}"
            )

    check("timestamp_field", settings.timestamp_field, DATE_TYPES, "date")
    check("message_field", settings.message_field, TEXT_TYPES, "text or keyword")
    if settings.tiebreaker_field != "_id":
        check("tiebreaker_field", settings.tiebreaker_field, SORTABLE_TYPES, "unique keyword or numeric")
    all_types = frozenset(t for fields in mappings.values() for t in fields.values())
    for field in key_fields:
        if not any(field in fields for fields in mappings.values()):
            raise UserError(
                f"grouping field {field!r} (LOGLLM_GROUPING__SESSION_FIELD or __PARTITION_FIELD): no such field "
                f"in {indices}; candidates: {candidates(all_types & frozenset({'keyword', 'long', 'integer'}))}"
            )


def restricted(query: dict[str, Any], source_query: dict[str, Any] | None) -> dict[str, Any]:
    """`query` limited to the documents `source.query` selects (unchanged without one)."""
    return query if source_query is None else {"bool": {"filter": [query, source_query]}}


def resolved_indices(resolved: dict[str, Any]) -> list[str]:
    """The concrete open indices in a `_resolve/index` answer: matched indices, the indices behind
    matched aliases, and the backing indices of matched data streams."""
    names = {entry["name"] for entry in resolved.get("indices", []) if "closed" not in entry.get("attributes", [])}
    for alias in resolved.get("aliases", []):
        names.update(alias.get("indices", []))
    for stream in resolved.get("data_streams", []):
        names.update(stream.get("backing_indices", []))
    return sorted(names)


def supports_pit(info: dict[str, Any]) -> bool:
    """Whether a cluster (its `GET /` answer) has the point-in-time API: OpenSearch >= 2.4."""
    version = info.get("version", {})
    if version.get("distribution") != "opensearch":
        return False
    try:
        major, minor = (int(part) for part in str(version.get("number", "0.0")).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 4)


class OpenSearchSource:
    """`Source` over an index pattern of an OpenSearch cluster."""

    def __init__(
        self, client: OpenSearch, settings: SourceSettings, key_fields: list[str], retrier: Retrier
    ) -> None:
        self.client = client
        self.settings = settings
        self.key_fields = key_fields
        self.retrier = retrier
        self.use_pit = True

    # -- preparation ---------------------------------------------------------------------------

    def indices(self) -> list[str]:
        """Concrete open indices the pattern, alias or data stream names now (empty: none yet)."""
        resolved = self.retrier.call(
            "resolve source indices", lambda: self.client.indices.resolve_index(name=self.settings.index)
        )
        return resolved_indices(resolved)

    def check(self) -> list[str]:
        """Check the cluster and the source mappings; returns the source indices.

        Raises:
            UserError: a concrete index name does not exist, or a configured field is missing or
                of the wrong type (see `check_field_types`).
        """
        info = self.retrier.call(f"cluster info from {cluster_address(self.client)}", self.client.info)
        self.use_pit = supports_pit(info)
        if not self.use_pit:
            log.info("cluster %s has no point-in-time API; reading with plain search_after", info.get("version"))
        indices = self.indices()
        if not indices:
            if not any(char in self.settings.index for char in "*?,"):
                raise UserError(
                    f"{env_name(('source', 'index'))}={self.settings.index!r}: no such index; check the name "
                    "(a pattern such as logs-* waits for indices to appear)"
                )
            log.warning("no index matches %r yet; passes read nothing until one appears", self.settings.index)
            return []
        found = self.retrier.call("read source mappings", lambda: self.client.indices.get_mapping(index=indices))
        mappings = {
            index: mapped_fields(body.get("mappings", {}).get("properties", {})) for index, body in found.items()
        }
        check_field_types(self.settings, self.key_fields, mappings)
        if self.settings.query is not None:
            self._check_query(indices)
        return indices

    def _check_query(self, indices: list[str]) -> None:
        checked = self.retrier.call(
            "validate source.query",
            lambda: self.client.indices.validate_query(
                index=indices, body={"query": self.settings.query}, params={"explain": "true"}
            ),
        )
        if not checked.get("valid"):
            reasons = "; ".join(sorted({e.get("error", "?") for e in checked.get("explanations", [])})) or "invalid"
            raise UserError(
                f"{env_name(('source', 'query'))}={json.dumps(self.settings.query)}: the cluster rejects it ({reasons}); "
                "fix the query clause"
            )

    # -- reading -------------------------------------------------------------------------------

    def _sort(self) -> list[dict[str, Any]]:
        return [
            {self.settings.timestamp_field: {"order": "asc", "numeric_type": "date"}},
            {"_index": "asc"},
            {self.settings.tiebreaker_field: "asc"},
        ]

    def _source_fields(self) -> list[str]:
        return [self.settings.timestamp_field, self.settings.message_field, *self.key_fields]

    def _doc(self, hit: dict[str, Any], previous: Position | None, timestamp_ms: int | None) -> LogDoc:
        source = hit.get("_source", {})
        return LogDoc(
            ref=DocRef(hit["_index"], hit["_id"]),
            position=tuple(hit["sort"]),
            previous=previous,
            timestamp_ms=timestamp_ms,
            message=field_value(source, self.settings.message_field),
            fields={name: field_value(source, name) for name in (*self.key_fields, self.settings.timestamp_field)},
        )

    def read(
        self,
        after: Position | None,
        before_ms: int,
        not_before_ms: int | None = None,
        slice_of: tuple[int, int] | None = None,
    ) -> Iterator[list[LogDoc]]:
        """`Source.read`; with `slice_of=(id, max)` only that PIT slice of the documents (in the
        same order; `previous` then chains within the slice). Slices need the PIT API."""
        if not self.indices():
            return
        bounds: dict[str, Any] = {"lt": before_ms, "format": "epoch_millis"}
        if not_before_ms is not None:
            bounds["gte"] = not_before_ms
        body: dict[str, Any] = {
            "size": self.settings.page_size,
            "sort": self._sort(),
            "query": restricted({"range": {self.settings.timestamp_field: bounds}}, self.settings.query),
            "_source": self._source_fields(),
            "track_total_hits": False,
        }
        if slice_of is not None:
            if not self.use_pit:
                raise ValueError("sliced reads need the point-in-time API; read with slice_of=None")
            body["slice"] = {"id": slice_of[0], "max": slice_of[1]}
        pages = _PitPages(self, body) if self.use_pit else _PlainPages(self, body)
        previous = after
        try:
            while True:
                hits = pages.next_page(previous)
                if not hits:
                    return
                page = []
                for hit in hits:
                    doc = self._doc(hit, previous, int(hit["sort"][0]))
                    page.append(doc)
                    previous = doc.position
                yield page
                if len(hits) < self.settings.page_size:
                    return
        finally:
            pages.close()

    def read_unpositioned(self) -> Iterator[list[LogDoc]]:
        if not self.indices():
            return
        body: dict[str, Any] = {
            "size": self.settings.page_size,
            "sort": [{"_index": "asc"}, {self.settings.tiebreaker_field: "asc"}],
            "query": restricted(
                {
                    "bool": {
                        "must_not": [
                            {"exists": {"field": self.settings.timestamp_field}},
                            {"exists": {"field": DEAD_LETTER_FIELD}},
                        ]
                    }
                },
                self.settings.query,
            ),
            "_source": self._source_fields(),
            "track_total_hits": False,
        }
        pages = _PlainPages(self, body)
        after: Position | None = None
        while True:
            hits = pages.next_page(after)
            if not hits:
                return
            yield [self._doc(hit, None, None) for hit in hits]
            after = tuple(hits[-1]["sort"])
            if len(hits) < self.settings.page_size:
                return

    def survey(self, cursor_ms: int | None, now_ms: int) -> Survey:
        if not self.indices():
            return Survey(None, 0, 0)
        ts = self.settings.timestamp_field
        newest = self._search(
            {"size": 0, "query": self.settings.query or {"match_all": {}}, "aggs": {"newest": {"max": {"field": ts}}}},
            "newest document",
        )
        newest_value = newest["aggregations"]["newest"]["value"]
        late = 0
        if cursor_ms is not None and self.settings.late_check_window_s > 0:
            late = self.unlabelled_before(cursor_ms, cursor_ms - round(self.settings.late_check_window_s * 1000))
        horizon = now_ms + round(self.settings.future_skew_s * 1000)
        future = self._count({"range": {ts: {"gt": horizon, "format": "epoch_millis"}}})
        return Survey(int(newest_value) if newest_value is not None else None, late, future)

    def unlabelled_before(self, cursor_ms: int, since_ms: int | None) -> int:
        """Documents stamped in [since_ms, cursor_ms) (no lower bound: None) that carry neither a
        label nor a dead-letter mark."""
        stamped: dict[str, Any] = {"lt": cursor_ms, "format": "epoch_millis"}
        if since_ms is not None:
            stamped["gte"] = since_ms
        return self._count(
            {
                "bool": {
                    "filter": [{"range": {self.settings.timestamp_field: stamped}}],
                    "must_not": [{"exists": {"field": LABEL_FIELD}}, {"exists": {"field": DEAD_LETTER_FIELD}}],
                }
            }
        )

    def _search(self, body: dict[str, Any], what: str) -> dict[str, Any]:
        return self.retrier.call(
            f"search {self.settings.index} ({what})",
            lambda: self.client.search(
                index=self.settings.index, body=body, params={"allow_no_indices": "true", "ignore_unavailable": "true"}
            ),
        )

    def _count(self, query: dict[str, Any]) -> int:
        body = {"size": 0, "track_total_hits": True, "query": restricted(query, self.settings.query)}
        return int(self._search(body, "count")["hits"]["total"]["value"])


class _PlainPages:
    """Pages by `search_after` on the index pattern, each page a fresh view of the index."""

    def __init__(self, source: OpenSearchSource, body: dict[str, Any]) -> None:
        self.source = source
        self.body = body

    def next_page(self, after: Position | None) -> list[dict[str, Any]]:
        body = dict(self.body)
        if after is not None:
            body["search_after"] = list(after)
        return self.source._search(body, "page")["hits"]["hits"]

    def close(self) -> None:
        """Nothing to release."""


class _PitPages:
    """Pages by `search_after` inside a point in time; reopens the PIT if the cluster lost it."""

    def __init__(self, source: OpenSearchSource, body: dict[str, Any]) -> None:
        self.source = source
        self.body = body
        self.pit_id: str | None = None

    def _open(self) -> str:
        settings = self.source.settings
        response = self.source.retrier.call(
            f"open point in time on {settings.index}",
            lambda: self.source.client.create_pit(
                index=settings.index,
                params={"keep_alive": settings.pit_keep_alive, "expand_wildcards": "open"},
            ),
        )
        return str(response["pit_id"])

    def next_page(self, after: Position | None) -> list[dict[str, Any]]:
        try:
            return self._search(after)
        except NotFoundError as error:
            # The PIT is gone (node restart, keep-alive lapsed). Positions are stored values, so
            # a new PIT continues exactly after `after`.
            log.warning("point in time lost (%s); reopening", error.error)
            self.pit_id = None
            return self._search(after)

    def _search(self, after: Position | None) -> list[dict[str, Any]]:
        if self.pit_id is None:
            self.pit_id = self._open()
        body = dict(self.body)
        body["pit"] = {"id": self.pit_id, "keep_alive": self.source.settings.pit_keep_alive}
        if after is not None:
            body["search_after"] = list(after)
        response = self.source.retrier.call("search page", lambda: self.source.client.search(body=body))
        self.pit_id = response.get("pit_id", self.pit_id)
        return response["hits"]["hits"]

    def close(self) -> None:
        if self.pit_id is None:
            return
        try:
            self.source.client.delete_pit(body={"pit_id": [self.pit_id]})
        except Exception as error:  # the PIT expires by itself after its keep-alive
            log.debug("could not delete point in time: %s", error)
        self.pit_id = None
