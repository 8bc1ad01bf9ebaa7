"""Labelled sequence datasets, train/test splits and the data loaders for training.

Pipeline (one direction, pure except for the loaders that read files or an index):

    source (raw log file | BGL_windows100.csv | OpenSearch index)
      -> records (message, order, per-line label?, session key?)
      -> sequences (sessions by key regex/field, or fixed windows)  -> labels (any line / session CSV)
      -> split (random by session with a seed | chronological | upstream column)
      -> optional: training fraction, unseen-template hold-out

A `LabelledSequence` keeps its raw messages: detectors clean them themselves (LogLLM's regex
cleaning, the baseline's drain3 masking), so both see exactly what scoring would see.

Splits never put one sequence on both sides (`Split.check_disjoint`), and fixed windows of a
chronological split are cut *after* splitting the lines (METHOD.md §1.2), so no window spans
the boundary.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from model.errors import UserError
from model.preprocess import HDFS_BLOCK_ID, LineFormat, LogLine, iter_log_lines

if TYPE_CHECKING:
    from training.config import DataConfig

log = logging.getLogger(__name__)

SplitName = Literal["train", "test"]
SplitMethod = Literal["random", "chronological", "upstream"]

# Label spellings accepted in label files and index fields (case-insensitive). BGL's inline
# "-" means normal; any other BGL alert tag is handled by the BGL line parser itself.
ANOMALOUS_VALUES = frozenset({"1", "true", "anomaly", "anomalous", "abnormal", "yes"})
NORMAL_VALUES = frozenset({"0", "false", "normal", "-", "no"})


@dataclass(frozen=True)
class LabelledSequence:
    """One sequence of raw log messages with its ground-truth label.

    key: session key or window id, unique within a dataset.
    messages: raw messages in log order (header stripped; no inline label).
    label: 1 anomalous, 0 normal.
    order: position of the sequence's first line in the source (chronological order).
    split: the split the source assigns ("train"/"test"), when it carries one.
    """

    key: str
    messages: tuple[str, ...]
    label: int
    order: int
    split: SplitName | None = None


@dataclass(frozen=True)
class Dataset:
    """Labelled sequences from one source, in source order, plus what the loader skipped."""

    name: str
    sequences: tuple[LabelledSequence, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_anomalous(self) -> int:
        return sum(s.label for s in self.sequences)

    def describe(self) -> str:
        return f"{self.name}: {len(self.sequences)} sequences, {self.n_anomalous} anomalous"


@dataclass(frozen=True)
class Split:
    """Train and test sequences and a one-line description of how they were split."""

    train: tuple[LabelledSequence, ...]
    test: tuple[LabelledSequence, ...]
    how: str
    extra: dict[str, Any] = field(default_factory=dict)

    def check_disjoint(self) -> None:
        """Raise if a sequence key is on both sides (a leak)."""
        overlap = {s.key for s in self.train} & {s.key for s in self.test}
        if overlap:
            raise UserError(f"split {self.how!r} puts {len(overlap)} sequences in both train and test, e.g. {sorted(overlap)[:3]}")

    def summary(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "train": len(self.train),
            "train_anomalous": sum(s.label for s in self.train),
            "test": len(self.test),
            "test_anomalous": sum(s.label for s in self.test),
            **self.extra,
        }


def parse_label(value: object, where: str) -> int:
    """Map a label spelling to 0/1 (see ANOMALOUS_VALUES / NORMAL_VALUES).

    Raises:
        UserError: an unknown spelling, naming `where` it was found.
    """
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in ANOMALOUS_VALUES:
        return 1
    if text in NORMAL_VALUES:
        return 0
    raise UserError(
        f"{where}: label {value!r} is neither anomalous ({sorted(ANOMALOUS_VALUES)}) nor normal "
        f"({sorted(NORMAL_VALUES)}); fix the label or map it before loading"
    )


# --------------------------------------------------------------------------------------------
# Grouping records into labelled sequences (shared by every loader)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One log line as the grouping step sees it, from a file or an index."""

    order: int
    message: str
    label: int | None = None
    session: tuple[str, ...] = ()


