"""RFC 9457 problem details: the body of every error the gateway itself produces."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from edgegw.chain import LocalReply
from edgegw.tracing import current_trace_id

PROBLEM_TYPE = b"application/problem+json"


def problem(status: int, detail: str, instance: str = "", **extra: Any) -> LocalReply:
    """A ``LocalReply`` with an ``application/problem+json`` body (RFC 9457 §3)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    doc: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    if instance:
        doc["instance"] = instance
    doc.update(extra)
    trace_id = current_trace_id()  # tracing on: the id to find this request's trace by
    if trace_id is not None:
        doc["trace_id"] = trace_id
    return LocalReply(status, [(b"content-type", PROBLEM_TYPE)], json.dumps(doc).encode())
