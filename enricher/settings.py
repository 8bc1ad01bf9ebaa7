"""Configuration of the enrichment worker: one typed `Settings`, from the environment and a TOML file.

Precedence: environment (``LOGLLM_<SECTION>__<FIELD>``, e.g. ``LOGLLM_SOURCE__INDEX=logs-*``)
> TOML file (``--config FILE`` or ``LOGLLM_CONFIG_FILE``; sections as below, e.g. ``[source]``)
> defaults. Every field has a description: it is the single source for `logllm config show` and
for the hint in validation errors. Secrets are `SecretStr` and print masked.

`load_settings` turns every validation problem into one `UserError` that names the variable or
TOML key, the value seen and what is expected, so a wrong value fails at start.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import socket
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from model.detector import RuntimeSettings
from model.errors import UserError
from model.folder import SHIPPED_MODEL_DIR
from model.preprocess import HDFS_BLOCK_ID

ENV_PREFIX = "LOGLLM_"
ENV_CONFIG_FILE = "LOGLLM_CONFIG_FILE"
DEFAULT_MODEL_DIR = SHIPPED_MODEL_DIR
# OpenSearch index names: lowercase, no spaces or \/*?"<>|,#: and not starting with -_+.
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class _Section(BaseModel):
    # Unknown keys in a TOML section are typos; refusing them is what makes them visible.
    model_config = ConfigDict(extra="forbid")


def _split_commas(value: Any) -> Any:
    """Environment values arrive as one string: accept "a,b" as well as a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _check_index_name(value: str) -> str:
    if not _INDEX_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid index name: use lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


class OpenSearchSettings(_Section):
    hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        description="cluster URL(s), comma-separated or a JSON list, e.g. https://os1:9200,https://os2:9200",
    )
    verify_certs: bool = Field(True, description="verify the cluster's TLS certificate (https only)")
    ca_certs: Path | None = Field(None, description="PEM file of the CA that signed the cluster's certificate")
    client_cert: Path | None = Field(None, description="PEM client certificate for mutual TLS")
    client_key: Path | None = Field(None, description="PEM private key of client_cert")
    username: str | None = Field(None, description="basic-auth user (with password)")
    password: SecretStr | None = Field(None, description="basic-auth password")
    api_key: SecretStr | None = Field(
        None, description="API key sent as 'Authorization: ApiKey <key>' (instead of username/password)"
    )
    timeout_s: float = Field(60.0, gt=0, description="seconds to wait for one HTTP response")

    _split_hosts = field_validator("hosts", mode="before")(_split_commas)

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("give at least one URL, e.g. http://127.0.0.1:9200")
        for host in hosts:
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{host!r} is not an http(s) URL; write e.g. https://opensearch.example:9200")
        return hosts

    @field_validator("ca_certs", "client_cert", "client_key")
    @classmethod
    def _check_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file; give the path of a PEM file")
        return path

    @model_validator(mode="after")
    def _check_auth(self) -> OpenSearchSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both, or neither")
        if self.api_key is not None and self.username is not None:
            raise ValueError("choose one way to authenticate: api_key, or username + password")
        if (self.client_key is not None) and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        return self