def _group_sessions(records: Iterable[Record]) -> tuple[dict[str, list[Record]], int]:
    groups: dict[str, list[Record]] = {}
    keyless = 0
    for record in records:
        if not record.session:
            keyless += 1
        for key in record.session:
            groups.setdefault(key, []).append(record)
    return groups, keyless


def _label_of(key: str, members: Sequence[Record], session_labels: dict[str, int] | None) -> int | None:
    if session_labels is not None:
        return session_labels.get(key)
    line_labels = [r.label for r in members]
    if any(lab is None for lab in line_labels):
        return None
    return int(any(line_labels))


def sequences_from_records(
    records: Sequence[Record],
    *,
    window: int | None,
    session_labels: dict[str, int] | None,
    chronological_test_ratio: float | None = None,
    name: str,
) -> Dataset:
    """Group records into labelled sequences: by `Record.session` keys, or fixed windows.

    Labels come from `session_labels` (key -> 0/1) when given, else from per-line labels (a
    sequence is anomalous if any line is). Sequences without a label are left out and counted
    in `Dataset.notes`. With windows and `chronological_test_ratio`, the records are split
    80/20 (or as given) first and windows are cut in each part, tagged train/test.

    Raises:
        UserError: no record carries a label source, or no sequence is left.
    """
    notes: list[str] = []
    sequences: list[LabelledSequence] = []
    unlabelled = 0
    if window is not None:
        if window < 1:
            raise UserError(f"window size {window}: must be >= 1 lines")
        parts: list[tuple[SplitName | None, Sequence[Record]]] = [(None, records)]
        if chronological_test_ratio is not None:
            ordered = sorted(records, key=lambda r: r.order)
            cut = int(len(ordered) * (1 - chronological_test_ratio))
            parts = [("train", ordered[:cut]), ("test", ordered[cut:])]
        for split, part in parts:
            for start in range(0, len(part), window):
                members = part[start : start + window]
                key = f"window-{members[0].order}"
                label = _label_of(key, members, session_labels)
                if label is None:
                    unlabelled += 1
                    continue
                sequences.append(
                    LabelledSequence(key, tuple(r.message for r in members), label, members[0].order, split)
                )
    else:
        groups, keyless = _group_sessions(records)
        if keyless:
            notes.append(f"{keyless} lines carry no session key and belong to no sequence")
        for key, members in groups.items():
            label = _label_of(key, members, session_labels)
            if label is None:
                unlabelled += 1
                continue
            sequences.append(LabelledSequence(key, tuple(r.message for r in members), label, members[0].order))
    if unlabelled:
        notes.append(f"{unlabelled} sequences have no label and are left out")
    if not sequences:
        raise UserError(
            f"{name}: no labelled sequence could be built ({'; '.join(notes) or 'no input lines'}); "
            "check the grouping (session regex/field or window) and the label source"
        )
    for note in notes:
        log.warning("%s: %s", name, note)
    return Dataset(name, tuple(sequences), tuple(notes))


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _open_text(path: Path, what: str) -> Iterator[str]:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist or is not a file; check the path in the config")
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        yield from handle


def read_session_labels(path: Path, key_column: str | None = None, label_column: str | None = None) -> dict[str, int]:
    """Per-session labels from a CSV with a header (default: first column key, second label),
    e.g. HDFS ``anomaly_label.csv`` (``BlockId,Label`` with Normal/Anomaly).

    Raises:
        UserError: missing file, missing column, unknown label spelling, or no rows.
    """
    reader = csv.DictReader(_open_text(path, "session label file"))
    columns = reader.fieldnames or []
    if len(columns) < 2:
        raise UserError(f"session label file {path}: needs a header with a key and a label column, got {columns}")
    key_col = key_column or columns[0]
    label_col = label_column or columns[1]
    for col in (key_col, label_col):
        if col not in columns:
            raise UserError(f"session label file {path}: no column {col!r} (columns: {columns})")
    labels = {row[key_col].strip(): parse_label(row[label_col], f"{path}:{n + 2}") for n, row in enumerate(reader)}
    if not labels:
        raise UserError(f"session label file {path} has a header but no rows")
    return labels


