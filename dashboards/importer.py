"""Posting an `.ndjson` export to OpenSearch Dashboards' saved-objects import API.

    POST {url}/api/saved_objects/_import?overwrite=true   (multipart/form-data, field "file")
    osd-xsrf: true                                          (Dashboards refuses writes without it)

Dashboards answers 200 with {"success": bool, "successCount": n, "errors": [...]} even when some
objects failed; those failures, non-2xx answers and an unreachable URL all become a `UserError`
that names the URL and quotes what Dashboards said.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import UserError

IMPORT_PATH = "/api/saved_objects/_import"


@dataclass(frozen=True)
class ImportResult:
    """What Dashboards reported: how many objects it stored."""

    success_count: int


def multipart_body(filename: str, content: bytes) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request carrying `content` as field "file"."""
    boundary = f"logllm-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def build_request(
    url: str, ndjson: str, *, overwrite: bool = True, username: str | None = None, password: str | None = None
) -> urllib.request.Request:
    """The import request (pure: nothing is sent)."""
    body, content_type = multipart_body("logllm-dashboards.ndjson", ndjson.encode())
    target = f"{url.rstrip('/')}{IMPORT_PATH}?overwrite={'true' if overwrite else 'false'}"
    headers = {"osd-xsrf": "true", "Content-Type": content_type}
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return urllib.request.Request(target, data=body, headers=headers, method="POST")


def _error_text(payload: Any) -> str:
    """Dashboards' own words from an error body ({"statusCode", "error", "message"})."""
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or payload)
    return str(payload)


def _object_errors(errors: list[dict[str, Any]]) -> str:
    lines = []
    for item in errors:
        error = item.get("error", {})
        detail = error.get("type", "error")
        if error.get("references"):
            missing = ", ".join(f"{ref.get('type')} {ref.get('id')}" for ref in error["references"])
            detail += f" ({missing})"
        elif error.get("message"):
            detail += f": {error['message']}"
        lines.append(f"{item.get('type')} {item.get('id')} ({item.get('title', '')}): {detail}")
    return "; ".join(lines)


def parse_response(url: str, payload: dict[str, Any], overwrite: bool) -> ImportResult:
    """The outcome of a 200 answer.

    Raises:
        UserError: Dashboards rejected some objects (each named with its reason).
    """
    errors = payload.get("errors") or []
    if not payload.get("success", False) or errors:
        hint = "" if overwrite else "; objects that already exist are conflicts: import again without --no-overwrite"
        raise UserError(
            f"OpenSearch Dashboards at {url} imported {payload.get('successCount', 0)} objects and rejected "
            f"{len(errors)}: {_object_errors(errors)}{hint}"
        )
    return ImportResult(int(payload.get("successCount", 0)))


def import_ndjson(
    url: str,
    ndjson: str,
    *,
    overwrite: bool = True,
    username: str | None = None,
    password: str | None = None,
    ca_certs: Path | None = None,
    timeout_s: float = 60.0,
) -> ImportResult:
    """Import `ndjson` into the Dashboards instance at `url`.

    Raises:
        UserError: `url` is unreachable, answers non-2xx (its message quoted), or rejects objects.
    """
    request = build_request(url, ndjson, overwrite=overwrite, username=username, password=password)
    context = None
    if ca_certs is not None:
        try:
            context = ssl.create_default_context(cafile=str(ca_certs))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"--ca-certs {ca_certs}: not a readable PEM file ({exc}); give the CA's certificate") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            said = _error_text(json.loads(text))
        except ValueError:
            said = text.strip()[:500] or error.reason
        hint = {
            401: "; give --username and set LOGLLM_DASHBOARDS_PASSWORD",
            403: "; the user needs write access to saved objects",
            404: "; is this the Dashboards URL (default port 5601), including any base path?",
        }.get(error.code, "")
        raise UserError(f"OpenSearch Dashboards at {url} answered {error.code}: {said}{hint}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"cannot reach OpenSearch Dashboards at {url} ({reason}); check --url and that Dashboards is running "
            "(default port 5601)"
        ) from None
    try:
        payload = json.loads(raw)
    except ValueError:
        raise UserError(
            f"{url} answered with something other than JSON ({raw[:200]!r}); is it an OpenSearch Dashboards URL?"
        ) from None
    return parse_response(url, payload, overwrite)
