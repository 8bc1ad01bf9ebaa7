"""One active worker per source: a lease document in the state index, with an expiry.

    acquire: no lease, an expired one, or our own -> write it (compare-and-set) -> active
             someone else's, unexpired             -> standby (report holder and expiry)
    renew:   compare-and-set on the version we wrote last; a conflict means another worker took
             it after our lease expired -> LeaseLost, and we stop before committing anything
    release: expire it at once (clean shutdown), so a standby takes over without waiting

Expiry compares wall clocks of different hosts, so `lease_ttl_s` must be much larger than their
skew. The lease keeps two workers from doing the same work; correctness does not depend on it,
because checkpoints are compare-and-set too and every write is idempotent.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError

from enricher.client import Retrier
from enricher.interfaces import LeaseLost, LeaseStatus
from enricher.types import Version, write_preconditions

log = logging.getLogger(__name__)


def lease_doc_id(checkpoint_id: str) -> str:
    return f"lease:{checkpoint_id}"


class OpenSearchLease:
    """`Lease` kept in the state index. Thread-safe: a heartbeat thread renews it while the
    pipeline thread checks it before each commit."""

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        checkpoint_id: str,
        holder: str,
        ttl_s: float,
        retrier: Retrier,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.index = index
        self.checkpoint_id = checkpoint_id
        self.holder = holder
        self.ttl_ms = round(ttl_s * 1000)
        self.retrier = retrier
        self.clock = clock
        self._lock = threading.Lock()
        self._version: Version | None = None  # set while we hold the lease
        self._renewed_ms = 0

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _read(self) -> tuple[dict[str, Any], Version] | None:
        found = self.retrier.call(
            "read lease",
            lambda: self.client.get(index=self.index, id=lease_doc_id(self.checkpoint_id), params={"ignore": 404}),
        )
        if not found.get("found"):
            return None
        return found["_source"], Version(found["_seq_no"], found["_primary_term"])

    def _write(self, expected: Version | None, expires_ms: int) -> Version:
        """Compare-and-set the lease document; raises ConflictError if it moved since `expected`."""
        # The nonce recognises our own write when a retried request finds it already applied
        # (the first answer was lost): that conflict is no conflict.
        nonce = uuid.uuid4().hex
        body = {
            "kind": "lease",
            "checkpoint_id": self.checkpoint_id,
            "holder": self.holder,
            "expires_ms": expires_ms,
            "updated_ms": self._now_ms(),
            "nonce": nonce,
        }
        params = write_preconditions(expected)
        try:
            response = self.retrier.call(
                "write lease",
                lambda: self.client.index(
                    index=self.index, id=lease_doc_id(self.checkpoint_id), body=body, params=params
                ),
            )
        except ConflictError:
            stored = self._read()
            if stored is not None and stored[0].get("nonce") == nonce:
                return stored[1]
            raise
        return Version(response["_seq_no"], response["_primary_term"])

    def current(self) -> tuple[str, int] | None:
        """(holder, expires_ms) of the stored lease, whoever holds it; None if never taken.
        A released lease expires at 0."""
        stored = self._read()
        return (stored[0]["holder"], stored[0]["expires_ms"]) if stored is not None else None

    def acquire(self) -> LeaseStatus:
        with self._lock:
            now = self._now_ms()
            current = self._read()
            if current is not None:
                source, version = current
                if source["holder"] != self.holder and source["expires_ms"] > now:
                    self._version = None
                    return LeaseStatus(False, source["holder"], source["expires_ms"])
                expected: Version | None = version
            else:
                expected = None
            try:
                self._version = self._write(expected, now + self.ttl_ms)
            except ConflictError:
                # Another worker wrote the lease between our read and write.
                self._version = None
                theirs = self._read()
                holder, expires = (theirs[0]["holder"], theirs[0]["expires_ms"]) if theirs else ("?", 0)
                return LeaseStatus(False, holder, expires)
            if current is None or current[0]["holder"] != self.holder:
                log.info("lease on %s acquired by %s", self.checkpoint_id, self.holder)
            self._renewed_ms = now
            return LeaseStatus(True, self.holder, now + self.ttl_ms)

    def ensure_held(self) -> None:
        with self._lock:
            if self._version is None:
                raise LeaseLost(f"{self.holder} does not hold the lease on {self.checkpoint_id}")
            now = self._now_ms()
            if now - self._renewed_ms < self.ttl_ms / 3:
                return
            try:
                self._version = self._write(self._version, now + self.ttl_ms)
            except ConflictError:
                self._version = None
                message = f"{self.holder} lost the lease on {self.checkpoint_id}: it expired and another worker took it"
                log.warning("%s", message)
                raise LeaseLost(message) from None
            self._renewed_ms = now

    def release(self) -> None:
        with self._lock:
            if self._version is None:
                return
            try:
                self._write(self._version, 0)
            except ConflictError:
                pass  # already taken over: nothing of ours to release
            self._version = None
            log.info("lease on %s released by %s", self.checkpoint_id, self.holder)


class Heartbeat:
    """Keeps a held lease renewed from a daemon thread, waking every sixth of its lifetime
    (renewal itself happens once a third has passed), so a long pass never lets it lapse. While
    the lease is not held (standby) a beat costs nothing."""

    def __init__(self, lease: Any, ttl_s: float) -> None:
        self.lease = lease
        self.period_s = ttl_s / 6
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.lease.ensure_held()
            except LeaseLost as error:
                log.debug("heartbeat: %s", error)
            except Exception as error:  # the next beat tries again; the pipeline checks before commits
                log.warning("lease renewal failed: %s", error)