def read_line_labels(path: Path) -> list[int]:
    """Per-line labels, one per line of the log file (0/1, normal/anomalous, ...)."""
    return [parse_label(text.strip(), f"{path}:{n + 1}") for n, text in enumerate(_open_text(path, "line label file"))]


def load_raw_log(
    path: Path,
    *,
    fmt: LineFormat = "raw",
    session_regex: str | None = None,
    window: int | None = None,
    session_labels: Path | None = None,
    session_key_column: str | None = None,
    session_label_column: str | None = None,
    line_labels: Path | None = None,
    assume_normal: bool = False,
    chronological_test_ratio: float | None = None,
    name: str | None = None,
) -> Dataset:
    """Raw log lines + per-line or per-session labels (or none: `assume_normal`) -> labelled sequences.

    Args:
        path: the log file; lines that do not match `fmt` are counted and skipped.
        fmt: line format (raw, hdfs, bgl). BGL lines carry their label inline.
        session_regex / window: group by every distinct regex match in a line's message, or by
            fixed windows of consecutive lines (exactly one).
        session_labels: CSV of key,label per session (HDFS ``anomaly_label.csv``).
        line_labels: a file with one label per log line (aligned with `path`'s lines).
        assume_normal: no labels; every line is normal (labels in the lines are ignored).
        chronological_test_ratio: for windows, split lines chronologically before windowing.
    Raises:
        UserError: missing files, bad regex, no label source, misaligned line labels, or
            nothing left to train on.
    """
    if (session_regex is None) == (window is None):
        raise UserError(f"{path}: give exactly one of session_regex or window to group lines into sequences")
    pattern = None
    if session_regex is not None:
        try:
            pattern = re.compile(session_regex)
        except re.error as exc:
            raise UserError(f"session_regex {session_regex!r} does not compile: {exc}") from exc
    per_line = read_line_labels(line_labels) if line_labels is not None else None
    per_session = (
        read_session_labels(session_labels, session_key_column, session_label_column)
        if session_labels is not None
        else None
    )
    if assume_normal and (per_line is not None or per_session is not None):
        raise UserError(f"{path}: assume_normal ignores labels, yet label files were given; drop one or the other")
    if per_line is None and per_session is None and fmt != "bgl" and not assume_normal:
        raise UserError(
            f"{path}: no labels; give session_labels (CSV key,label) or line_labels (one per line), "
            "use --format bgl whose lines carry their label, or set data.assume_normal (LogLLaMA, logs without labels)"
        )
    records: list[Record] = []
    unparsed = 0
    n_lines = 0
    for item in iter_log_lines(_open_text(path, "log file"), fmt):
        n_lines += 1
        if not isinstance(item, LogLine):
            unparsed += 1
            continue
        label = 0 if assume_normal else item.label
        if per_line is not None:
            if item.line_no > len(per_line):
                raise UserError(f"line label file {line_labels} has {len(per_line)} labels but {path} has more lines")
            label = per_line[item.line_no - 1]
        keys = tuple(dict.fromkeys(pattern.findall(item.message))) if pattern is not None else ()
        records.append(Record(item.line_no, item.message, label, keys))
    if per_line is not None and len(per_line) != n_lines:
        raise UserError(f"line label file {line_labels} has {len(per_line)} labels for {n_lines} lines in {path}")
    if not records:
        raise UserError(f"{path}: no lines in format {fmt!r} ({unparsed} lines did not match); check the file and format")
    dataset = sequences_from_records(
        records,
        window=window,
        session_labels=per_session,
        chronological_test_ratio=chronological_test_ratio,
        name=name or path.name,
    )
    if unparsed:
        note = f"{unparsed} lines do not match format {fmt!r} and are skipped"
        log.warning("%s: %s", dataset.name, note)
        dataset = replace(dataset, notes=(*dataset.notes, note))
    return dataset


