"""The OpenSearch client from settings, and retries with backoff for what is worth retrying.

opensearch-py retries connection errors and 502/503/504 immediately and never 429. The worker
turns the transport's own retries down to failover between hosts and retries here instead:
exponential backoff with full jitter, capped, for 429, 5xx and connection errors, for at most
`retry.max_elapsed_s`. `classify_error` and `backoff_delays` are pure and unit-tested.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import RequestError, TransportError

from enricher.interfaces import RetriesExhausted
from enricher.settings import OpenSearchSettings, RetrySettings, env_name
from model.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
ErrorClass = Literal["retry", "auth", "fatal"]


def classify_status(status: int | str | None) -> ErrorClass:
    """What to do about an HTTP status: retry (429, 5xx), auth problem (401/403), or give up."""
    if isinstance(status, int):
        if status in RETRYABLE_STATUSES or 500 <= status < 600:
            return "retry"
        if status in (401, 403):
            return "auth"
    return "fatal"


def classify_error(error: BaseException) -> ErrorClass:
    """Classify an exception from opensearch-py (connection errors and timeouts are retried)."""
    if isinstance(error, TransportConnectionError):  # includes ConnectionTimeout and SSLError
        return "fatal" if "CERTIFICATE_VERIFY_FAILED" in str(error) else "retry"
    if isinstance(error, TransportError):
        return classify_status(error.status_code)
    return "fatal"


def backoff_delays(policy: RetrySettings, rng: random.Random) -> Iterator[float]:
    """Waits before each retry: full jitter over initial * 2^n, each capped at max_backoff_s."""
    ceiling = policy.initial_backoff_s
    while True:
        yield rng.uniform(0, ceiling)
        ceiling = min(ceiling * 2, policy.max_backoff_s)


@dataclass
class Retrier:
    """Runs calls with retries; counts them through `on_retry(operation)` (metrics)."""

    policy: RetrySettings
    on_retry: Callable[[str], None] = lambda operation: None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None

    def call(self, operation: str, function: Callable[[], T]) -> T:
        """`function()`, retried on 429/5xx/connection errors with backoff.

        Raises:
            RetriesExhausted: still failing after `policy.max_elapsed_s`.
            UserError: 401/403 (credentials) or a TLS verification failure.
            TransportError: any other error, at once.
        """
        started = self.clock()
        delays = backoff_delays(self.policy, self.rng or random.Random())
        attempts = 0
        while True:
            attempts += 1
            try:
                return function()
            except Exception as error:
                kind = classify_error(error)
                if kind == "auth":
                    raise UserError(
                        f"{operation}: the cluster refused the credentials ({error}); check "
                        f"{env_name(('opensearch', 'username'))}/{env_name(('opensearch', 'password'))} or "
                        f"{env_name(('opensearch', 'api_key'))}, and the user's index permissions"
                    ) from None
                if kind == "fatal":
                    if "CERTIFICATE_VERIFY_FAILED" in str(error):
                        raise UserError(
                            f"{operation}: TLS verification failed ({error}); give the cluster's CA with "
                            f"{env_name(('opensearch', 'ca_certs'))}"
                        ) from None
                    raise
                elapsed = self.clock() - started
                delay = next(delays)
                if elapsed + delay > self.policy.max_elapsed_s:
                    raise RetriesExhausted(operation, attempts, elapsed, error) from error
                log.warning("%s failed (%s); retry %d in %.1f s", operation, _short(error), attempts, delay)
                self.on_retry(operation)
                self.sleep(delay)


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:200] + "..."


def cluster_address(client: OpenSearch) -> str:
    """The client's hosts as scheme://host:port, without credentials (for messages)."""
    hosts = client.transport.hosts or []
    return ", ".join(f"{'https' if host.get('use_ssl') else 'http'}://{host['host']}:{host['port']}" for host in hosts)


def build_client(settings: OpenSearchSettings) -> OpenSearch:
    """An opensearch-py client for `settings`: hosts, TLS, basic auth or API key, timeout.

    The transport retries only to fail over between hosts (max_retries = hosts - 1, no status
    retries); `Retrier` does the backed-off retries.
    """
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = "ApiKey " + settings.api_key.get_secret_value()
    http_auth = None
    if settings.username is not None and settings.password is not None:
        http_auth = (settings.username, settings.password.get_secret_value())
    uses_tls = any(host.startswith("https://") for host in settings.hosts)
    tls: dict[str, Any] = {}
    if uses_tls:
        tls = {
            "use_ssl": True,
            "verify_certs": settings.verify_certs,
            "ca_certs": str(settings.ca_certs) if settings.ca_certs else None,
            "client_cert": str(settings.client_cert) if settings.client_cert else None,
            "client_key": str(settings.client_key) if settings.client_key else None,
        }
    return OpenSearch(
        hosts=list(settings.hosts),
        http_auth=http_auth,
        headers=headers or None,
        timeout=settings.timeout_s,
        max_retries=len(settings.hosts) - 1,
        retry_on_status=(),
        retry_on_timeout=True,
        # The reading, writing and lease threads each hold a connection.
        pool_maxsize=4,
        **tls,
    )


def ensure_index(client: OpenSearch, retrier: Retrier, index: str, mapping: dict[str, Any]) -> None:
    """An index template for `index` (so a deleted index comes back right) and the index itself,
    with `mapping`; an existing index gets the mapping's new fields. Idempotent.

    Raises:
        UserError: the existing index has a conflicting mapping.
    """
    template = {"index_patterns": [index], "priority": 200, "template": {"mappings": mapping}}
    retrier.call(f"put index template {index}", lambda: client.indices.put_index_template(name=index, body=template))
    if not retrier.call(f"check index {index}", lambda: client.indices.exists(index=index)):
        try:
            retrier.call(f"create index {index}", lambda: client.indices.create(index=index, body={"mappings": mapping}))
            return
        except RequestError as error:
            if error.error != "resource_already_exists_exception":  # another worker was faster
                raise
    try:
        retrier.call(f"update mapping of {index}", lambda: client.indices.put_mapping(index=index, body=mapping))
    except RequestError as error:
        raise UserError(
            f"index {index} exists with a mapping the worker cannot use ({error.info}); delete it, or configure "
            "another index name"
        ) from None
