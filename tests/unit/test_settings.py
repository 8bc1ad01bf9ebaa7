"""Worker settings: sources and precedence, validation messages, masking, `logllm config show`."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from enricher.settings import DEFAULT_MODEL_DIR, Settings, load_settings, masked_dump, render_settings
from model.errors import UserError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LOGLLM_") and name not in ("LOGLLM_SHARED_DATA", "LOGLLM_NODE_HOME", "LOGLLM_CACHE_DIR"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_node_hdfs_sessions_and_the_shipped_detector() -> None:
    settings = load_settings()
    assert settings.opensearch.hosts == ["http://127.0.0.1:9200"]
    assert settings.grouping.mode == "session" and settings.grouping.session_regex == r"blk_-?\d+"
    assert settings.scoring.model_dir == DEFAULT_MODEL_DIR and DEFAULT_MODEL_DIR.parts[-2:] == ("shipped", "logllm-small-hdfs")
    assert settings.checkpoint_id == "live:logs-*"


def test_environment_overrides_the_file_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('[source]\nindex = "hdfs-*"\npage_size = 500\n[grouping]\nmode = "count_window"\ncount = 50\n')
    monkeypatch.setenv("LOGLLM_SOURCE__PAGE_SIZE", "250")
    monkeypatch.setenv("LOGLLM_OPENSEARCH__HOSTS", "https://a:9200, https://b:9200")
    monkeypatch.setenv("LOGLLM_NODE_PORT", "9201")  # another part's variable: not a worker setting, ignored
    settings = load_settings(config)
    assert (settings.source.index, settings.source.page_size) == ("hdfs-*", 250)
    assert (settings.grouping.mode, settings.grouping.count) == ("count_window", 50)
    assert settings.opensearch.hosts == ["https://a:9200", "https://b:9200"]
    monkeypatch.setenv("LOGLLM_CONFIG_FILE", str(config))
    assert load_settings().source.index == "hdfs-*"


def test_json_lists_and_nested_runtime_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLM_OPENSEARCH__HOSTS", '["http://x:9200"]')
    monkeypatch.setenv("LOGLLM_RUNTIME__THREADS", "2")
    settings = load_settings()
    assert settings.opensearch.hosts == ["http://x:9200"] and settings.runtime.threads == 2


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LOGLLM_SOURCE__PAGE_SIZE": "0"}, ["source.page_size", "LOGLLM_SOURCE__PAGE_SIZE", "documents per search page"]),
        ({"LOGLLM_OPENSEARCH__HOSTS": "ftp://x"}, ["LOGLLM_OPENSEARCH__HOSTS", "not an http(s) URL"]),
        ({"LOGLLM_GROUPING__SESSION_REGEX": "(blk"}, ["LOGLLM_GROUPING__SESSION_REGEX", "does not compile"]),
        ({"LOGLLM_GROUPING__MODE": "hourly"}, ["LOGLLM_GROUPING__MODE", "'session', 'time_window' or 'count_window'"]),
        ({"LOGLLM_SINK__RESULTS_INDEX": "Results"}, ["LOGLLM_SINK__RESULTS_INDEX", "lowercase"]),
        ({"LOGLLM_OPENSEARCH__USERNAME": "admin"}, ["LOGLLM_OPENSEARCH", "username and password go together"]),
        ({"LOGLLM_OPENSEARCH__CA_CERTS": "/nowhere/ca.pem"}, ["LOGLLM_OPENSEARCH__CA_CERTS", "no such file"]),
        ({"LOGLLM_SOURCE__PAGESIZE": "10"}, ["LOGLLM_SOURCE__PAGESIZE", "unknown setting"]),
        ({"LOGLLM_SCORING__DETECTOR": "gpt"}, ["LOGLLM_SCORING__DETECTOR", "'auto', 'logllm' or 'logllama'"]),
        ({"LOGLLM_SCORING__LABEL_THRESHOLD": "1.5"}, ["LOGLLM_SCORING__LABEL_THRESHOLD", "less than or equal to 1"]),
        ({"LOGLLM_SOURCE__QUERY": '{"term": {"a": 1}, "match": {"b": 2}}'}, ["LOGLLM_SOURCE__QUERY", "one query clause"]),
        ({"LOGLLM_SOURCE__QUERY": '{"term": "x"}'}, ["LOGLLM_SOURCE__QUERY", "one query clause"]),
        ({"LOGLLM_SOURCE__QUERY": "service:hdfs"}, ["LOGLLM_SOURCE__QUERY"]),
    ],
)
def test_a_wrong_value_names_the_setting_the_value_and_the_fix(
    env: dict[str, str], names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError) as error:
        load_settings()
    for name in names:
        assert name in str(error.value)


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[source\nindex = 1")
    with pytest.raises(UserError, match="broken.toml: not valid TOML"):
        load_settings(broken)
    with pytest.raises(UserError, match="missing.toml"):
        load_settings(tmp_path / "missing.toml")
    typo = tmp_path / "typo.toml"
    typo.write_text("[sorce]\nindex = 'x'\n")
    with pytest.raises(UserError, match=r"sorce \(LOGLLM_SORCE, or sorce in .*typo.toml\): unknown setting"):
        load_settings(typo)


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLM_OPENSEARCH__USERNAME", "admin")
    monkeypatch.setenv("LOGLLM_OPENSEARCH__PASSWORD", "hunter2")
    settings = load_settings()
    assert settings.opensearch.password is not None and settings.opensearch.password.get_secret_value() == "hunter2"
    for text in (render_settings(settings), json.dumps(masked_dump(settings)), repr(settings), str(settings)):
        assert "hunter2" not in text
    assert masked_dump(settings)["opensearch"]["password"] == "**********"


def test_the_rendered_config_is_a_valid_config_file_with_the_same_values(tmp_path: Path) -> None:
    settings = load_settings(source={"index": "hdfs-*"}, grouping={"mode": "time_window", "step_s": 30})
    rendered = render_settings(settings)
    assert "# field holding the log message the detector reads" in rendered
    path = tmp_path / "roundtrip.toml"
    path.write_text(rendered)
    tomllib.loads(rendered)
    assert load_settings(path) == settings


def test_a_source_query_from_env_or_file_gets_its_own_checkpoint_and_renders_as_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('[source]\nindex = "logs-*"\nquery = { term = { "service.name" = "hdfs" } }\n')
    from_file = load_settings(config)
    assert from_file.source.query == {"term": {"service.name": "hdfs"}}
    assert from_file.checkpoint_id != load_settings().checkpoint_id == "live:logs-*"
    monkeypatch.setenv("LOGLLM_SOURCE__QUERY", '{"term": {"service.name": "hdfs"}}')
    from_env = load_settings()
    assert from_env.checkpoint_id == from_file.checkpoint_id
    assert from_env.checkpoint_id.startswith("live:logs-*?query=")
    # Key order does not matter; another query is another checkpoint.
    both = {"bool": {"filter": [{"term": {"a": 1}}], "must_not": [{"term": {"b": 2}}]}}
    reordered = {"bool": {"must_not": [{"term": {"b": 2}}], "filter": [{"term": {"a": 1}}]}}
    monkeypatch.delenv("LOGLLM_SOURCE__QUERY")
    assert load_settings(source={"query": both}).checkpoint_id == load_settings(source={"query": reordered}).checkpoint_id
    assert load_settings(source={"query": both}).checkpoint_id != from_env.checkpoint_id
    # `logllm config show` writes it as a TOML inline table that loads back to the same value.
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(render_settings(load_settings(source={"query": both})))
    assert load_settings(rendered).source.query == both


def test_every_setting_is_described() -> None:
    for section_name, section in Settings.model_fields.items():
        assert section.description, section_name
        for name, field in section.annotation.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{section_name}.{name}"


def test_config_show_command(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/usr/bin:/bin", "LOGLLM_OPENSEARCH__API_KEY": "s3cr3t", "LOGLLM_SOURCE__INDEX": "app-*"}
    shown = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "config", "show", "--json"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"]["index"] == "app-*" and data["opensearch"]["api_key"] == "**********"
    assert "s3cr3t" not in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "config", "show"],
        capture_output=True,
        text=True,
        env={**env, "LOGLLM_SCHEDULE__INTERVAL_S": "-1"},
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "LOGLLM_SCHEDULE__INTERVAL_S" in bad.stderr and "greater than 0" in bad.stderr