def load_hdfs(log_path: Path, labels_path: Path) -> Dataset:
    """HDFS block sessions: each distinct ``blk_-?\\d+`` in a line gets the line's content, in
    file order; labels from ``anomaly_label.csv`` (METHOD.md §1.2)."""
    return load_raw_log(
        log_path, fmt="hdfs", session_regex=HDFS_BLOCK_ID.pattern, session_labels=labels_path, name=log_path.name
    )


def load_bgl_windows(windows_csv: Path, templates_csv: Path) -> Dataset:
    """BGL_windows100.csv: each window's entries rendered as their template text, label and
    upstream chronological ``Split`` kept (METHOD.md §4).

    Raises:
        UserError: missing files or an EventId with no template.
    """
    templates = {
        row["EventId"].strip(): row["EventTemplate"]
        for row in csv.DictReader(_open_text(templates_csv, "BGL template file"))
    }
    sequences = []
    for n, row in enumerate(csv.DictReader(_open_text(windows_csv, "BGL windows file"))):
        try:
            messages = tuple(templates[event] for event in row["EventIds"].split())
        except KeyError as exc:
            raise UserError(f"{windows_csv}:{n + 2}: EventId {exc.args[0]} is not in {templates_csv}") from exc
        split = row["Split"].strip()
        if split not in ("train", "test"):
            raise UserError(f"{windows_csv}:{n + 2}: Split {split!r} is neither train nor test")
        sequences.append(
            LabelledSequence(
                f"window-{row['WindowId']}",
                messages,
                parse_label(row["Label"], f"{windows_csv}:{n + 2}"),
                int(row["StartIndex"]),
                split,  # type: ignore[arg-type]
            )
        )
    if not sequences:
        raise UserError(f"{windows_csv} has no windows")
    return Dataset(windows_csv.name, tuple(sequences))


