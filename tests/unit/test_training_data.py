"""Datasets, loaders and splits (training/data.py): pure, no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.errors import UserError
from training.config import DataConfig
from training.data import (
    LabelledSequence,
    build_split,
    check_trainable,
    hold_out_templates,
    load_bgl_windows,
    load_dataset,
    load_raw_log,
    make_split,
    parse_label,
    split_chronological,
    split_random,
    train_fraction,
)
from training.shared_data import BGL_TEMPLATES, BGL_WINDOWS, HDFS_2PCT, HDFS_LABELS


def _seqs(n: int, anomalous: set[int] | None = None) -> list[LabelledSequence]:
    anomalous = anomalous or set()
    return [LabelledSequence(f"s{i}", (f"msg {i}",), int(i in anomalous), order=i) for i in range(n)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Anomaly", 1), ("anomalous", 1), ("1", 1), (True, 1), ("Normal", 0), ("-", 0), ("0", 0), (False, 0)],
)
def test_parse_label_spellings(value: object, expected: int) -> None:
    assert parse_label(value, "here") == expected


def test_parse_label_rejects_unknown_spelling_naming_the_place() -> None:
    with pytest.raises(UserError, match=r"labels.csv:7: label 'maybe'"):
        parse_label("maybe", "labels.csv:7")


def test_sessions_with_session_labels(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("start req-1\nstart req-2\nfail req-2 disk\nno key here\nend req-1\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("Session,Verdict\nreq-1,normal\nreq-2,anomalous\n")
    dataset = load_raw_log(log, session_regex=r"req-\d+", session_labels=labels)
    assert [(s.key, s.messages, s.label, s.order) for s in dataset.sequences] == [
        ("req-1", ("start req-1", "end req-1"), 0, 1),
        ("req-2", ("start req-2", "fail req-2 disk"), 1, 2),
    ]
    assert any("1 lines carry no session key" in note for note in dataset.notes)


def test_unlabelled_sessions_are_counted_not_silently_dropped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("a req-1\nb req-2\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\nreq-1,0\n")
    dataset = load_raw_log(log, session_regex=r"req-\d+", session_labels=labels)
    assert [s.key for s in dataset.sequences] == ["req-1"]
    assert "1 sequences have no label" in dataset.notes[0]


def test_windows_with_line_labels_split_lines_before_windowing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    line_labels = tmp_path / "labels.txt"
    line_labels.write_text("".join("1\n" if i == 8 else "0\n" for i in range(10)))
    dataset = load_raw_log(log, window=3, line_labels=line_labels, chronological_test_ratio=0.2)
    # 8 train lines -> windows of 3, 3, 2; 2 test lines -> one window; none spans the boundary.
    assert [(s.split, len(s.messages), s.label) for s in dataset.sequences] == [
        ("train", 3, 0), ("train", 3, 0), ("train", 2, 0), ("test", 2, 1),
    ]
    assert dataset.sequences[-1].messages == ("line 8", "line 9")


def test_line_labels_must_align_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("a\nb\nc\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n1\n")
    with pytest.raises(UserError, match="has 2 labels"):
        load_raw_log(log, window=2, line_labels=labels)


def test_bgl_format_labels_come_inline_and_are_stripped(tmp_path: Path) -> None:
    log = tmp_path / "bgl.log"
    header = "1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO"
    log.write_text(f"- {header} all fine\nKERNDTLB {header} data TLB error\n")
    dataset = load_raw_log(log, fmt="bgl", window=100)
    (window,) = dataset.sequences
    assert window.label == 1 and window.messages == ("all fine", "data TLB error")


def test_assume_normal_takes_every_sequence_as_normal_and_ignores_inline_labels(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("start req-1\nstart req-2\nfail req-2 disk\n")
    dataset = load_raw_log(log, session_regex=r"req-\d+", assume_normal=True)
    assert [(s.key, s.label) for s in dataset.sequences] == [("req-1", 0), ("req-2", 0)]
    bgl = tmp_path / "bgl.log"
    header = "1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO"
    bgl.write_text(f"KERNDTLB {header} data TLB error\n")
    (window,) = load_raw_log(bgl, fmt="bgl", window=100, assume_normal=True).sequences
    assert window.label == 0 and window.messages == ("data TLB error",)
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\nreq-1,1\n")
    with pytest.raises(UserError, match="assume_normal ignores labels, yet label files were given"):
        load_raw_log(log, session_regex=r"req-\d+", session_labels=labels, assume_normal=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 2}, "no labels; .* or set data.assume_normal"),
        ({"session_regex": "(", "session_labels": Path("x")}, "does not compile"),
        ({}, "exactly one of session_regex or window"),
    ],
)
def test_raw_loader_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    log = tmp_path / "app.log"
    log.write_text("a\n")
    with pytest.raises(UserError, match=message):
        load_raw_log(log, **kwargs)  # type: ignore[arg-type]


def test_missing_file_and_empty_dataset_errors(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\nreq-1,0\n")
    with pytest.raises(UserError, match="does not exist"):
        load_raw_log(tmp_path / "nope.log", session_regex="req-1", session_labels=labels)
    empty = tmp_path / "empty.log"
    empty.write_text("")
    with pytest.raises(UserError, match="no lines"):
        load_raw_log(empty, session_regex="req-1", session_labels=labels)
    keyless = tmp_path / "keyless.log"
    keyless.write_text("nothing\n")
    with pytest.raises(UserError, match="no labelled sequence"):
        load_raw_log(keyless, session_regex=r"req-\d", session_labels=labels)


def test_random_split_is_seeded_disjoint_and_complete() -> None:
    sequences = _seqs(100)
    a, b, c = split_random(sequences, 0.2, 42), split_random(sequences, 0.2, 42), split_random(sequences, 0.2, 7)
    assert (len(a.train), len(a.test)) == (80, 20)
    assert a.train == b.train and a.train != c.train
    assert {s.key for s in a.train} | {s.key for s in a.test} == {s.key for s in sequences}
    a.check_disjoint()
    assert [s.order for s in a.train] == sorted(s.order for s in a.train)


def test_chronological_split_keeps_order() -> None:
    split = split_chronological(list(reversed(_seqs(10))), 0.2)
    assert [s.order for s in split.train] == list(range(8)) and [s.order for s in split.test] == [8, 9]


def test_leaking_split_is_refused() -> None:
    sequences = _seqs(4)
    split = make_split(_dataset(sequences), "random", 0.5, 0)
    leaky = type(split)(split.train, (*split.test, split.train[0]), "leaky")
    with pytest.raises(UserError, match="both train and test"):
        leaky.check_disjoint()


def _dataset(sequences: list[LabelledSequence]):  # type: ignore[no-untyped-def]
    from training.data import Dataset

    return Dataset("test", tuple(sequences))


def test_upstream_split_needs_tags() -> None:
    with pytest.raises(UserError, match="no upstream split tag"):
        make_split(_dataset(_seqs(4)), "upstream", 0.2, 0)


def test_train_fraction_prefix_and_random() -> None:
    split = split_chronological(_seqs(100), 0.2)
    prefix = train_fraction(split, 0.25, "prefix", 0)
    assert [s.order for s in prefix.train] == list(range(20)) and prefix.test == split.test
    sample = train_fraction(split, 0.25, "random", 3)
    assert len(sample.train) == 20 and sample.train != prefix.train
    assert sample.train == train_fraction(split, 0.25, "random", 3).train
    assert train_fraction(split, 1.0, "random", 0) is split


def test_hold_out_templates_removes_from_train_and_selects_test() -> None:
    sequences = [
        LabelledSequence("a", ("ok", "disk error 1"), 1, 0),
        LabelledSequence("b", ("ok",), 0, 1),
        LabelledSequence("c", ("disk error 2",), 1, 2),
        LabelledSequence("d", ("ok",), 0, 3),
    ]
    split = split_chronological(sequences, 0.5)
    held = hold_out_templates(split, [r"disk error \d"])
    assert [s.key for s in held.train] == ["b"]
    assert [s.key for s in held.test] == ["c"]
    assert held.extra["train_removed"] == 1 and held.extra["test_with_held_out"] == 1
    with pytest.raises(UserError, match="no test sequence"):
        hold_out_templates(split, ["never matches"])


def test_single_class_and_empty_training_sets_are_refused() -> None:
    with pytest.raises(UserError, match="all 3 training sequences are normal"):
        check_trainable(_seqs(3), "data")
    with pytest.raises(UserError, match="training set is empty"):
        check_trainable([], "data")
    check_trainable(_seqs(3, {1}), "data")


def test_bgl_windows_loader_renders_templates(tmp_path: Path) -> None:
    templates = tmp_path / "t.csv"
    templates.write_text('EventId,EventTemplate\n1,instruction cache parity error corrected\n2,"a, b <*>"\n')
    windows = tmp_path / "w.csv"
    windows.write_text(
        "WindowId,StartIndex,Split,Label,NumAnomalousEntries,EventIds,EntryLabels\n"
        "0,0,train,0,0,1 2 1,000\n1,3,test,1,1,2 2,01\n"
    )
    dataset = load_bgl_windows(windows, templates)
    first, second = dataset.sequences
    assert first.messages == ("instruction cache parity error corrected", "a, b <*>", "instruction cache parity error corrected")
    assert (first.split, first.label, second.split, second.label) == ("train", 0, "test", 1)
    windows.write_text(windows.read_text().replace("2 2,01", "9,01"))
    with pytest.raises(UserError, match="EventId 9"):
        load_bgl_windows(windows, templates)


@pytest.mark.skipif(not HDFS_2PCT.exists() or not BGL_WINDOWS.exists(), reason="shared benchmark data not found")
def test_shipped_benchmarks_load_and_split_as_documented() -> None:
    """METHOD.md §4 counts: HDFS 11,501 blocks / 350 anomalous; BGL train 5,019 (908) / test 1,254 (129)."""
    hdfs_config = DataConfig(kind="hdfs")
    hdfs = load_dataset(hdfs_config)
    assert (len(hdfs.sequences), hdfs.n_anomalous) == (11501, 350)
    split = build_split(hdfs_config, hdfs)
    assert (len(split.train), len(split.test)) == (9200, 2301)
    split.check_disjoint()
    assert hdfs_config.path == HDFS_2PCT and hdfs_config.labels == HDFS_LABELS

    bgl_config = DataConfig(kind="bgl_windows")
    bgl = build_split(bgl_config, load_dataset(bgl_config))
    assert bgl_config.templates == BGL_TEMPLATES
    assert bgl.summary() | {"how": ""} == {
        "how": "", "train": 5019, "train_anomalous": 908, "test": 1254, "test_anomalous": 129,
    }
    assert max(s.order for s in bgl.train) < min(s.order for s in bgl.test)
    assert all(len(s.messages) == 100 for s in bgl.train)
