"""`logllm backfill`: label history with the live worker's own pipeline, not a second one.

    copy mode:     source --copy [start, end)--> dest   (server-side _reindex if the cluster has
                   it, else PIT slices read in parallel + _bulk create, same _id)
                   then label dest in place, as below
    --in-place:    label the source itself

    labelling: checkpoint backfill:<source>-><dest> -> Worker.run_once (the live worker's code:
    entries -> grouper -> detector -> sink -> checkpoint) over a source bounded to [start, end)
    whose pages come from N PIT slices read in parallel and merged back into cursor order

Why the slices merge before grouping: PIT slices split documents by a hash of their id, not by
session, so one HDFS block has lines in every slice. The grouper must see the documents in the
same total order (timestamp, index, tiebreaker) as the live worker to close the same groups
with the same members. Each slice is read sorted by that order, and a k-way merge restores it
exactly; slicing by session key instead is impossible in general (keys come from a regex over
the message, a line can name several sessions, and the local node has no scripting). So the
slices parallelise reading; grouping, scoring and writing are the live worker's, unchanged. A
resume is the worker's resume: positions are sort values, valid in every slice.

Copies get their labels from the copy (dest), so their group ids (which name the index of a
group's first document) differ from a live worker's on the source; label, score, members and
model version are the same. In place, everything is the same, group ids included.

The copy uses `op_type=create`: a rerun after a crash copies only what is missing and never
overwrites a copy that has its label already; copies leave out the source's own `anomaly`
fields (the backfill writes its own). `_reindex` cannot score, so labels always take the
client path.

Documents later than `end` (default: now minus `source.ingest_lag_s`) are not read; a session
that continues past `end` (or began before `start`) is scored with the part inside the range,
as a live worker started with `source.start_at` would.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from enricher.interfaces import SinkError, Survey
from enricher.pipeline import PassSummary, Prefetch
from enricher.settings import Settings, query_suffix
from enricher.source import OpenSearchSource, mapped_fields, resolved_indices, restricted
from enricher.types import LogDoc, Position
from model.errors import UserError

if TYPE_CHECKING:
    from opensearchpy import OpenSearch
    from tqdm import tqdm

    from enricher.client import Retrier
    from model.detector import Detector

log = logging.getLogger(__name__)

CopyChoice = Literal["auto", "server", "client"]
CopyMethod = Literal["server", "client"]
MAX_SLICES = 64
SLICE_PREFETCH_PAGES = 2
REINDEX_POLL_S = 2.0
EXCLUDED_FROM_COPY = ("anomaly",)


# ---------------------------------------------------------------------------------------------
# Pure decisions.


def backfill_checkpoint_id(source: str, dest: str | None, query: dict[str, Any] | None = None) -> str:
    """The checkpoint and lease name of a backfill: backfill:<source>-><dest>, or
    backfill:<source> in place, plus the digest of a `source.query`. Independent of the time
    range, so a rerun resumes."""
    target = f"backfill:{source}->{dest}" if dest is not None else f"backfill:{source}"
    return target + query_suffix(query)


def cluster_has_reindex(nodes_plugins: dict[str, Any]) -> bool:
    """Whether every node of a `GET _nodes/plugins` answer has the `reindex` module (or plugin)."""
    nodes = nodes_plugins.get("nodes", {})
    if not nodes:
        return False
    for node in nodes.values():
        names = {item.get("name") for item in (*node.get("modules", []), *node.get("plugins", []))}
        if "reindex" not in names:
            return False
    return True


def choose_copy_method(requested: CopyChoice, has_reindex: bool) -> CopyMethod:
    """`auto`: server-side `_reindex` when the cluster has it, else the client path.

    Raises:
        UserError: `server` was requested on a cluster without the reindex module.
    """
    if requested == "client":
        return "client"
    if requested == "server" and not has_reindex:
        raise UserError(
            "--copy server: this cluster has no reindex module (GET _nodes/plugins lists none); "
            "use --copy client or auto"
        )
    return "server" if has_reindex else "client"


def check_slices(slices: int) -> int:
    """Raises UserError unless 1 <= slices <= MAX_SLICES."""
    if not 1 <= slices <= MAX_SLICES:
        raise UserError(f"--slices {slices}: give a number from 1 to {MAX_SLICES} (about the source's shard count)")
    return slices


def check_names(source: str, dest: str | None, settings: Settings) -> None:
    """The destination must be one new name outside the source, and neither may take in the
    worker's own indices (or the backfill would read what it writes)."""
    import fnmatch

    patterns = [part.strip() for part in source.split(",") if part.strip() and not part.strip().startswith("-")]
    if dest is not None:
        if any(char in dest for char in "*?,"):
            raise UserError(f"--dest {dest!r}: give one index name, not a pattern")
        if any(fnmatch.fnmatchcase(dest, pattern) for pattern in patterns):
            raise UserError(f"--dest {dest!r} is matched by --source {source!r}; choose a destination outside it")
    own = {
        "sink.results_index": settings.sink.results_index,
        "sink.dead_letter_index": settings.sink.dead_letter_index,
        "state.index": settings.state.index,
    }
    for setting, name in own.items():
        if dest == name or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            raise UserError(f"--source {source!r} / --dest {dest!r} takes in {setting}={name!r}; rename one")


