"""LogLLaMA key mapping: Drain templates frozen after fitting, stable across save/load, and a
key file that is plain data (never executed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from model.errors import UserError
from model.logkeys import LogKeyMap
from model.preprocess import LogLine, iter_log_lines
from training.shared_data import BGL_TEMPLATES, HDFS_2K

E30 = "BLOCK* ask"  # "BLOCK* ask <ip> to delete ...": absent from HDFS_2pct (data README)


@pytest.fixture(scope="module")
def hdfs_messages() -> list[str]:
    with HDFS_2K.open(newline="") as handle:
        return [line.message for line in iter_log_lines(handle, "hdfs") if isinstance(line, LogLine)]


@pytest.fixture(scope="module")
def fitted(hdfs_messages: list[str]) -> LogKeyMap:
    return LogKeyMap.fit(m for m in hdfs_messages if not m.startswith(E30))


def test_fit_finds_hdfs_templates_with_variables_masked(fitted: LogKeyMap) -> None:
    assert 10 <= fitted.n_keys <= 30
    assert "Receiving block <*> src: <*> dest: <*>" in fitted.templates
    assert not any("blk_" in t for t in fitted.templates)


def test_every_training_message_maps_to_a_real_key(fitted: LogKeyMap, hdfs_messages: list[str]) -> None:
    keys = fitted.keys_of(m for m in hdfs_messages if not m.startswith(E30))
    assert fitted.unk not in keys
    assert set(keys) == set(range(fitted.n_keys))


def test_unseen_template_maps_to_unk_and_the_map_stays_frozen(fitted: LogKeyMap, hdfs_messages: list[str]) -> None:
    e30 = [m for m in hdfs_messages if m.startswith(E30)]
    assert e30, "HDFS_2k holds E30 lines"
    before = (fitted.n_keys, fitted.templates)
    assert {fitted.key_of(m) for m in e30} == {fitted.unk}
    assert fitted.key_of("a message of a kind never seen before") == fitted.unk
    assert fitted.name(fitted.unk) == "<unk>"
    assert (fitted.n_keys, fitted.templates) == before


def test_keys_are_stable_across_save_and_load(fitted: LogKeyMap, hdfs_messages: list[str], tmp_path: Path) -> None:
    sha = fitted.save(tmp_path / "logkeys.json")
    loaded = LogKeyMap.load(tmp_path / "logkeys.json", sha)
    assert loaded.names == fitted.names and loaded.templates == fitted.templates
    probes = [*hdfs_messages, "never seen", "", "Receiving block blk_1 src: /1.2.3.4:5 dest: /1.2.3.4:6"]
    assert loaded.keys_of(probes) == fitted.keys_of(probes)
    # The written file is deterministic: saving the loaded map gives the same bytes.
    assert loaded.save(tmp_path / "again.json") == sha


def test_fitting_is_deterministic(hdfs_messages: list[str]) -> None:
    first = LogKeyMap.fit(hdfs_messages).to_json()
    second = LogKeyMap.fit(hdfs_messages).to_json()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_bgl_event_ids_are_the_keys() -> None:
    with BGL_TEMPLATES.open(newline="") as handle:
        rows = [(r["EventId"], r["EventTemplate"]) for r in csv.DictReader(handle)]
    keymap = LogKeyMap.from_templates([n for n, _ in rows], [t for _, t in rows])
    assert keymap.n_keys == 450
    assert [keymap.name(keymap.key_of(t)) for _, t in rows] == [n for n, _ in rows]
    reloaded = LogKeyMap.from_json(json.loads(json.dumps(keymap.to_json())))
    assert [reloaded.name(reloaded.key_of(t)) for _, t in rows] == [n for n, _ in rows]


def test_from_templates_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="distinct"):
        LogKeyMap.from_templates(["a", "a"], ["x", "y"])
    with pytest.raises(ValueError, match="templates"):
        LogKeyMap.from_templates(["a"], ["x", "y"])


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d.update({"clusters": [{"py/object": "os.system", "py/state": "echo pwned"}]}), id="jsonpickle-object"),
        pytest.param(lambda d: d["clusters"][0].update({"tokens": {"py/reduce": [{"py/function": "os.system"}]}}), id="jsonpickle-reduce"),
        pytest.param(lambda d: d["clusters"][0].update({"id": "1"}), id="id-as-string"),
        pytest.param(lambda d: d["drain"].update({"depth": True}), id="bool-as-int"),
        pytest.param(lambda d: d["keys"].append({"name": "K999", "cluster_id": 999}), id="dangling-key"),
        pytest.param(lambda d: d.update({"format": "drain3-jsonpickle"}), id="wrong-format"),
        pytest.param(lambda d: d.update({"mask": "eval"}), id="unknown-mask"),
        pytest.param(lambda d: d.pop("tree"), id="missing-tree"),
    ],
)
def test_loading_accepts_only_plain_typed_data(fitted: LogKeyMap, mutate: object) -> None:
    data = json.loads(json.dumps(fitted.to_json()))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(UserError, match="not a valid LogLLaMA key map"):
        LogKeyMap.from_json(data)


def test_a_tree_nested_beyond_any_drain_depth_is_refused(fitted: LogKeyMap) -> None:
    data = json.loads(json.dumps(fitted.to_json()))
    node: dict[str, object] = {"cluster_ids": [], "children": {}}
    data["tree"] = node
    for _ in range(100):
        child: dict[str, object] = {"cluster_ids": [], "children": {}}
        node["children"] = {"x": child}
        node = child
    with pytest.raises(UserError, match="deeper"):
        LogKeyMap.from_json(data)


def test_an_edited_key_file_is_refused(fitted: LogKeyMap, tmp_path: Path) -> None:
    path = tmp_path / "logkeys.json"
    sha = fitted.save(path)
    path.write_text(path.read_text().replace("Receiving", "Receivin"))
    with pytest.raises(UserError, match="does not match its hash"):
        LogKeyMap.load(path, sha)
    with pytest.raises(UserError, match="cannot read"):
        LogKeyMap.load(tmp_path / "missing.json")


def test_a_map_keeping_some_keys_sends_the_others_to_unk(fitted: LogKeyMap, hdfs_messages: list[str], tmp_path: Path) -> None:
    receiving = fitted.templates.index("Receiving block <*> src: <*> dest: <*>")
    kept = fitted.keeping(k for k in range(fitted.n_keys) if k != receiving)
    assert kept.n_keys == fitted.n_keys - 1
    assert "Receiving block <*> src: <*> dest: <*>" not in kept.templates
    messages = [m for m in hdfs_messages if not m.startswith(E30)]
    for message, before, after in zip(messages, fitted.keys_of(messages), kept.keys_of(messages), strict=True):
        if before == receiving:
            assert after == kept.unk, message  # still matches its own template, which is no key now
        else:
            assert kept.template(after) == fitted.template(before), message
    loaded = LogKeyMap.load(tmp_path / "kept.json", kept.save(tmp_path / "kept.json"))
    assert loaded.keys_of(messages) == kept.keys_of(messages)
    with pytest.raises(ValueError, match="not all within"):
        fitted.keeping([fitted.n_keys])
