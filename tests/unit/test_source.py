"""Pure parts of the OpenSearch source and checkpoint store: mappings, index resolution, PIT
detection, checkpoint JSON."""

from __future__ import annotations

import pytest

from enricher.checkpoint import checkpoint_from_json, checkpoint_to_json
from enricher.settings import SourceSettings
from enricher.source import check_field_types, mapped_fields, resolved_indices, supports_pit
from enricher.types import Checkpoint, OpenGroupState
from model.errors import UserError

MAPPING = {
    "@timestamp": {"type": "date"},
    "message": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
    "host": {"properties": {"name": {"type": "keyword"}}},
    "seq": {"type": "long"},
    "note": {"type": "text"},
}


def test_mapped_fields_flattens_objects_and_multi_fields() -> None:
    assert mapped_fields(MAPPING) == {
        "@timestamp": "date",
        "message": "text",
        "message.raw": "keyword",
        "host.name": "keyword",
        "seq": "long",
        "note": "text",
    }


def test_good_fields_pass() -> None:
    check_field_types(SourceSettings(tiebreaker_field="seq"), ["host.name"], {"logs-1": mapped_fields(MAPPING)})


@pytest.mark.parametrize(
    ("settings", "keys", "expected"),
    [
        (SourceSettings(timestamp_field="time"), [], "LOGLLM_SOURCE__TIMESTAMP_FIELD='time': no such field in logs-1"),
        (SourceSettings(timestamp_field="seq"), [], "mapped as long in logs-1; it must be a date field"),
        (SourceSettings(message_field="msg"), [], "candidates: host.name, message, message.raw, note"),
        (SourceSettings(message_field="seq"), [], "LOGLLM_SOURCE__MESSAGE_FIELD='seq' is mapped as long"),
        (SourceSettings(tiebreaker_field="note"), [], "LOGLLM_SOURCE__TIEBREAKER_FIELD='note' is mapped as text"),
        (SourceSettings(), ["host.nmae"], "grouping field 'host.nmae'"),
    ],
)
def test_wrong_fields_are_named_with_candidates(settings: SourceSettings, keys: list[str], expected: str) -> None:
    with pytest.raises(UserError) as error:
        check_field_types(settings, keys, {"logs-1": mapped_fields(MAPPING)})
    assert expected in str(error.value)


def test_a_field_wrong_in_one_index_of_many_is_caught() -> None:
    other = dict(MAPPING, **{"@timestamp": {"type": "keyword"}})
    with pytest.raises(UserError, match="keyword in logs-2"):
        check_field_types(SourceSettings(), [], {"logs-1": mapped_fields(MAPPING), "logs-2": mapped_fields(other)})


def test_resolved_indices_cover_indices_aliases_and_data_streams() -> None:
    resolved = {
        "indices": [{"name": "a", "attributes": ["open"]}, {"name": "b", "attributes": ["closed"]}],
        "aliases": [{"name": "logs", "indices": ["c", "a"]}],
        "data_streams": [{"name": "ds", "backing_indices": [".ds-ds-000001"]}],
    }
    assert resolved_indices(resolved) == [".ds-ds-000001", "a", "c"]
    assert resolved_indices({"indices": [], "aliases": [], "data_streams": []}) == []


@pytest.mark.parametrize(
    ("version", "pit"),
    [
        ({"distribution": "opensearch", "number": "2.19.5"}, True),
        ({"distribution": "opensearch", "number": "2.4.0"}, True),
        ({"distribution": "opensearch", "number": "2.3.0"}, False),
        ({"distribution": "opensearch", "number": "3.1.0"}, True),
        ({"number": "7.10.2"}, False),
        ({"distribution": "opensearch", "number": "x"}, False),
    ],
)
def test_point_in_time_support_is_detected(version: dict[str, str], pit: bool) -> None:
    assert supports_pit({"version": version}) is pit


def test_checkpoints_survive_json() -> None:
    checkpoint = Checkpoint(
        checkpoint_id="live:logs-*",
        grouping="session-abc",
        read_position=(1000, "logs-1", "d9"),
        resume_after=(400, "logs-1", "d3"),
        open_groups=(
            OpenGroupState("g1", "blk_1", (500, "logs-1", "d4"), (400, "logs-1", "d3")),
            OpenGroupState("g2", "", (600, "logs-1", "d5"), None, (0, 60_000)),
        ),
        read_timestamp_ms=1000,
    )
    assert checkpoint_from_json(checkpoint_to_json(checkpoint)) == checkpoint
    empty = Checkpoint("c", "g", None, None)
    assert checkpoint_from_json(checkpoint_to_json(empty)) == empty