class SourceSettings(_Section):
    index: str = Field("logs-*", min_length=1, description="index name or pattern to read log documents from")
    timestamp_field: str = Field("@timestamp", description="date field giving each document's event time")
    message_field: str = Field("message", description="field holding the log message the detector reads")
    tiebreaker_field: str = Field(
        "_id",
        description="unique sortable field that orders documents with equal timestamps (the cursor's second key); "
        "_id works everywhere but loads _id into heap on large indices: prefer a unique keyword or numeric field",
    )
    page_size: int = Field(1000, ge=1, le=10_000, description="documents per search page")
    ingest_lag_s: float = Field(
        60.0,
        ge=0,
        description="read only documents older than now minus this many seconds, so documents that arrive up to "
        "this late (shipping delay + refresh interval) are never passed by the cursor",
    )
    query: dict[str, Any] | None = Field(
        None,
        description="read only documents matching this OpenSearch query clause (query DSL as JSON or a TOML table, "
        'e.g. {"term": {"service.name": "hdfs"}}); its own checkpoint and lease by default, so workers with '
        "disjoint queries can share an index",
    )
    start_at: datetime | None = Field(
        None, description="ignore documents before this time (ISO 8601, UTC unless a zone is given; default: read all)"
    )
    pit_keep_alive: str = Field("2m", pattern=r"^\d+[smh]$", description="point-in-time keep-alive between pages")
    late_check_window_s: float = Field(
        86_400.0,
        ge=0,
        description="each pass counts unlabelled documents this far behind the cursor (arrived later than "
        "ingest_lag_s, so never read) and reports them; 0 disables the check",
    )
    future_skew_s: float = Field(
        3600.0, ge=0, description="documents stamped more than this far in the future are counted and reported"
    )

    @field_validator("query")
    @classmethod
    def _one_clause(cls, query: dict[str, Any] | None) -> dict[str, Any] | None:
        if query is not None and (len(query) != 1 or not isinstance(next(iter(query.values())), dict)):
            raise ValueError(
                'give one query clause such as {"term": {"service.name": "hdfs"}} (combine several with "bool")'
            )
        return query

    @field_validator("start_at")
    @classmethod
    def _utc_unless_zoned(cls, moment: datetime | None) -> datetime | None:
        return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


GroupingMode = Literal["session", "time_window", "count_window"]


class GroupingSettings(_Section):
    mode: GroupingMode = Field(
        "session",
        description="session: by a session key (session_field or session_regex); time_window: tumbling or "
        "sliding windows of event time; count_window: fixed numbers of consecutive documents",
    )
    session_field: str | None = Field(None, description="session mode: field holding the session key")
    session_regex: str | None = Field(
        HDFS_BLOCK_ID.pattern,
        description="session mode: regex whose distinct matches in the message are the session keys (a line "
        "naming several keys joins each session; its own label comes from the first); ignored when "
        "session_field is set",
    )
    inactivity_gap_s: float = Field(
        600.0,
        gt=0,
        description="session and count_window modes: a group closes when no document joins it for this long "
        "(event time)",
    )
    max_length: int = Field(
        128, ge=1, description="session mode: a session closes once it holds this many documents"
    )
    window_s: float = Field(60.0, gt=0, description="time_window mode: window length in seconds")
    step_s: float | None = Field(
        None, gt=0, description="time_window mode: start-to-start distance; default window_s (tumbling)"
    )
    count: int = Field(100, ge=1, description="count_window mode: documents per window")
    partition_field: str | None = Field(
        None, description="time_window and count_window modes: keep separate windows per value (e.g. host.name)"
    )

    @field_validator("session_regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} does not compile: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _check_mode(self) -> GroupingSettings:
        if self.mode == "session" and self.session_field is None and not self.session_regex:
            raise ValueError("session mode needs session_field or session_regex")
        if self.mode == "time_window" and self.step_s is not None and self.step_s > self.window_s:
            raise ValueError(f"step_s={self.step_s} > window_s={self.window_s} would leave gaps; use step_s <= window_s")
        return self


class ScoringSettings(_Section):
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="detector folder (manifest.json + weights)")
    detector: Literal["auto", "logllm", "logllama"] = Field(
        "auto",
        description="which detector model_dir must hold (LogLLM: labelled training; LogLLaMA: label-free); "
        "auto = whichever its manifest names",
    )
    label_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="label a group anomalous when its score is at least this, instead of by the detector's own "
        "rule (LogLLM: its answer, or the threshold `logllm calibrate` recorded in its folder, as in the shipped one; "
        "LogLLaMA: the Top-K rule); pick it with `logllm eval` on labelled logs "
        "(oracle_threshold in its report). It becomes part of model_version, so labels written under another threshold stay "
        "distinguishable; unset = the detector's rule",
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="LogLLaMA folders only: label by the Top-K rule with this K instead of the one stored in the "
        "folder (read the trade-off off k_sweep in the training report: the false-positive rate on held-out normal "
        "logs per K); it becomes part of model_version; unset = the folder's K",
    )
    batch_groups: int = Field(
        1024,
        ge=1,
        description="most closed groups per detector call and write: each call takes every group closed while "
        "the previous one ran, up to this many; fewer, larger calls let the detector batch better, and the "
        "checkpoint moves once all groups of a call are written",
    )
    max_message_chars: int = Field(
        10_000,
        ge=100,
        description="longer messages are cut to this many characters before scoring (counted, never dropped); "
        "the encoder reads only the first 100 tokens anyway",
    )
    max_dead_letter_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a pass stops with an error when more than this share of at least 100 documents read "
        "cannot be scored: that is a configuration problem (e.g. the wrong message_field), not bad data",
    )


