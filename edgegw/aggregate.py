"""Fan-out aggregation: call several backends concurrently and merge their JSON.

Semantics (docs/aggregation.md): all calls start at once; each has its own timeout inside
the route's overall deadline; results merge in config order, never arrival order. A
failing ``required`` backend fails the request (502, or 504 on a timeout) naming it; an
optional one is omitted or replaced by its ``default`` and the answer says
``X-Edgegw-Completed: false``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from edgegw.chain import CallResponse, HttpCall, LocalReply
from edgegw.headers import REQUEST_ID, request_id
from edgegw.model import Aggregate, AggregateTarget
from edgegw.problem import problem
from edgegw.tracing.hooks import call_ended, call_span
from edgegw.types import Headers

log = logging.getLogger("edgegw.aggregate")

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
_BACKSTOP = 0.1  # seconds past the route's deadline before calls still running are cancelled
_MISSING = object()


@dataclass(slots=True)
class Outcome:
    """What one backend call produced, for merging and for ``_meta``."""

    target: AggregateTarget
    value: Any = None
    status: int = 0
    latency_ms: float = 0.0
    error: str = ""
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Values:
    """Where ``{...}`` template values come from."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Headers

    def lookup(self, name: str) -> str | None:
        source, _, key = name.partition(".")
        if key and source == "query":
            return self.query.get(key)
        if key and source == "header":
            wanted = key.lower().encode()
            for hname, hvalue in self.headers:
                if hname == wanted:
                    return hvalue.decode("latin-1")
            return None
        return self.params.get(name)


def render_path(template: str, values: Values) -> str:
    """Fill ``{name}`` placeholders, URL-encoding each value (``/`` included, so a value
    can never change the path's shape). Raises KeyError naming a missing value."""
    out: list[str] = []
    rest = template
    while (start := rest.find("{")) >= 0:
        end = rest.index("}", start)
        name = rest[start + 1 : end]
        value = values.lookup(name)
        if value is None:
            raise KeyError(name)
        out.append(rest[:start])
        out.append(quote(value, safe=""))
        rest = rest[end + 1 :]
    out.append(rest)
    return "".join(out)


def dot_segment_value(template: str, values: Values) -> str | None:
    """The name of a placeholder in the path part of ``template`` whose value is ``.`` or
    ``..``: URL-encoding leaves dots alone (they are unreserved, RFC 3986 §2.3), so such
    a value would become a dot segment and move the path at the backend (§5.2.4)."""
    path = template.partition("?")[0]
    while (start := path.find("{")) >= 0:
        end = path.index("}", start)
        name = path[start + 1 : end]
        if values.lookup(name) in (".", ".."):
            return name
        path = path[end + 1 :]
    return None


async def run_aggregate(
    agg: Aggregate, values: Values, call: HttpCall, authority: str = ""
) -> LocalReply:
    """Run every call of ``agg`` and build the merged response."""
    for target in agg.backends:
        if (name := dot_segment_value(target.path, values)) is not None:
            return problem(400, f"template parameter {{{name}}} may not be '.' or '..'")
    # The request's id goes to every backend, whatever forward_headers says (tracing).
    forwarded = [
        (n, v) for n, v in values.headers if n == REQUEST_ID or n.decode() in agg.forward_headers
    ]
    started = time.monotonic()
    deadline = started + agg.timeout
    tasks = [
        asyncio.ensure_future(_fetch(t, values, forwarded, call, agg, authority, deadline))
        for t in agg.backends
    ]
    # Each call ends by the route's deadline on its own (its timeout is cut to what is
    # left), so it ends as a timeout, counted as one in the upstream metrics. Cancelling
    # at the deadline is only the backstop for a call that overruns its timeout.
    _done, pending = await asyncio.wait(tasks, timeout=agg.timeout + _BACKSTOP)
    for task in pending:
        task.cancel()
    outcomes: list[Outcome] = []
    for target, task in zip(agg.backends, tasks, strict=True):
        if task in pending:
            elapsed = (time.monotonic() - started) * 1000
            outcomes.append(
                Outcome(target, error="route deadline exceeded", latency_ms=elapsed, timed_out=True)
            )
        else:
            outcomes.append(task.result())
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return merge(agg, outcomes, values.headers)


