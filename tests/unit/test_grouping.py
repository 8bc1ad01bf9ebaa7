"""Grouping: entries from documents, sessions, count and time windows, restore + replay."""

from __future__ import annotations

import pytest

from enricher.grouping import (
    EntryBuilder,
    KeyedGrouper,
    TimeWindowGrouper,
    build_grouper,
    field_value,
    grouping_signature,
    resume_point,
)
from enricher.settings import GroupingSettings
from enricher.types import DeadLetter, DocRef, Entry, Group, LogDoc, OpenGroupState

SESSION = GroupingSettings(mode="session", session_regex=r"blk_-?\d+", inactivity_gap_s=10, max_length=3)


def doc(n: int, ts_s: float, message: object = "x", **fields: object) -> LogDoc:
    ts = round(ts_s * 1000)
    return LogDoc(DocRef("idx", f"d{n:03d}"), (ts, "idx", f"d{n:03d}"), None, ts, message, fields)


def entry(n: int, ts_s: float, *keys: str) -> Entry:
    ts = round(ts_s * 1000)
    return Entry(DocRef("idx", f"d{n:03d}"), (ts, "idx", f"d{n:03d}"), None, ts, f"m{n}", keys or ("",))


def chain(entries: list[Entry]) -> list[Entry]:
    """Give each entry the position of the one before it, as the source does."""
    out, previous = [], None
    for item in entries:
        out.append(Entry(item.ref, item.position, previous, item.timestamp_ms, item.message, item.keys, item.truncated))
        previous = item.position
    return out


def members(groups: list[Group]) -> list[tuple[str, list[str]]]:
    return [(group.key, [e.ref.id for e in group.entries]) for group in groups]


# ------------------------------------------------------------------------- entries


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (None, "missing_message"),
        (42, "message_not_string"),
        (["a", "b"], "message_not_string"),
        ({"text": "blk_1"}, "message_not_string"),
        ("no block here", "no_session_key"),
        ("", "no_session_key"),
    ],
)
def test_unscorable_documents_become_dead_letters_with_their_reason(message: object, reason: str) -> None:
    builder = EntryBuilder(SESSION, "message", "ts", 100)
    result = builder(doc(1, 5, message))
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert result.ref == DocRef("idx", "d001") and result.message == message


def test_session_keys_are_the_distinct_matches_in_order() -> None:
    builder = EntryBuilder(SESSION, "message", "ts", 100)
    result = builder(doc(1, 5, "copy blk_7 to blk_-3 then blk_7 again"))
    assert isinstance(result, Entry) and result.keys == ("blk_7", "blk_-3")


def test_huge_messages_are_cut_and_flagged_not_dropped() -> None:
    builder = EntryBuilder(SESSION, "message", "ts", 100)
    message = "blk_1 " + "x" * 1_000_000
    result = builder(doc(1, 5, message))
    assert isinstance(result, Entry)
    assert result.truncated and result.message == message[:100]
    assert result.keys == ("blk_1",)
    short = builder(doc(2, 5, "blk_1 short"))
    assert isinstance(short, Entry) and not short.truncated


def test_session_field_and_partition_field_keys() -> None:
    by_field = EntryBuilder(GroupingSettings(mode="session", session_field="trace.id"), "message", "ts", 100)
    assert by_field.fields == ["trace.id"]
    found = by_field(doc(1, 5, "m", **{"trace.id": 17}))
    assert isinstance(found, Entry) and found.keys == ("17",)
    missing = by_field(doc(2, 5, "m"))
    assert isinstance(missing, DeadLetter) and missing.reason == "no_session_key"
    windows = EntryBuilder(GroupingSettings(mode="time_window", partition_field="host"), "message", "ts", 100)
    with_host = windows(doc(3, 5, "m", host="a"))
    without = windows(doc(4, 5, "m"))
    assert isinstance(with_host, Entry) and with_host.keys == ("a",)
    assert isinstance(without, Entry) and without.keys == ("",)


def test_unpositioned_documents_name_the_timestamp_field_and_value() -> None:
    builder = EntryBuilder(SESSION, "message", "ts", 100)
    raw = LogDoc(DocRef("idx", "x"), ("idx", "x"), None, None, "blk_1", {"ts": "yesterday"})
    letter = builder.unpositioned(raw)
    assert letter.reason == "missing_timestamp" and "'ts'" in letter.detail and "yesterday" in letter.detail


@pytest.mark.parametrize(
    ("source", "path", "value"),
    [
        ({"message": "a"}, "message", "a"),
        ({"log": {"msg": "b"}}, "log.msg", "b"),
        ({"log.msg": "c"}, "log.msg", "c"),
        ({"a": {"b.c": "d"}}, "a.b.c", "d"),
        ({"log": "flat"}, "log.msg", None),
        ({}, "message", None),
    ],
)
def test_field_value_reads_nested_and_dotted_sources(source: dict[str, object], path: str, value: object) -> None:
    assert field_value(source, path) == value