class SinkSettings(_Section):
    results_index: str = Field("logllm-results", description="index receiving one document per scored group")
    dead_letter_index: str = Field(
        "logllm-dead-letter", description="index receiving documents that cannot be scored, with the reason"
    )
    bulk_actions: int = Field(1000, ge=1, description="maximum actions per bulk request")
    bulk_bytes: int = Field(5 * 2**20, ge=1024, description="maximum bytes per bulk request")

    _names = field_validator("results_index", "dead_letter_index")(_check_index_name)


class ScheduleSettings(_Section):
    interval_s: float = Field(30.0, gt=0, description="`logllm run`: seconds between the starts of two passes")


class StateSettings(_Section):
    index: str = Field("logllm-state", description="index holding checkpoints and leases")
    checkpoint_id: str | None = Field(
        None, description="name of this worker's checkpoint and lease; default: live:<source.index>"
    )
    lease_ttl_s: float = Field(
        60.0,
        ge=1,
        description="a worker that stops renewing its lease for this long loses it to a standby worker; "
        "renewed every third of it",
    )
    worker_name: str = Field(
        default_factory=socket.gethostname, description="name of this worker in leases and logs (default: hostname)"
    )

    _name = field_validator("index")(_check_index_name)


class RetrySettings(_Section):
    initial_backoff_s: float = Field(0.5, gt=0, description="first wait after a 429/5xx/connection error")
    max_backoff_s: float = Field(30.0, gt=0, description="longest single wait between retries")
    max_elapsed_s: float = Field(
        300.0, gt=0, description="give up one request (and fail the pass) after retrying this long"
    )
    max_failed_passes: int = Field(
        5, ge=1, description="`logllm run` exits with an error after this many consecutive failed passes"
    )


class MetricsSettings(_Section):
    port: int | None = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port for `logllm run` (0 or unset: off)"
    )
    address: str = Field("0.0.0.0", description="address the metrics server binds to")


class Settings(BaseSettings):
    """Everything the worker needs; see `logllm config show` for the effective values."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings, description="cluster connection")
    source: SourceSettings = Field(default_factory=SourceSettings, description="where logs are read")
    grouping: GroupingSettings = Field(default_factory=GroupingSettings, description="how logs become sequences")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings, description="the detector and its batches")
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings, description="how the detector runs here")
    sink: SinkSettings = Field(default_factory=SinkSettings, description="where labels are written")
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings, description="when passes run")
    state: StateSettings = Field(default_factory=StateSettings, description="checkpoints and leases")
    retry: RetrySettings = Field(default_factory=RetrySettings, description="retries and the error budget")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings passes the TOML file's content as init values; the environment wins.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _source_excludes_own_indices(self) -> Settings:
        patterns = [part.strip() for part in self.source.index.split(",") if part.strip()]
        for setting, name in (
            ("sink.results_index", self.sink.results_index),
            ("sink.dead_letter_index", self.sink.dead_letter_index),
            ("state.index", self.state.index),
        ):
            if any(fnmatch.fnmatchcase(name, p) for p in patterns if not p.startswith("-")):
                raise ValueError(
                    f"source.index={self.source.index!r} also matches {setting}={name!r}: the worker would read its "
                    "own documents as logs; narrow the source pattern or rename that index"
                )
        return self

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint and lease name: `state.checkpoint_id`, or live:<source.index> (plus a
        digest of `source.query` when one is set: each query has its own progress)."""
        if self.state.checkpoint_id:
            return self.state.checkpoint_id
        return f"live:{self.source.index}{query_suffix(self.source.query)}"