def _field(source: dict[str, Any], dotted: str) -> Any:
    value: Any = source
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def load_opensearch_export(
    client: Any,
    index: str,
    *,
    message_field: str = "message",
    timestamp_field: str = "@timestamp",
    tiebreak_field: str | None = None,
    session_field: str | None = None,
    window: int | None = None,
    label_field: str | None = "label",
    query: dict[str, Any] | None = None,
    chronological_test_ratio: float | None = None,
    page_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """An export of an OpenSearch index -> labelled sequences.

    Documents are read in (`timestamp_field`, `tiebreak_field` or ``_doc``) order with a
    scroll; give a tiebreak (e.g. a line number) when timestamps repeat. Each document
    gives a message (`message_field`), a label (`label_field`: per line, or a session label
    repeated on every document of the session; a sequence is anomalous if any document is)
    and, when grouping by session, its session key (`session_field`). Dotted names reach into
    objects. Documents without a message or label are counted and skipped. `label_field`
    None: the index holds no labels and every document is normal (`DataConfig.assume_normal`).

    Raises:
        UserError: the index is missing, a field is absent everywhere, or nothing is left.
    """
    from opensearchpy import exceptions as os_exc
    from opensearchpy.helpers import scan

    if (session_field is None) == (window is None):
        raise UserError(f"index {index}: give exactly one of session_field or window to group documents")
    sort: list[Any] = [{timestamp_field: "asc"}, {tiebreak_field: "asc"} if tiebreak_field else "_doc"]
    body = {"query": query or {"match_all": {}}, "sort": sort}
    fields = [repr(f) for f in (message_field, label_field) if f]
    records: list[Record] = []
    skipped = 0
    try:
        hits = scan(client, index=index, query=body, preserve_order=True, size=page_size)
        for n, hit in enumerate(hits):
            source = hit.get("_source", {})
            message = _field(source, message_field)
            raw_label = _field(source, label_field) if label_field else 0
            if message is None or raw_label is None:
                skipped += 1
                continue
            label = parse_label(raw_label, f"index {index} document {hit.get('_id')} field {label_field!r}")
            keys: tuple[str, ...] = ()
            if session_field is not None:
                key = _field(source, session_field)
                keys = (str(key),) if key is not None else ()
            records.append(Record(n, str(message), label, keys))
            if progress:
                progress(1)
    except os_exc.NotFoundError as exc:
        raise UserError(f"index {index!r} does not exist on the cluster; check the index name or pattern") from exc
    except os_exc.RequestError as exc:
        raise UserError(f"index {index!r}: the export query was refused ({exc.error}); check the field names") from exc
    if not records:
        raise UserError(
            f"index {index!r}: no document has {' and '.join(fields)} ({skipped} skipped); set the field names of the export"
        )
    dataset = sequences_from_records(
        records,
        window=window,
        session_labels=None,
        chronological_test_ratio=chronological_test_ratio,
        name=f"opensearch:{index}",
    )
    if skipped:
        note = f"{skipped} documents lack {' or '.join(fields)} and are skipped"
        log.warning("%s: %s", dataset.name, note)
        dataset = replace(dataset, notes=(*dataset.notes, note))
    return dataset


# --------------------------------------------------------------------------------------------
# Splits and subsets
# --------------------------------------------------------------------------------------------


def _by_order(items: Iterable[LabelledSequence]) -> tuple[LabelledSequence, ...]:
    return tuple(sorted(items, key=lambda s: s.order))


def split_random(sequences: Sequence[LabelledSequence], test_ratio: float, seed: int) -> Split:
    """Fixed-seed random split by sequence (HDFS: by block): ``numpy.random.default_rng(seed)``
    permutes the sequences in source order; the first ⌊n·(1−test_ratio)⌋ are train."""
    perm = np.random.default_rng(seed).permutation(len(sequences))
    n_train = int(len(sequences) * (1 - test_ratio))
    train = _by_order(sequences[i] for i in perm[:n_train])
    test = _by_order(sequences[i] for i in perm[n_train:])
    return Split(train, test, f"random by sequence, seed {seed}, test ratio {test_ratio}")


def split_chronological(sequences: Sequence[LabelledSequence], test_ratio: float) -> Split:
    """The first ⌊n·(1−test_ratio)⌋ sequences by first-line order are train, the rest test."""
    ordered = _by_order(sequences)
    n_train = int(len(ordered) * (1 - test_ratio))
    return Split(ordered[:n_train], ordered[n_train:], f"chronological by first line, test ratio {test_ratio}")


def split_upstream(sequences: Sequence[LabelledSequence]) -> Split:
    """The split the source assigns (BGL ``Split`` column, or windows cut after a line split)."""
    missing = sum(s.split is None for s in sequences)
    if missing:
        raise UserError(
            f"split 'upstream': {missing} sequences carry no upstream split tag; use 'random' or 'chronological'"
        )
    return Split(
        _by_order(s for s in sequences if s.split == "train"),
        _by_order(s for s in sequences if s.split == "test"),
        "upstream chronological split",
    )


def make_split(dataset: Dataset, method: SplitMethod, test_ratio: float, seed: int) -> Split:
    """Split `dataset` and check the result: disjoint, and neither side empty."""
    if method == "random":
        split = split_random(dataset.sequences, test_ratio, seed)
    elif method == "chronological":
        split = split_chronological(dataset.sequences, test_ratio)
    else:
        split = split_upstream(dataset.sequences)
    split.check_disjoint()
    for side in ("train", "test"):
        if not getattr(split, side):
            raise UserError(f"{dataset.name}: the {side} split is empty ({split.how}); the dataset is too small")
    return split


def train_fraction(split: Split, fraction: float, mode: Literal["random", "prefix"], seed: int) -> Split:
    """Keep `fraction` of the training sequences (test unchanged): a chronological prefix
    (BGL) or a fixed-seed random subset (HDFS); at least one sequence is kept."""
    if not 0 < fraction <= 1:
        raise UserError(f"train_fraction {fraction}: must be in (0, 1]")
    if fraction == 1:
        return split
    n = max(1, round(len(split.train) * fraction))
    if mode == "prefix":
        kept = split.train[:n]
    else:
        perm = np.random.default_rng(seed).permutation(len(split.train))[:n]
        kept = _by_order(split.train[i] for i in perm)
    how = f"{split.how}; training {fraction:g} ({'chronological prefix' if mode == 'prefix' else f'random subset, seed {seed}'})"
    return replace(split, train=kept, how=how, extra={**split.extra, "train_fraction": fraction})


def hold_out_templates(split: Split, patterns: Sequence[str]) -> Split:
    """The unseen-template protocol: drop from training every sequence with a message matching
    any of `patterns` (regexes, searched in the raw message); the test side becomes the test
    sequences that contain such a message.

    Raises:
        UserError: a pattern does not compile, or no test sequence contains a held-out template.
    """
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise UserError(f"hold_out_patterns: {exc}") from exc

    def touched(seq: LabelledSequence) -> bool:
        return any(p.search(m) for m in seq.messages for p in compiled)

    train = tuple(s for s in split.train if not touched(s))
    test = tuple(s for s in split.test if touched(s))
    if not test:
        raise UserError(f"hold_out_patterns {list(patterns)}: no test sequence contains a held-out template")
    extra = {
        **split.extra,
        "held_out": list(patterns),
        "train_removed": len(split.train) - len(train),
        "test_with_held_out": len(test),
    }
    return replace(split, train=train, test=test, how=f"{split.how}; unseen templates held out", extra=extra)


def check_trainable(train: Sequence[LabelledSequence], where: str) -> None:
    """Raise unless the training set is non-empty and holds both classes."""
    if not train:
        raise UserError(f"{where}: the training set is empty; check the data source and filters")
    labels = {s.label for s in train}
    if labels != {0, 1}:
        only = "anomalous" if labels == {1} else "normal"
        raise UserError(
            f"{where}: all {len(train)} training sequences are {only}; LogLLM learns to answer both words and "
            "needs at least one sequence of each class (add labelled anomalies, or a larger train fraction)"
        )


# --------------------------------------------------------------------------------------------
# From configuration
# --------------------------------------------------------------------------------------------


def load_dataset(config: DataConfig, os_client: Any | None = None) -> Dataset:
    """Load the dataset a `DataConfig` describes (files, or an index via `os_client`)."""
    ratio = config.test_ratio if config.split == "chronological" else None
    if config.kind == "hdfs":
        return load_hdfs(config.path, config.labels)  # type: ignore[arg-type]
    if config.kind == "bgl_windows":
        return load_bgl_windows(config.path, config.templates)  # type: ignore[arg-type]
    if config.kind == "raw":
        return load_raw_log(
            config.path,  # type: ignore[arg-type]
            fmt=config.format,
            session_regex=config.session_regex,
            window=config.window,
            session_labels=config.labels,
            session_key_column=config.session_key_column,
            session_label_column=config.session_label_column,
            line_labels=config.line_labels,
            assume_normal=config.assume_normal,
            chronological_test_ratio=ratio if config.window else None,
        )
    export = config.opensearch
    assert export is not None  # DataConfig validation
    if os_client is None:
        from opensearchpy import OpenSearch

        os_client = OpenSearch(hosts=[export.url], timeout=60)
    return load_opensearch_export(
        os_client,
        export.index,
        message_field=export.message_field,
        timestamp_field=export.timestamp_field,
        tiebreak_field=export.tiebreak_field,
        session_field=export.session_field,
        window=config.window,
        label_field=None if config.assume_normal else export.label_field,
        query=export.query,
        chronological_test_ratio=ratio if config.window else None,
    )


def build_split(config: DataConfig, dataset: Dataset, require_both_classes: bool = True) -> Split:
    """Split, then apply the unseen-template hold-out and the training fraction if configured.

    `require_both_classes=False` suits detectors that train on normal sequences only.
    """
    method: SplitMethod = config.split
    if config.split == "chronological" and config.window and any(s.split for s in dataset.sequences):
        method = "upstream"  # windows were already cut after a chronological line split
    split = make_split(dataset, method, config.test_ratio, config.seed)
    if config.hold_out_patterns:
        split = hold_out_templates(split, config.hold_out_patterns)
    split = train_fraction(split, config.train_fraction, config.fraction_mode, config.seed)
    split.check_disjoint()
    if require_both_classes:
        check_trainable(split.train, dataset.name)
    elif not split.train:
        raise UserError(f"{dataset.name}: the training set is empty; check the data source and filters")
    return split
