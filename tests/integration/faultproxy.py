"""A small fault-injecting HTTP proxy on loopback, in front of the real OpenSearch node.

For each request, a plan (request number, method, path) -> fault decides what happens:

    None             forwarded unchanged
    "429"            answered 429 es_rejected_execution_exception; never reaches the node
    "drop_before"    the connection is closed before forwarding (the request is not applied)
    "drop_after"     forwarded, then the connection is closed instead of answering (the request
                     IS applied; only the answer is lost)
    "bulk_items"     forwarded; in a _bulk answer the first items are turned into per-item 429s
                     (they were applied; the client must still re-send them)

One request per connection (answers carry `Connection: close`), so a fault never leaks into a
following request. Counts of every fault injected are kept for the tests to check.
"""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import struct
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Fault = str | None
Plan = Callable[[int, str, str], Fault]
BULK_ITEMS_REJECTED = 3
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """Start with `start()`, point the client at `url`, read `injected` afterwards."""

    def __init__(self, upstream: str, plan: Plan) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 9200)
        self.plan = plan
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._handle(self)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: socketserver.StreamRequestHandler) -> None:
        request_line = handler.rfile.readline().decode("latin-1").strip()
        if not request_line:
            return
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = handler.rfile.readline().decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests += 1
            fault = self.plan(self.requests, method, path)
            if fault is not None:
                self.injected[fault] += 1
        if fault == "drop_before":
            _hang_up(handler)
            return
        if fault == "429":
            error = {"error": {"type": "es_rejected_execution_exception", "reason": "injected"}, "status": 429}
            _answer(handler, 429, "Too Many Requests", {"content-type": "application/json"}, json.dumps(error).encode())
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            upstream.request(method, path, body=body or None, headers=forwarded)
            response = upstream.getresponse()
            data = response.read()
            reply_headers = {k.lower(): v for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS}
            status, reason = response.status, response.reason
        except OSError:  # the node is down: a connection error for the client too
            _hang_up(handler)
            return
        finally:
            upstream.close()
        if fault == "drop_after":
            _hang_up(handler)
            return
        if fault == "bulk_items" and path.split("?")[0].endswith("/_bulk") and status == 200:
            data = _reject_bulk_items(data)
        length_header = response.getheader("content-length") if method == "HEAD" else None
        _answer(handler, status, reason, reply_headers, data, length_header)


def _reject_bulk_items(data: bytes) -> bytes:
    answer: dict[str, Any] = json.loads(data)
    for item in answer["items"][:BULK_ITEMS_REJECTED]:
        ((operation, result),) = item.items()
        item[operation] = {
            "_index": result.get("_index"),
            "_id": result.get("_id"),
            "status": 429,
            "error": {"type": "es_rejected_execution_exception", "reason": "injected per-item rejection"},
        }
    answer["errors"] = True
    return json.dumps(answer).encode()


def _answer(
    handler: socketserver.StreamRequestHandler,
    status: int,
    reason: str,
    headers: dict[str, str],
    body: bytes,
    length: str | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} {reason}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += [f"content-length: {length if length is not None else len(body)}", "connection: close", "", ""]
    handler.wfile.write("\r\n".join(head).encode("latin-1") + body)
    handler.wfile.flush()


def _hang_up(handler: socketserver.StreamRequestHandler) -> None:
    """Close without answering; RST rather than FIN so the client cannot mistake it for an
    empty answer."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