def query_suffix(query: dict[str, Any] | None) -> str:
    """What a `source.query` adds to a checkpoint id: "" without one, else ?query=<digest>."""
    if query is None:
        return ""
    return "?query=" + hashlib.blake2b(json.dumps(query, sort_keys=True).encode(), digest_size=6).hexdigest()


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable of a settings field, e.g. ("source", "index") -> LOGLLM_SOURCE__INDEX."""
    return ENV_PREFIX + "__".join(str(part) for part in location).upper()


def _field_info(location: tuple[str | int, ...]) -> Any:
    """The pydantic FieldInfo at `location` (None past the known fields)."""
    model_cls: Any = Settings
    info = None
    for part in location:
        fields = getattr(model_cls, "model_fields", None)
        if not fields or part not in fields:
            return info
        info = fields[part]
        model_cls = info.annotation
    return info


def _explain(error: ValidationError, config_file: Path | None) -> str:
    lines = []
    for problem in error.errors():
        location = tuple(problem["loc"])
        key = ".".join(str(p) for p in location)
        where = f"{key} ({env_name(location)}" + (f", or {key} in {config_file})" if config_file else ")")
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown setting; see `logllm config show` for the valid names")
            continue
        info = _field_info(location)
        value = problem.get("input")
        secret = info is not None and "SecretStr" in str(info.annotation)
        seen = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        hint = info.description if info is not None else None
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}{seen}: {message}" + (f"; expected: {hint}" if hint else ""))
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Effective settings: environment > `config_file` (or $LOGLLM_CONFIG_FILE) > `overrides` > defaults.

    `overrides` are for programmatic use (tests, benchmarks), given as section dicts.

    Raises:
        UserError: the file cannot be read or parsed, or a value is invalid (naming the variable,
            the TOML key, the value and the fix).
    """
    path = config_file or (Path(os.environ[ENV_CONFIG_FILE]) if os.environ.get(ENV_CONFIG_FILE) else None)
    values: dict[str, Any] = dict(overrides)
    if path is not None:
        try:
            with path.open("rb") as handle:
                from_file = tomllib.load(handle)
        except OSError as exc:
            raise UserError(f"config file {path}: {exc.strerror}; check --config / {ENV_CONFIG_FILE}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path}: not valid TOML ({exc}); fix the syntax") from None
        for section, content in from_file.items():
            if isinstance(content, dict) and isinstance(values.get(section), dict):
                values[section] = {**values[section], **content}
            else:
                values[section] = content
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise UserError(_explain(exc, path)) from None


def _mask(value: Any) -> Any:
    return "**********" if isinstance(value, SecretStr) and value.get_secret_value() else value


def _render_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return json.dumps(_mask(value))
    if isinstance(value, Path | datetime):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_render_value(item) for item in value) + "]"
    if isinstance(value, dict):  # a TOML inline table
        return "{ " + ", ".join(f"{json.dumps(key)} = {_render_value(item)}" for key, item in value.items()) + " }"
    return json.dumps(value)


def render_settings(settings: Settings) -> str:
    """The effective settings as TOML, secrets masked, each key preceded by its description.

    Unset optional values are shown commented out, so the output is itself a valid config file.
    """
    out: list[str] = []
    for section_name, section_info in type(settings).model_fields.items():
        section = getattr(settings, section_name)
        out.append(f"# {section_info.description}")
        out.append(f"[{section_name}]")
        for name, info in type(section).model_fields.items():
            value = getattr(section, name)
            out.append(f"# {info.description}")
            out.append(f"# {name} =" if value is None else f"{name} = {_render_value(value)}")
        out.append("")
    return "\n".join(out)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-compatible data with secrets masked (for logs and --json)."""
    dumped = settings.model_dump(mode="json")
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, SecretStr):
                dumped[section_name][name] = _mask(value)
    return dumped