async def _fetch(
    target: AggregateTarget,
    values: Values,
    headers: Headers,
    call: HttpCall,
    agg: Aggregate,
    authority: str,
    deadline: float,
) -> Outcome:
    outcome = Outcome(target)
    try:
        path = render_path(target.path, values)
    except KeyError as exc:
        outcome.error = f"no value for template parameter {{{exc.args[0]}}}"
        return outcome
    span = call_span(target.backend, target.method, path)  # None: tracing off
    started = time.monotonic()
    own = min(target.timeout or agg.timeout, agg.timeout)
    timeout = min(own, deadline - started)
    try:
        response: CallResponse = await call(
            target.backend, target.method, path, authority, headers, b"", timeout
        )
    except asyncio.CancelledError:  # the route's backstop (run_aggregate)
        if span is not None:
            call_ended(span, 0, "cancelled")
        raise
    outcome.latency_ms = round((time.monotonic() - started) * 1000, 3)
    outcome.status = response.status
    if response.status == 0:
        outcome.error = response.error or "no response"
        outcome.timed_out = response.timed_out
        if outcome.timed_out and timeout < own:  # the route's deadline, not this backend's
            outcome.error = "route deadline exceeded"
    elif not 200 <= response.status < 300:
        outcome.error = f"status {response.status}"
    elif len(response.body) > agg.max_body:
        outcome.error = f"body over {agg.max_body} bytes"
    else:
        try:
            outcome.value = json.loads(response.body)
        except ValueError:
            outcome.error = "body is not JSON"
    if span is not None:
        call_ended(span, outcome.status, outcome.error)
    return outcome


def merge(
    agg: Aggregate, outcomes: list[Outcome], request_headers: Headers | None = None
) -> LocalReply:
    """Merge outcomes in config order; a failed required backend fails the request.
    ``request_headers`` give the request's id to log lines."""
    result: dict[str, Any] = {}
    owner: dict[str, str] = {}
    complete = True
    for outcome in outcomes:
        target = outcome.target
        if not outcome.error:
            _shape(outcome)
        if outcome.error:
            if target.required:
                return _failure(outcome)
            complete = False
            if target.default is None:
                continue
            outcome.value = target.default
        value = outcome.value
        if target.group is not None:
            value = {target.group: value}
        elif not isinstance(value, dict):  # a non-object `default` without a group
            complete = False
            continue
        for key, item in value.items():
            if key in result:
                # Rule: the earlier backend in config order keeps the key (deterministic);
                # the later value is dropped and the collision is logged.
                log.warning(
                    "aggregate: key %r from %s ignored; already set by %s request_id=%s",
                    key,
                    target.backend,
                    owner[key],
                    request_id(request_headers or []),
                )
                continue
            result[key] = item
            owner[key] = target.backend
    if agg.meta:
        result["_meta"] = {"backends": [_meta(o) for o in outcomes], "completed": complete}
    headers = [*JSON_HEADERS, (b"x-edgegw-completed", b"true" if complete else b"false")]
    return LocalReply(200, headers, json.dumps(result, separators=(",", ":")).encode())


def _shape(outcome: Outcome) -> None:
    """target → allow/deny → mapping, then the object check (errors set outcome.error)."""
    target, value = outcome.target, outcome.value
    if target.target is not None:
        value = get_path(value, target.target)
        if value is _MISSING:
            outcome.error = f"target '{target.target}' not in response"
            return
    if isinstance(value, dict):
        if target.allow:
            value = _allow(value, target.allow)
        for path in target.deny:
            _delete_path(value, path)
        if target.mapping:
            value = {target.mapping.get(k, k): v for k, v in value.items()}
    elif target.group is None:
        outcome.error = "response is not a JSON object and the backend has no group"
        return
    outcome.value = value


def get_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _allow(value: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        found = get_path(value, path)
        if found is _MISSING:
            continue
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = found
    return out


def _delete_path(value: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    node: Any = value
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def _meta(outcome: Outcome) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "backend": outcome.target.backend,
        "status": outcome.status,
        "latency_ms": outcome.latency_ms,
    }
    if outcome.target.group is not None:
        meta["group"] = outcome.target.group
    if outcome.error:
        meta["error"] = outcome.error
    return meta


def _failure(outcome: Outcome) -> LocalReply:
    backend = outcome.target.backend
    return problem(
        504 if outcome.timed_out else 502,
        f"backend '{backend}' failed: {outcome.error}",
        backend=backend,
    )