def parse_time(value: str | None, option: str) -> int | None:
    """An ISO 8601 time (UTC unless zoned) as epoch milliseconds; None stays None."""
    if value is None:
        return None
    from datetime import UTC

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r}: not an ISO 8601 time; write e.g. 2008-11-09T20:35:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def range_query(timestamp_field: str, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    """Documents with a timestamp in [start, end) (either bound optional)."""
    bounds: dict[str, Any] = {"format": "epoch_millis"}
    if start_ms is not None:
        bounds["gte"] = start_ms
    if end_ms is not None:
        bounds["lt"] = end_ms
    return {"range": {timestamp_field: bounds}}


def copy_query(timestamp_field: str, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    """What a copy takes: documents in [start, end), and those without a usable timestamp (the
    labelling pass dead-letters them on the copy, as the live worker does on the source)."""
    return {
        "bool": {
            "should": [
                range_query(timestamp_field, start_ms, end_ms),
                {"bool": {"must_not": [{"exists": {"field": timestamp_field}}]}},
            ],
            "minimum_should_match": 1,
        }
    }


def reindex_body(source: str, dest: str, query: dict[str, Any]) -> dict[str, Any]:
    """The `_reindex` request of a server-side copy: same ids, existing copies left alone."""
    return {
        "conflicts": "proceed",
        "source": {"index": source, "query": query, "_source": {"excludes": list(EXCLUDED_FROM_COPY)}},
        "dest": {"index": dest, "op_type": "create"},
    }


def merged_mapping(mappings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One mapping for the destination from the source indices' `properties` ({index: properties}).

    Raises:
        UserError: two source indices map a field differently (create the destination yourself).
    """
    properties: dict[str, Any] = {}
    for index, props in sorted(mappings.items()):
        for name, spec in props.items():
            if name in EXCLUDED_FROM_COPY:
                continue
            if name in properties and properties[name] != spec:
                raise UserError(
                    f"source indices map field {name!r} differently ({index}: {json.dumps(spec)}); create the "
                    "destination index with the mapping you want first, then rerun"
                )
            properties[name] = spec
    return {"properties": properties}


def merge_slices(slices: list[Iterator[LogDoc]], after: Position | None, page_size: int) -> Iterator[list[LogDoc]]:
    """Documents of several slices, each in position order, as pages in global position order.

    `previous` is re-chained over the merged order (the document read just before, `after` for
    the first), which is what lets the pipeline resume exactly before any document.
    """
    previous = after
    page: list[LogDoc] = []
    for doc in heapq.merge(*slices, key=lambda doc: doc.position):
        if doc.previous != previous:
            doc = replace(doc, previous=previous)
        page.append(doc)
        previous = doc.position
        if len(page) >= page_size:
            yield page
            page = []
    if page:
        yield page


# ---------------------------------------------------------------------------------------------
# The bounded, sliced source.


def _docs(pages: Prefetch) -> Iterator[LogDoc]:
    for page in pages:
        yield from page


class BackfillSource:
    """`Source` over an `OpenSearchSource`: reads stop at `end_ms` (the start is the worker's
    `source.start_at`), pages come from `slices` PIT slices read in parallel (one thread each)
    and merged into cursor order, and a progress bar counts the documents handed to the
    pipeline, its total from a count of the range."""

    def __init__(
        self,
        inner: OpenSearchSource,
        slices: int,
        end_ms: int | None,
        new_progress: Callable[[int, int], tqdm[Any]] | None = None,
    ) -> None:
        self.inner = inner
        self.slices = slices
        self.end_ms = end_ms
        self.new_progress = new_progress

    def read(self, after: Position | None, before_ms: int, not_before_ms: int | None = None) -> Iterator[list[LogDoc]]:
        before = before_ms if self.end_ms is None else min(before_ms, self.end_ms)
        slices = self.slices if self.inner.use_pit else 1
        if slices != self.slices:
            log.info("the cluster has no point-in-time API: reading with one slice")
        progress = None
        try:
            for page in self._pages(after, before, not_before_ms, slices):
                if progress is None and self.new_progress is not None:
                    done = self._count(not_before_ms, page[0].timestamp_ms)
                    progress = self.new_progress(done + self._count(page[0].timestamp_ms, before), done)
                if progress is not None:
                    progress.update(len(page))
                yield page
        finally:
            if progress is not None:
                progress.close()

    def _pages(
        self, after: Position | None, before_ms: int, not_before_ms: int | None, slices: int
    ) -> Iterator[list[LogDoc]]:
        if slices == 1:
            yield from self.inner.read(after, before_ms, not_before_ms)
            return
        readers = [
            Prefetch(self.inner.read(after, before_ms, not_before_ms, slice_of=(number, slices)), SLICE_PREFETCH_PAGES)
            for number in range(slices)
        ]
        try:
            yield from merge_slices([_docs(reader) for reader in readers], after, self.inner.settings.page_size)
        finally:
            for reader in readers:
                reader.close()

    def _count(self, start_ms: int | None, end_ms: int | None) -> int:
        query = restricted(range_query(self.inner.settings.timestamp_field, start_ms, end_ms), self.inner.settings.query)
        index = self.inner.settings.index
        found = self.inner.retrier.call(
            f"count {index}",
            lambda: self.inner.client.count(
                index=index, body={"query": query}, params={"allow_no_indices": "true", "ignore_unavailable": "true"}
            ),
        )
        return int(found["count"])

    def read_unpositioned(self) -> Iterator[list[LogDoc]]:
        return self.inner.read_unpositioned()

    def survey(self, cursor_ms: int | None, now_ms: int) -> Survey:
        return self.inner.survey(cursor_ms, now_ms)


# ---------------------------------------------------------------------------------------------
# Copying.


@dataclass
class CopyReport:
    """How the copy went: created copies, and copies a previous run had made already."""

    method: CopyMethod
    copied: int = 0
    already_present: int = 0
    seconds: float = 0.0


def prepare_dest(client: OpenSearch, retrier: Retrier, source: str, dest: str) -> None:
    """Create `dest` with the source indices' merged mapping, unless it exists (then its own
    mapping is what the worker checks)."""
    if retrier.call(f"check {dest}", lambda: client.indices.exists(index=dest)):
        return
    indices = resolved_indices(retrier.call("resolve source", lambda: client.indices.resolve_index(name=source)))
    if not indices:
        raise UserError(f"--source {source!r}: no such index; check the name")
    found = retrier.call("read source mappings", lambda: client.indices.get_mapping(index=indices))
    mapping = merged_mapping({index: body.get("mappings", {}).get("properties", {}) for index, body in found.items()})
    retrier.call(f"create {dest}", lambda: client.indices.create(index=dest, body={"mappings": mapping}))
    log.info("created %s with the mapping of %s (%d fields)", dest, source, len(mapped_fields(mapping["properties"])))


def copy_server_side(
    client: OpenSearch, retrier: Retrier, source: str, dest: str, query: dict[str, Any], slices: int
) -> CopyReport:
    """`_reindex` as a task (sliced), polled until done.

    Raises:
        SinkError: the task reports failures (quoted as evidence).
    """
    started = time.monotonic()
    params = {"wait_for_completion": "false", "slices": str(slices), "refresh": "true"}
    task = retrier.call(
        "start _reindex", lambda: client.reindex(body=reindex_body(source, dest, query), params=params)
    )["task"]
    while True:
        status = retrier.call("poll _reindex", lambda: client.tasks.get(task_id=task))
        if status.get("completed"):
            break
        time.sleep(REINDEX_POLL_S)
    response = status.get("response", {})
    failures = response.get("failures", []) or ([status["error"]] if "error" in status else [])
    if failures:
        raise SinkError(f"_reindex {source} -> {dest} failed: {json.dumps(failures[0])[:500]}", failures)
    return CopyReport(
        "server", int(response.get("created", 0)), int(response.get("version_conflicts", 0)), time.monotonic() - started
    )


def copy_client_side(
    source: OpenSearchSource, dest: str, query: dict[str, Any], slices: int, bulk_actions: int, progress: bool
) -> CopyReport:
    """Read the source in `slices` PIT slices in parallel (no order needed: each document is
    copied on its own) and `_bulk` create each into `dest` with the same _id; a progress bar
    (if `progress`) counts the documents.

    Raises:
        SinkError: the cluster refused copies for another reason than "already there".
    """
    from opensearchpy import helpers

    started = time.monotonic()
    report = CopyReport("client")
    lock = threading.Lock()
    errors: list[BaseException] = []
    slices = slices if source.use_pit else 1
    bar = None
    if progress:
        total = source.retrier.call(
            f"count {source.settings.index}",
            lambda: source.client.count(index=source.settings.index, body={"query": query}),
        )["count"]
        bar = _progress_bar(int(total), 0, "copy")

    def run(slice_of: tuple[int, int] | None) -> None:
        try:
            body: dict[str, Any] = {"query": query, "_source": {"excludes": list(EXCLUDED_FROM_COPY)}}
            if slice_of is not None:
                body["slice"] = {"id": slice_of[0], "max": slice_of[1]}
            hits = (
                _pit_hits(source, body)
                if source.use_pit
                else helpers.scan(source.client, query=body, index=source.settings.index, size=source.settings.page_size)
            )
            actions = (
                {"_op_type": "create", "_index": dest, "_id": hit["_id"], "_source": hit["_source"]} for hit in hits
            )
            for ok, item in helpers.streaming_bulk(
                source.client,
                actions,
                chunk_size=bulk_actions,
                raise_on_error=False,
                max_retries=8,
                initial_backoff=1,
                max_backoff=30,
            ):
                result = item["create"]
                with lock:
                    if bar is not None:
                        bar.update()
                    if ok:
                        report.copied += 1
                    elif result.get("status") == 409:
                        report.already_present += 1
                    else:
                        raise SinkError(f"copy into {dest} refused: {json.dumps(result)[:500]}", [item])
        except BaseException as error:  # handed to the calling thread
            errors.append(error)

    parts = [(number, slices) for number in range(slices)] if slices > 1 else [None]
    threads = [threading.Thread(target=run, args=(part,), name=f"copy-slice-{i}") for i, part in enumerate(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if bar is not None:
        bar.close()
    if errors:
        raise errors[0]
    source.retrier.call(f"refresh {dest}", lambda: source.client.indices.refresh(index=dest))
    report.seconds = time.monotonic() - started
    return report


def _pit_hits(source: OpenSearchSource, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every hit of `body` inside one point in time, paged by `search_after` on (index,
    tiebreaker): unique per document (OpenSearch 2.19 has no `_shard_doc` to sort on)."""
    settings = source.settings
    pit = source.retrier.call(
        f"open point in time on {settings.index}",
        lambda: source.client.create_pit(
            index=settings.index, params={"keep_alive": settings.pit_keep_alive, "expand_wildcards": "open"}
        ),
    )["pit_id"]
    order = [{"_index": "asc"}, {settings.tiebreaker_field: "asc"}]
    body = {**body, "size": settings.page_size, "sort": order, "track_total_hits": False}
    try:
        while True:
            page = {**body, "pit": {"id": pit, "keep_alive": settings.pit_keep_alive}}
            response = source.retrier.call("copy page", functools.partial(source.client.search, body=page))
            pit = response.get("pit_id", pit)
            hits = response["hits"]["hits"]
            yield from hits
            if len(hits) < settings.page_size:
                return
            body["search_after"] = hits[-1]["sort"]
    finally:
        try:
            source.client.delete_pit(body={"pit_id": [pit]})
        except Exception as error:  # it expires by itself after its keep-alive
            log.debug("could not delete point in time: %s", error)


# ---------------------------------------------------------------------------------------------
# The command's work.


@dataclass(frozen=True)
class BackfillRequest:
    """What to backfill: `dest` None means in place."""

    source: str
    dest: str | None
    slices: int = 1
    start_ms: int | None = None
    end_ms: int | None = None
    copy: CopyChoice = "auto"
    restart: bool = False
    lease_wait_s: float | None = None
    progress: bool = True


@dataclass
class BackfillReport:
    """What a backfill did; `logllm backfill` prints it as JSON."""

    checkpoint_id: str
    target: str
    slices: int
    copy: CopyReport | None
    labelling: PassSummary

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "target": self.target,
            "slices": self.slices,
            "copy": asdict(self.copy) if self.copy is not None else None,
            "labelling": self.labelling.to_json(),
        }


def _progress_bar(total: int, initial: int, what: str = "label") -> tqdm[Any]:
    from tqdm import tqdm

    # disable=None: silent when stderr is not a terminal.
    return tqdm(total=total, initial=initial, unit="doc", desc=what, file=sys.stderr, disable=None)


def labelling_settings(settings: Settings, request: BackfillRequest) -> Settings:
    """The worker settings of the labelling pass: the target index, the range start, the
    backfill's own checkpoint id."""
    from datetime import UTC

    start = datetime.fromtimestamp(request.start_ms / 1000, UTC) if request.start_ms is not None else None
    return settings.model_copy(
        update={
            "source": settings.source.model_copy(update={"index": request.dest or request.source, "start_at": start}),
            "state": settings.state.model_copy(
                update={"checkpoint_id": backfill_checkpoint_id(request.source, request.dest, settings.source.query)}
            ),
        }
    )


def run_backfill(settings: Settings, request: BackfillRequest, detector: Detector | None = None) -> BackfillReport:
    """Copy (unless in place), then label with the worker's pipeline; resumes from the
    backfill's checkpoint. `settings` give the cluster, grouping, scoring, sink and state.

    Raises:
        UserError: bad names or options, or the worker's configuration errors.
        SinkError: the cluster refused copies.
    """
    from enricher.checkpoint import checkpoint_doc_id
    from enricher.client import Retrier, build_client
    from enricher.service import checked_source, run_once

    check_slices(request.slices)
    check_names(request.source, request.dest, settings)
    if request.start_ms is not None and request.end_ms is not None and request.start_ms >= request.end_ms:
        raise UserError("--start must be before --end (the range is [start, end))")
    if request.end_ms is None:
        # Fixed now, so the copy and the labelling cover the same range.
        request = replace(request, end_ms=round((time.time() - settings.source.ingest_lag_s) * 1000))
    labelling = labelling_settings(settings, request)
    retrier = Retrier(settings.retry)
    client = build_client(settings.opensearch)
    copy_report = None
    try:
        if request.restart and client.indices.exists(index=settings.state.index):
            client.delete(index=settings.state.index, id=checkpoint_doc_id(labelling.checkpoint_id), params={"ignore": 404})
        if request.dest is not None:
            prepare_dest(client, retrier, request.source, request.dest)
            plugins = retrier.call("list node modules", lambda: client.nodes.info(metric="plugins"))
            method = choose_copy_method(request.copy, cluster_has_reindex(plugins))
            query = restricted(
                copy_query(settings.source.timestamp_field, request.start_ms, request.end_ms), settings.source.query
            )
            log.info("copying %s -> %s (%s side, %d slices)", request.source, request.dest, method, request.slices)
            if method == "server":
                copy_report = copy_server_side(client, retrier, request.source, request.dest, query, request.slices)
            else:
                reading = settings.model_copy(
                    update={"source": settings.source.model_copy(update={"index": request.source})}
                )
                _, reader = checked_source(reading, client, retrier)
                copy_report = copy_client_side(
                    reader, request.dest, query, request.slices, settings.sink.bulk_actions, request.progress
                )
            log.info("copy done: %s", asdict(copy_report))
    finally:
        client.close()

    def bounded(inner: OpenSearchSource) -> BackfillSource:
        return BackfillSource(
            inner,
            request.slices,
            request.end_ms,
            _progress_bar if request.progress else None,
        )

    summary = run_once(labelling, detector, lease_wait_s=request.lease_wait_s, wrap_source=bounded)
    return BackfillReport(labelling.checkpoint_id, request.dest or request.source, request.slices, copy_report, summary)


# ---------------------------------------------------------------------------------------------
# Command line.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm backfill`."""
    from pathlib import Path

    parser = subparsers.add_parser(
        "backfill",
        help="label historical documents with the worker's pipeline (copy to --dest, or --in-place)",
        description="Read history with PIT slices, group and score exactly like the live worker, and write "
        "labelled copies to --dest (or labels in place with --in-place). Resumable: rerun the same command "
        "after a crash. Prints a JSON summary.",
    )
    parser.add_argument("--source", required=True, help="index, pattern or alias to read")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--dest", help="index receiving labelled copies (created with the source's mapping)")
    target.add_argument("--in-place", action="store_true", help="label the source documents themselves")
    parser.add_argument("--slices", type=int, default=1, help="PIT slices read in parallel (default 1)")
    parser.add_argument("--start", help="only documents at or after this time (ISO 8601, UTC unless zoned)")
    parser.add_argument("--end", help="only documents before this time (default: now minus source.ingest_lag_s)")
    parser.add_argument(
        "--copy",
        choices=("auto", "server", "client"),
        default="auto",
        help="how to copy: server-side _reindex, the client path, or auto (server when the cluster has it)",
    )
    parser.add_argument("--restart", action="store_true", help="forget this backfill's checkpoint and start over")
    parser.add_argument("--lease-wait", type=float, help="seconds to wait for a crashed run's lease to lapse")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default: $LOGLLM_CONFIG_FILE); the environment overrides it"
    )
    parser.set_defaults(handler=_cmd_backfill)


def _cmd_backfill(args: argparse.Namespace) -> int:
    from enricher.settings import load_settings

    if not args.verbose:
        logging.getLogger("opensearch").setLevel(logging.ERROR)
    request = BackfillRequest(
        source=args.source,
        dest=None if args.in_place else args.dest,
        slices=check_slices(args.slices),
        start_ms=parse_time(args.start, "--start"),
        end_ms=parse_time(args.end, "--end"),
        copy=args.copy,
        restart=args.restart,
        lease_wait_s=args.lease_wait,
    )
    report = run_backfill(load_settings(args.config), request)
    print(json.dumps(report.to_json()))
    return 0
