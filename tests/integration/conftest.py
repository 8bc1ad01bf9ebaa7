"""Fixtures for tests against the real local OpenSearch node (never a mock).

`opensearch_url` starts the node if it is not up (`enricher.localnode.ensure_running`) and leaves
it running for the next run and for other users. If the node cannot be started, every test here
fails with the reason rather than being skipped: the default test run covers all tiers, and a
skipped tier would look like a passed one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from enricher.localnode import ensure_running
from model.errors import UserError

_HERE = Path(__file__).resolve().parent


# tryfirst: the marks must be on the items before pytest's own hook applies `-m` to them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test under tests/integration `integration`, so new files need no boilerplate.

    pytest calls this hook with the items of the whole session, hence the directory check.
    """
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The URL of a healthy local node, started if needed; fails every test that uses it if not."""
    try:
        return ensure_running()
    except UserError as error:
        reason = str(error)
    # Outside the except block, so the report shows the reason rather than a chained traceback.
    pytest.fail(f"the local OpenSearch node could not be started: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def os_client(opensearch_url: str) -> Iterator[OpenSearch]:
    """An opensearch-py client for the local node, shared by the session."""
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    yield client
    client.close()


@pytest.fixture
def index_prefix(request: pytest.FixtureRequest, os_client: OpenSearch) -> Iterator[str]:
    """A prefix no other test uses, e.g. "test-roundtrip-3f9c1a2b-"; its indices go afterwards.

    Name every index a test creates with it: teardown deletes all indices matching
    `<prefix>*`, so each test cleans up after itself even when it fails.
    """
    # Index names must be lowercase and free of most punctuation; the test name is only there
    # to make leftovers recognisable, the random part makes the prefix unique.
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    prefix = f"test-{slug}-{uuid.uuid4().hex[:8]}-"
    yield prefix
    os_client.indices.delete(index=f"{prefix}*", expand_wildcards="all", ignore_unavailable=True)