# ------------------------------------------------------------------------- sessions


def feed_all(grouper: KeyedGrouper | TimeWindowGrouper, entries: list[Entry], watermark_s: float) -> list[Group]:
    closed = []
    for item in entries:
        closed.extend(grouper.feed(item))
    closed.extend(grouper.close_until(round(watermark_s * 1000)))
    return closed


SESSION_CASES = [
    # (description, entries as (n, ts, keys), expected groups as (key, ids))
    (
        "gap splits a session; the gap itself (10 s) still joins",
        [(1, 0, "A"), (2, 10, "A"), (3, 20.001, "A")],
        [("A", ["d001", "d002"]), ("A", ["d003"])],
    ),
    (
        "max length closes at once, the next entry opens a new session",
        [(1, 0, "A"), (2, 1, "A"), (3, 2, "A"), (4, 3, "A")],
        [("A", ["d001", "d002", "d003"]), ("A", ["d004"])],
    ),
    (
        "interleaved keys close in deadline order (B's ends at 11 s, A's at 12 s)",
        [(1, 0, "A"), (2, 1, "B"), (3, 2, "A"), (4, 30, "B")],
        [("B", ["d002"]), ("A", ["d001", "d003"]), ("B", ["d004"])],
    ),
]


@pytest.mark.parametrize(("entries", "expected"), [case[1:] for case in SESSION_CASES], ids=[c[0] for c in SESSION_CASES])
def test_sessions(entries: list[tuple[int, float, str]], expected: list[tuple[str, list[str]]]) -> None:
    grouper = build_grouper(SESSION)
    closed = feed_all(grouper, chain([entry(n, ts, key) for n, ts, key in entries]), watermark_s=1000)
    assert members(closed) == expected
    assert all(all(group.labels) for group in closed)


def test_a_line_in_two_sessions_is_labelled_by_its_first_key_only() -> None:
    grouper = build_grouper(SESSION)
    closed = feed_all(grouper, chain([entry(1, 0, "A"), entry(2, 1, "B", "A"), entry(3, 2, "B")]), 1000)
    by_key = {group.key: group for group in closed}
    assert members(closed) == [("A", ["d001", "d002"]), ("B", ["d002", "d003"])]
    assert by_key["A"].labels == (True, False)
    assert by_key["B"].labels == (True, True)


def test_watermark_closes_only_groups_no_later_document_could_join() -> None:
    grouper = build_grouper(SESSION)
    for item in chain([entry(1, 0, "A"), entry(2, 5, "B")]):
        grouper.feed(item)
    assert grouper.close_until(10_000) == []  # A's last + gap = 10 s: a document at 10 s joins
    assert members(grouper.close_until(10_001)) == [("A", ["d001"])]
    assert [state.key for state in grouper.open_states()] == ["B"]


def test_count_windows_close_when_full_or_idle_per_partition() -> None:
    grouper = build_grouper(GroupingSettings(mode="count_window", count=2, inactivity_gap_s=10, partition_field="h"))
    items = chain([entry(1, 0, "a"), entry(2, 1, "b"), entry(3, 2, "a"), entry(4, 3, "a"), entry(5, 50, "b")])
    assert members(feed_all(grouper, items, 1000)) == [
        ("a", ["d001", "d003"]),
        ("b", ["d002"]),
        ("a", ["d004"]),
        ("b", ["d005"]),
    ]


def test_tumbling_windows_follow_event_time() -> None:
    grouper = build_grouper(GroupingSettings(mode="time_window", window_s=10))
    closed = feed_all(grouper, chain([entry(1, 1), entry(2, 9.999), entry(3, 10), entry(4, 35)]), 1000)
    assert [(g.window, [e.ref.id for e in g.entries]) for g in closed] == [
        ((0, 10_000), ["d001", "d002"]),
        ((10_000, 20_000), ["d003"]),
        ((30_000, 40_000), ["d004"]),
    ]


def test_sliding_windows_hold_every_entry_in_range_and_label_from_the_earliest() -> None:
    grouper = TimeWindowGrouper("sig", size_ms=10_000, step_ms=5_000)
    assert grouper.windows(12_000) == [(5_000, 15_000), (10_000, 20_000)]
    closed = feed_all(grouper, chain([entry(1, 4), entry(2, 7), entry(3, 12)]), 1000)
    assert [(g.window, [e.ref.id for e in g.entries], g.labels) for g in closed] == [
        ((-5_000, 5_000), ["d001"], (True,)),
        ((0, 10_000), ["d001", "d002"], (False, True)),
        ((5_000, 15_000), ["d002", "d003"], (False, True)),
        ((10_000, 20_000), ["d003"], (False,)),
    ]
    labelled = [e.ref.id for g in closed for e, labels in zip(g.entries, g.labels, strict=True) if labels]
    assert sorted(labelled) == ["d001", "d002", "d003"]  # each entry labelled exactly once


