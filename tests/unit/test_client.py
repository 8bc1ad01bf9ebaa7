"""Retry classification, backoff and the retrier, without a cluster."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import (
    AuthenticationException,
    AuthorizationException,
    ConflictError,
    ConnectionError,
    ConnectionTimeout,
    NotFoundError,
    RequestError,
    SSLError,
    TransportError,
)

from enricher.client import Retrier, backoff_delays, build_client, classify_error, classify_status, cluster_address
from enricher.interfaces import RetriesExhausted
from enricher.settings import OpenSearchSettings, RetrySettings
from model.errors import UserError


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"), (599, "retry"),
     (401, "auth"), (403, "auth"), (400, "fatal"), (404, "fatal"), (409, "fatal"), ("N/A", "fatal"), (None, "fatal")],
)
def test_statuses(status: int | str | None, kind: str) -> None:
    assert classify_status(status) == kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionError("N/A", "connection refused", None), "retry"),
        (ConnectionTimeout("TIMEOUT", "read timed out", None), "retry"),
        (SSLError("N/A", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", None), "fatal"),
        (TransportError(429, "es_rejected_execution_exception", {}), "retry"),
        (TransportError(503, "unavailable_shards_exception", {}), "retry"),
        (AuthenticationException(401, "unauthorized", {}), "auth"),
        (AuthorizationException(403, "forbidden", {}), "auth"),
        (RequestError(400, "mapper_parsing_exception", {}), "fatal"),
        (NotFoundError(404, "index_not_found_exception", {}), "fatal"),
        (ConflictError(409, "version_conflict_engine_exception", {}), "fatal"),
        (ValueError("a bug"), "fatal"),
    ],
)
def test_errors(error: BaseException, kind: str) -> None:
    assert classify_error(error) == kind


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    policy = RetrySettings(initial_backoff_s=0.5, max_backoff_s=4)
    delays = backoff_delays(policy, random.Random(3))
    ceilings = [0.5, 1, 2, 4, 4, 4]
    drawn = [next(delays) for _ in ceilings]
    assert all(0 <= d <= c for d, c in zip(drawn, ceilings, strict=True))
    assert len(set(drawn)) == len(drawn)  # jittered, not a fixed ladder


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retrier(time: FakeTime, max_elapsed_s: float = 60, counted: list[str] | None = None) -> Retrier:
    policy = RetrySettings(initial_backoff_s=1, max_backoff_s=8, max_elapsed_s=max_elapsed_s)
    sink = counted if counted is not None else []
    return Retrier(policy, on_retry=sink.append, sleep=time.sleep, clock=lambda: time.now, rng=random.Random(1))


def test_retryable_errors_are_retried_until_success() -> None:
    time, counted = FakeTime(), []
    outcomes: list[BaseException | str] = [TransportError(429, "busy", {}), ConnectionError("N/A", "reset", None), "ok"]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert retrier(time, counted=counted).call("bulk", call) == "ok"
    assert counted == ["bulk", "bulk"] and len(time.slept) == 2


def test_persistent_errors_exhaust_the_budget_with_evidence() -> None:
    time = FakeTime()
    calls = []

    def always_busy() -> None:
        calls.append(1)
        raise TransportError(503, "unavailable", {})

    with pytest.raises(RetriesExhausted, match="search: still failing after") as error:
        retrier(time, max_elapsed_s=30).call("search", always_busy)
    assert isinstance(error.value.cause, TransportError) and error.value.attempts == len(calls) > 2
    assert sum(time.slept) <= 30


def test_fatal_errors_are_not_retried() -> None:
    time = FakeTime()

    def bad_request() -> None:
        raise RequestError(400, "parsing_exception", {})

    with pytest.raises(RequestError):
        retrier(time).call("search", bad_request)
    assert time.slept == []


def test_credentials_problems_become_user_errors_naming_the_settings() -> None:
    def refused() -> None:
        raise AuthenticationException(401, "unauthorized", {})

    with pytest.raises(UserError, match="LOGLLM_OPENSEARCH__USERNAME"):
        retrier(FakeTime()).call("cluster info", refused)


def test_client_from_settings_carries_auth_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a connection is made")
    settings = OpenSearchSettings(
        hosts=["https://a:9200", "https://b:9200"], username="u", password="p", ca_certs=ca, timeout_s=7
    )
    client = build_client(settings)
    transport = client.transport
    assert transport.max_retries == 1 and transport.retry_on_status == ()
    connection = transport.connection_pool.connections[0]
    assert connection.use_ssl and connection.headers["authorization"].startswith("Basic ")
    keyed = build_client(OpenSearchSettings(hosts=["http://a:9200"], api_key="k3y"))
    assert keyed.transport.connection_pool.connection.headers["authorization"] == "ApiKey k3y"


def test_the_cluster_address_in_messages_names_every_host_without_credentials() -> None:
    client = OpenSearch(hosts=["https://admin:s3cret@search.example:9201/prefix", "http://127.0.0.1:9200"])
    assert cluster_address(client) == "https://search.example:9201, http://127.0.0.1:9200"
