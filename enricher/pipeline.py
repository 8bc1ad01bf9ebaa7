"""One pass of the worker: source -> entries -> grouper -> detector -> sink -> checkpoint.

    load checkpoint -> (restore open groups, re-read from resume_after up to read_position)
    -> reader thread: read pages up to now - lag, group them, and cut after every page: the
       groups it closed, its dead letters, and the checkpoint that covers them
    -> this thread: take every cut waiting (at least one, up to batch_groups groups), score
       their groups in one detector call
    -> writer thread (one batch in flight, in order): write, then save the checkpoint
    -> close groups the watermark completes -> dead-letter documents without a timestamp
    -> survey the source for lag, late and future documents

Scoring takes whatever the reader has cut while the previous call ran, so a backlog is scored
in full batches (the detector batches them best) while a trickle is scored as soon as it
closes; reading and grouping overlap with scoring instead of waiting for it.

The checkpoint saved after a batch says: every document up to `read_position` is written,
dead-lettered, or a member of one of `open_groups`. It is saved only after the sink has
acknowledged the batch, and `resume_after` never passes the first member of an open group, so
a crash at any point loses nothing: the next pass re-reads from `resume_after`, rebuilds the
open groups, and rewrites whatever it writes with the same ids and content.

Within one process the grouper state carries over from pass to pass as long as the stored
checkpoint is still the one this worker saved; otherwise it is rebuilt from the store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from opensearchpy.exceptions import TransportError

from enricher.grouping import EntryBuilder, resume_point
from enricher.interfaces import CheckpointStore, Grouper, Lease, RetriesExhausted, Sink, Source
from enricher.metrics import WorkerMetrics
from enricher.settings import Settings, env_name
from enricher.sink import iso_ms
from enricher.types import Checkpoint, DeadLetter, Entry, Group, ScoredGroup, Version
from model.detector import Detector
from model.errors import UserError

log = logging.getLogger(__name__)

# Cuts (about one page each) the reader may run ahead of scoring: enough to fill a batch of
# batch_groups from pages that close few groups each, few enough to bound memory.
CUTS_AHEAD = 16
# The dead-letter ratio check needs enough documents to tell bad configuration from bad data.
MIN_DOCS_FOR_RATIO = 100


@dataclass(frozen=True)
class PassOptions:
    """The settings one pass needs (a backfill builds its own)."""

    checkpoint_id: str
    ingest_lag_ms: int
    batch_groups: int
    max_dead_letter_ratio: float
    start_at_ms: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PassOptions:
        start = settings.source.start_at
        return cls(
            checkpoint_id=settings.checkpoint_id,
            ingest_lag_ms=round(settings.source.ingest_lag_s * 1000),
            batch_groups=settings.scoring.batch_groups,
            max_dead_letter_ratio=settings.scoring.max_dead_letter_ratio,
            start_at_ms=round(start.timestamp() * 1000) if start is not None else None,
        )


@dataclass
class PassSummary:
    """What one pass did; `logllm once` prints it as JSON."""

    checkpoint_id: str
    docs_read: int = 0
    docs_replayed: int = 0
    groups_scored: int = 0
    anomalous_groups: int = 0
    docs_labelled: int = 0
    results_written: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    docs_missing: int = 0
    messages_truncated: int = 0
    items_retried: int = 0
    batches: int = 0
    open_groups: int = 0
    read_position: list[Any] | None = None
    resume_after: list[Any] | None = None
    newest_document: str | None = None
    late_documents: int = 0
    future_documents: int = 0
    stopped: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    """The grouper and the position it has consumed up to, tied to the checkpoint version."""

    grouper: Grouper
    version: Version | None
    read_position: Any
    read_timestamp_ms: int | None
    resume_from: Any  # where this pass starts reading
    replay_until: Any  # documents up to here only rebuild open groups (None: no replay)
    cut: Checkpoint | None = None  # the checkpoint of the reader's last cut
    dead_seen: int = 0  # dead letters met in this pass so far (reading thread only)


@dataclass(frozen=True)
class _Cut:
    """What the reader met since its previous cut: the groups that closed, the documents to
    dead-letter, and the checkpoint that holds once they and every earlier cut are written."""

    closed: list[Group]
    dead: list[DeadLetter]
    checkpoint: Checkpoint


class Prefetch:
    """Iterates `pages` in a thread, at most `depth` items ahead, so the next item is produced
    while this one is consumed. Errors surface in the consuming thread."""

    _DONE = object()

    def __init__(self, pages: Iterator[Any], depth: int) -> None:
        self._pages = pages
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="source-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._cancel.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for page in self._pages:
                if not self._put(page):
                    return
            self._put(self._DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(error)
        finally:
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def ready(self, enough: Callable[[list[Any]], bool]) -> Iterator[list[Any]]:
        """Like iterating, but each step yields every item already waiting (at least one: it
        waits for the first), taking no more once `enough(items)` holds. An error from the
        producer is raised after the items that came before it."""
        held: Any = None  # the end or an error, met while taking: acted on after the batch
        while held is None:
            items = [self._queue.get()]
            while items[-1] is not self._DONE and not isinstance(items[-1], BaseException) and not enough(items):
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if items[-1] is self._DONE or isinstance(items[-1], BaseException):
                held = items.pop()
            if items:
                yield items
        if isinstance(held, BaseException):
            raise held

    def close(self) -> None:
        self._cancel.set()
        self._thread.join()


class _Writer:
    """Writes batches and saves checkpoints in a thread, in order, one batch in flight."""

    def __init__(self, job: Callable[[Sequence[ScoredGroup], Sequence[DeadLetter], Checkpoint | None], None]) -> None:
        self._job = job
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        self._inflight: Future[None] | None = None

    def submit(self, scored: Sequence[ScoredGroup], dead: Sequence[DeadLetter], checkpoint: Checkpoint | None) -> None:
        """Queue a batch after waiting for the previous one (raising its error, if any)."""
        self.wait()
        self._inflight = self._executor.submit(self._job, scored, dead, checkpoint)

    def wait(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def close(self) -> None:
        """Let the batch in flight finish (its write is acknowledged work worth committing)."""
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)


class Worker:
    """Runs passes over one source for one checkpoint id."""

    def __init__(
        self,
        *,
        options: PassOptions,
        source: Source,
        entries: EntryBuilder,
        new_grouper: Callable[[], Grouper],
        detector: Detector,
        sink: Sink,
        checkpoints: CheckpointStore,
        lease: Lease,
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.source = source
        self.entries = entries
        self.new_grouper = new_grouper
        self.detector = detector
        self.sink = sink
        self.checkpoints = checkpoints
        self.lease = lease
        self.metrics = metrics
        self.clock = clock
        self._state: _State | None = None

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    # -- state ---------------------------------------------------------------------------------

    def _state_for(self, stored: tuple[Checkpoint, Version] | None) -> _State:
        """Continue in memory if the stored checkpoint is the one we saved last; else rebuild."""
        current = self._state
        if current is not None and current.version == (stored[1] if stored else None):
            current.resume_from, current.replay_until, current.dead_seen = current.read_position, None, 0
            return current
        grouper = self.new_grouper()
        if stored is None:
            return _State(grouper, None, None, None, None, None)
        checkpoint, version = stored
        if checkpoint.grouping != grouper.signature:
            raise UserError(
                f"checkpoint {checkpoint.checkpoint_id!r} holds groups formed with grouping {checkpoint.grouping}, "
                f"but the grouping settings now give {grouper.signature}; restore the old LOGLLM_GROUPING__* "
                f"settings, or start a new checkpoint with {env_name(('state', 'checkpoint_id'))}"
            )
        grouper.restore(checkpoint.open_groups)
        if checkpoint.open_groups:
            log.info(
                "resuming %s: re-reading to rebuild %d open groups", checkpoint.checkpoint_id, len(checkpoint.open_groups)
            )
        return _State(
            grouper=grouper,
            version=version,
            read_position=checkpoint.read_position,
            read_timestamp_ms=checkpoint.read_timestamp_ms,
            resume_from=checkpoint.resume_after,
            replay_until=checkpoint.read_position if checkpoint.open_groups else None,
            cut=checkpoint,
        )

    def _checkpoint(self, state: _State) -> Checkpoint:
        open_groups = state.grouper.open_states()
        return Checkpoint(
            checkpoint_id=self.options.checkpoint_id,
            grouping=state.grouper.signature,
            read_position=state.read_position,
            resume_after=resume_point(open_groups, state.read_position),
            open_groups=open_groups,
            read_timestamp_ms=state.read_timestamp_ms,
        )

    # -- one pass ------------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> PassSummary:
        """Read everything older than now minus the lag, score what closes, write, checkpoint.

        `stop` (e.g. set by SIGTERM) ends the pass early: the batch being written is finished
        and committed, work not yet written is abandoned (the next pass re-reads it).

        Raises:
            LeaseLost: another worker holds the lease (nothing was committed after that).
            CheckpointConflict: another worker moved the checkpoint.
            RetriesExhausted: the cluster kept failing; nothing unacknowledged was committed.
            UserError: configuration problems, including too many unscorable documents.
        """
        stop = stop or threading.Event()
        started = time.monotonic()
        summary = PassSummary(self.options.checkpoint_id)
        self.lease.ensure_held()
        self.sink.prepare()
        stored = self.checkpoints.load(self.options.checkpoint_id)
        state = self._state_for(stored)
        # Labels written in this pass may not be searchable yet (refresh interval): the check for
        # late documents looks behind the cursor this pass started from.
        start_cursor = stored[0].resume_after if stored else None
        self._state = None  # reinstated only when the pass completes
        before_ms = self._now_ms() - self.options.ingest_lag_ms
        writer = _Writer(lambda scored, dead, checkpoint: self._write(state, summary, scored, dead, checkpoint))
        try:
            self._read(state, before_ms, stop, summary, writer)
            if not stop.is_set():
                self._dead_letter_unpositioned(stop, summary, writer)
        finally:
            writer.close()
        summary.stopped = stop.is_set()
        checkpoint = self._checkpoint(state)
        summary.open_groups = len(checkpoint.open_groups)
        summary.read_position = list(checkpoint.read_position) if checkpoint.read_position else None
        summary.resume_after = list(checkpoint.resume_after) if checkpoint.resume_after else None
        if not summary.stopped:
            self._survey(checkpoint, start_cursor[0] if start_cursor else None, summary)
            self._state = state
        summary.seconds = round(time.monotonic() - started, 3)
        self.metrics.pass_seconds.observe(summary.seconds)
        self.metrics.last_success.set(self.clock())
        log.info("pass done: %s", summary.to_json())
        return summary

    def _read(
        self, state: _State, before_ms: int, stop: threading.Event, summary: PassSummary, writer: _Writer
    ) -> None:
        """Score and hand to the writer every cut of the reader thread (`_cuts`), taking all
        cuts waiting at once, until the source is exhausted or `stop` is set."""
        size = self.options.batch_groups
        cuts = Prefetch(self._cuts(state, before_ms, summary), CUTS_AHEAD)
        try:
            for ready in cuts.ready(lambda taken: sum(len(cut.closed) for cut in taken) >= size):
                if stop.is_set():
                    return
                closed = [group for cut in ready for group in cut.closed]
                dead = [letter for cut in ready for letter in cut.dead]
                self._flush(summary, writer, closed, dead, ready[-1].checkpoint, stop)
        finally:
            cuts.close()

    def _cuts(self, state: _State, before_ms: int, summary: PassSummary) -> Iterator[_Cut]:
        """Reader thread: read, group, and cut after every page (and whenever batch_groups
        groups have closed within one), then once more for the groups the watermark closes."""
        closed: list[Group] = []
        dead: list[DeadLetter] = []
        for page in self.source.read(state.resume_from, before_ms, self.options.start_at_ms):
            read_before = summary.docs_read
            for doc in page:
                item = self.entries(doc)
                if state.replay_until is not None and doc.position <= state.replay_until:
                    if isinstance(item, Entry):
                        state.grouper.replay(item)
                    summary.docs_replayed += 1
                    continue
                summary.docs_read += 1
                if isinstance(item, DeadLetter):
                    dead.append(item)
                    state.dead_seen += 1
                else:
                    summary.messages_truncated += item.truncated
                    closed.extend(state.grouper.feed(item))
                state.read_position, state.read_timestamp_ms = doc.position, doc.timestamp_ms
                if len(closed) >= self.options.batch_groups:
                    yield from self._cut(state, summary, closed, dead)
                    closed, dead = [], []
            self.metrics.docs_read.inc(summary.docs_read - read_before)
            yield from self._cut(state, summary, closed, dead)
            closed, dead = [], []
        closed.extend(state.grouper.close_until(before_ms))
        yield from self._cut(state, summary, closed, dead)

    def _cut(self, state: _State, summary: PassSummary, closed: list[Group], dead: list[DeadLetter]) -> Iterator[_Cut]:
        """The cut of what was met since the last one, unless nothing changed."""
        self._check_dead_letter_ratio(state, summary, dead)
        checkpoint = self._checkpoint(state)
        if closed or dead or checkpoint != state.cut:
            state.cut = checkpoint
            yield _Cut(closed, dead, checkpoint)

    def _flush(
        self,
        summary: PassSummary,
        writer: _Writer,
        closed: list[Group],
        dead: list[DeadLetter],
        checkpoint: Checkpoint,
        stop: threading.Event,
    ) -> None:
        """Score `closed` here, in as few detector calls of at most `batch_groups` groups as
        there can be (split evenly), hand each to the writer, and with the last one the
        checkpoint that covers them all (it may only move once all are written). A stop
        between calls abandons the rest, checkpoint included."""
        calls = max(1, -(-len(closed) // self.options.batch_groups))
        size = -(-len(closed) // calls) or 1
        batches = [closed[start : start + size] for start in range(0, len(closed), size)] or [[]]
        for number, batch in enumerate(batches):
            if number and stop.is_set():
                return
            started = time.monotonic()
            scored = self._score(batch)
            self.metrics.batch_seconds.labels("score").observe(time.monotonic() - started)
            last = number == len(batches) - 1
            writer.submit(scored, dead if last else [], checkpoint if last else None)

    def _score(self, groups: Sequence[Group]) -> list[ScoredGroup]:
        if not groups:
            return []
        verdicts = self.detector.score([group.messages for group in groups])
        scored_at = iso_ms(self._now_ms())
        assert scored_at is not None
        for name, stats in self.detector.cache_stats().items():
            self.metrics.cache_hit_ratio.labels(name).set(stats["hit_ratio"])
        self.metrics.docs_scored.inc(sum(len(group.entries) for group in groups))
        return [ScoredGroup(group, verdict, scored_at) for group, verdict in zip(groups, verdicts, strict=True)]

    def _write(
        self,
        state: _State,
        summary: PassSummary,
        scored: Sequence[ScoredGroup],
        dead: Sequence[DeadLetter],
        checkpoint: Checkpoint | None,
    ) -> None:
        """Writer thread: write the batch; once acknowledged, save the checkpoint covering it."""
        started = time.monotonic()
        report = self.sink.write(scored, dead) if scored or dead else None
        if report is not None:
            anomalous = sum(item.verdict.label for item in scored)
            summary.groups_scored += len(scored)
            summary.anomalous_groups += anomalous
            summary.docs_labelled += report.labelled
            summary.results_written += report.results
            summary.docs_missing += report.missing
            summary.items_retried += report.retried
            reasons = Counter(letter.reason for letter in dead) + Counter(letter.reason for letter in report.rejected)
            for reason, count in reasons.items():
                summary.dead_lettered[reason] = summary.dead_lettered.get(reason, 0) + count
                self.metrics.dead_letters.labels(reason).inc(count)
            self.metrics.groups.inc(len(scored))
            self.metrics.anomalies.inc(anomalous)
            self.metrics.docs_written.inc(report.labelled)
            self.metrics.missing.inc(report.missing)
            self.metrics.truncated.inc(sum(e.truncated for item in scored for e in item.group.entries))
            if report.retried:
                self.metrics.retries.labels("bulk item").inc(report.retried)
        if checkpoint is not None:
            self.lease.ensure_held()
            state.version = self.checkpoints.save(checkpoint, state.version)
            self.metrics.open_groups.set(len(checkpoint.open_groups))
            if checkpoint.resume_after is not None:
                self.metrics.cursor_age_seconds.set(self.clock() - checkpoint.resume_after[0] / 1000)
        summary.batches += 1
        self.metrics.batch_seconds.labels("write").observe(time.monotonic() - started)

    def _check_dead_letter_ratio(self, state: _State, summary: PassSummary, dead: Sequence[DeadLetter]) -> None:
        """Stop before writing when most documents cannot be scored: that is a configuration
        problem (wrong message field, wrong session regex), not bad data."""
        if summary.docs_read < MIN_DOCS_FOR_RATIO or not dead:
            return
        if state.dead_seen / summary.docs_read <= self.options.max_dead_letter_ratio:
            return
        example = dead[0]
        raise UserError(
            f"{state.dead_seen} of {summary.docs_read} documents read cannot be scored (e.g. {example.ref.index}/"
            f"{example.ref.id}: {example.detail}); this looks like a configuration problem: check "
            f"LOGLLM_SOURCE__MESSAGE_FIELD and LOGLLM_GROUPING__*, or raise "
            f"{env_name(('scoring', 'max_dead_letter_ratio'))} if the data really is like that"
        )

    def _dead_letter_unpositioned(self, stop: threading.Event, summary: PassSummary, writer: _Writer) -> None:
        """Documents without a usable timestamp can never be reached by the cursor: dead-letter
        them (once: the mark excludes them from the next search)."""
        for page in self.source.read_unpositioned():
            writer.submit([], [self.entries.unpositioned(doc) for doc in page], None)
            if stop.is_set():
                return

    def _survey(self, checkpoint: Checkpoint, cursor_ms: int | None, summary: PassSummary) -> None:
        """Lag, late documents (unlabelled behind `cursor_ms`) and future documents: reported;
        a failure here fails no pass (the pass's work is committed already)."""
        try:
            survey = self.source.survey(cursor_ms, self._now_ms())
        except (RetriesExhausted, TransportError) as error:
            log.warning("could not survey the source for metrics: %s", error)
            self.metrics.errors.labels("survey").inc()
            return
        summary.newest_document = iso_ms(survey.newest_ms)
        summary.late_documents = survey.late
        summary.future_documents = survey.future
        if survey.newest_ms is not None and checkpoint.read_timestamp_ms is not None:
            self.metrics.lag_seconds.set(max(0, survey.newest_ms - checkpoint.read_timestamp_ms) / 1000)
        self.metrics.late_docs.set(survey.late)
        self.metrics.future_docs.set(survey.future)
        if survey.late:
            log.warning(
                "%d documents behind the cursor have no label: they arrived later than "
                "source.ingest_lag_s allows; raise LOGLLM_SOURCE__INGEST_LAG_S, and label them with a backfill",
                survey.late,
            )
        if survey.future:
            log.warning("%d documents are stamped in the future; they are read once their time has come", survey.future)