def test_group_ids_are_deterministic_and_depend_on_settings() -> None:
    items = chain([entry(1, 0, "A"), entry(2, 1, "A")])
    first = feed_all(build_grouper(SESSION), items, 1000)
    again = feed_all(build_grouper(SESSION), items, 1000)
    other = feed_all(build_grouper(SESSION.model_copy(update={"inactivity_gap_s": 11})), items, 1000)
    assert [g.group_id for g in first] == [g.group_id for g in again]
    assert first[0].group_id != other[0].group_id
    assert grouping_signature(SESSION).startswith("session-")
    assert grouping_signature(SESSION) != grouping_signature(SESSION.model_copy(update={"max_length": 4}))


# ------------------------------------------------------------------------- restore + replay

RESTORE_SETTINGS = [
    GroupingSettings(mode="session", inactivity_gap_s=10, max_length=3),
    GroupingSettings(mode="count_window", count=3, inactivity_gap_s=10),
    GroupingSettings(mode="time_window", window_s=10),
    GroupingSettings(mode="time_window", window_s=10, step_s=4),
]


def _stream() -> list[Entry]:
    keys = ["A", "B", "A", "C", "B", "A", "A", "B", "C", "A", "B", "B", "A", "C", "A", "A", "B"]
    times = [0, 1, 2, 2, 3, 4, 15, 16, 17, 18, 19, 30, 31, 31, 32, 45, 60]
    return chain([entry(n, t, k) for n, (t, k) in enumerate(zip(times, keys, strict=True), start=1)])


@pytest.mark.parametrize("watermark", [False, True], ids=["mid-pass", "pass-end"])
@pytest.mark.parametrize("settings", RESTORE_SETTINGS, ids=lambda s: s.mode + (f"-step{s.step_s}" if s.step_s else ""))
def test_a_restart_at_any_point_forms_exactly_the_same_groups(settings: GroupingSettings, watermark: bool) -> None:
    """Cut the stream after every entry, as a crash would: restore from the open-group states,
    replay from the resume point up to the cut, continue. Groups closed before the cut plus
    groups closed after must equal an uninterrupted run, member for member, label for label.
    "pass-end" cuts where a pass would end: the watermark (the next entry's time) closes groups
    before the checkpoint."""
    stream = _stream()
    whole = feed_all(build_grouper(settings), stream, 1000)
    for cut in range(len(stream) + 1):
        before = build_grouper(settings)
        closed = [group for item in stream[:cut] for group in before.feed(item)]
        if watermark and 0 < cut < len(stream):
            if stream[cut].timestamp_ms == stream[cut - 1].timestamp_ms:
                continue  # a pass never ends between two documents of the same millisecond
            closed.extend(before.close_until(stream[cut].timestamp_ms))
        states = before.open_states()
        read_position = stream[cut - 1].position if cut else None
        resume = resume_point(states, read_position)

        after = build_grouper(settings)
        after.restore(states)
        for item in stream:
            if resume is not None and item.position <= resume:
                continue
            if read_position is not None and item.position <= read_position:
                after.replay(item)
            else:
                closed.extend(after.feed(item))
        closed.extend(after.close_until(1_000_000))
        assert closed == whole, f"cut after {cut} entries"


def test_resume_point_never_passes_an_open_group() -> None:
    states = [
        OpenGroupState("g1", "A", (5, "i", "5"), (4, "i", "4")),
        OpenGroupState("g2", "B", (2, "i", "2"), (1, "i", "1")),
    ]
    assert resume_point(states, (9, "i", "9")) == (1, "i", "1")
    assert resume_point([], (9, "i", "9")) == (9, "i", "9")
    assert resume_point([OpenGroupState("g", "A", (0, "i", "0"), None)], (9, "i", "9")) is None


def test_a_restored_group_whose_members_were_deleted_is_dropped() -> None:
    grouper = build_grouper(SESSION)
    grouper.restore([OpenGroupState("gone", "A", (0, "idx", "d000"), None)])
    assert grouper.feed(chain([entry(1, 100, "B")])[0]) == []
    assert [state.key for state in grouper.open_states()] == ["B"]


def test_settings_reject_incoherent_grouping() -> None:
    with pytest.raises(ValueError, match="step_s"):
        GroupingSettings(mode="time_window", window_s=10, step_s=20)
    with pytest.raises(ValueError, match="session_field or session_regex"):
        GroupingSettings(mode="session", session_regex=None)
    with pytest.raises(ValueError, match="does not compile"):
        GroupingSettings(session_regex="(")
