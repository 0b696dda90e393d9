"""The store's small JSON API, answered in-process for the ``edgegw.store`` cluster of
filters' http_calls and on the admin port (``/store/v1/...``) for filters in Envoy.

    POST /v1/ratelimit  {"key","rate","burst","period_ms","cost"}
                        -> 200 {"allowed","remaining","reset_ms","retry_after_ms","limit"}
    GET  /v1/flags      -> 200 {"version": N, "flags": {...}}

When the store is unreachable, ``store.on_error`` decides if it is set: ``fail_open``
answers allowed, ``fail_closed`` answers 503, ``local`` applies the limit with a memory
store (host-wide: edgegw/store/hostwide.py). Not set (the default), the answer is 503 and
the calling filter's own ``on_store_error`` decides: one policy, the filter's, unless the
user chose the store's on purpose (``edgegw check`` warns when they disagree:
edgegw/store/policy.py). Flags keep the last snapshot.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from edgegw.chain import CallResponse
from edgegw.errors import StoreError, StoreUnavailable
from edgegw.model import StoreConfig
from edgegw.observe import metrics
from edgegw.promise import Promise, promise_of
from edgegw.store.base import (
    Answer,
    FlagSnapshot,
    RateDecision,
    Step,
    Store,
    check_rate_request,
)
from edgegw.store.lease import Leases
from edgegw.store.memory import host_memory_store
from edgegw.types import Headers

log = logging.getLogger("edgegw.store")
STORE_UP = Gauge("edgegw_store_up", "1 when the store answers", multiprocess_mode="livemin")
STORE_ERRORS = Counter("edgegw_store_errors", "Store operations that failed", ["op"])
#: Store calls take from tens of microseconds (memory) to the store's timeout.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, float("inf"))  # fmt: skip
STORE_SECONDS = Histogram(
    "edgegw_store_duration_seconds",
    "Time of one store operation (op: ratelimit, flags; outcome: ok, error)",
    ["op", "outcome"],
    buckets=STORE_BUCKETS,
)
JSON: Headers = [(b"content-type", b"application/json")]
BACKOFF_SECONDS = 1.0
_DECODER = json.JSONDecoder()


class StoreAPI:
    """The API over one ``Store`` with the configured failure policy."""

    def __init__(self, store: Store, config: StoreConfig) -> None:
        self.store = store
        self.on_error = config.on_error
        self._fallback = host_memory_store()  # on_error: local
        self._last_flags = FlagSnapshot(0, {})
        self._down_until = 0.0  # while the store is known down, answer without waiting on it
        self._leases = (
            None if config.lease is None else Leases(store, config.lease, self._ask, self._decided)
        )
        # Up until an operation fails (memory:// never does). Every process of a gateway
        # exports this gauge and /metrics shows the lowest: a process that never set it
        # would report 0 while /readyz, which asks the store, says up.
        STORE_UP.set(1)

    async def handle(
        self, method: str, path: str, body: bytes, remote: bool = False
    ) -> tuple[int, Any]:
        """``(status, JSON document)`` for a request to ``path`` (without /store);
        ``remote``: it came over the network (the admin port), not from a filter."""
        path = path.partition("?")[0]
        if path == "/v1/ratelimit" and method == "POST":
            answered: Promise[tuple[int, Any]] = Promise()
            self._rate_limit(body, remote, lambda status, doc: answered.resolve((status, doc)))
            status, doc = await answered
            return status, doc.as_json() if isinstance(doc, RateDecision) else doc
        if path == "/v1/flags" and method == "GET":
            return 200, (await self.flags()).as_json()
        return 404, {"title": "Not Found", "status": 404, "detail": f"no store API at {path}"}

    def _rate_limit(self, body: bytes, remote: bool, answer: Answer) -> None:
        """Decide a /v1/ratelimit request and ``answer(status, RateDecision | document)``:
        later, from the store's callback (no task), or at once for a bad request or a
        store known to be down. The one place the failure policy applies."""
        try:
            step = check_rate_request(_parse(body), remote)
        except ValueError as exc:
            answer(400, {"title": "Bad Request", "status": 400, "detail": str(exc)})
            return
        if time.monotonic() < self._down_until:
            self._unavailable(StoreUnavailable("store down (retrying shortly)"), step, answer)
            return
        # A lease serves the gateway's own filters' cost-1 steps (store.lease); the admin
        # port's callers, and a step of another cost, are decided by the store.
        leases = self._leases
        if leases is not None and not remote and step[4] == 1 and leases.serve(step, answer):
            return
        self._ask(step, answer)

    def _ask(self, step: Step, answer: Answer) -> None:
        """One GCRA step in the store; the outcome to ``answer`` through ``_decided``."""
        pending = promise_of(self.store.rate_limit(*step))
        pending.then(functools.partial(self._decided, time.perf_counter(), step, answer))

    def _decided(
        self, started: float, step: Step, answer: Answer, decided: Promise[RateDecision]
    ) -> None:
        exc = decided.error
        if exc is None:
            _observe("ratelimit", "ok", started)
            if self._down_until:
                log.warning("store reachable again")
                self._down_until = 0.0
                STORE_UP.set(1)  # set at start; 0 only while down (a locked mmap write)
            answer(200, decided.result())
            return
        _observe("ratelimit", "error", started)
        if isinstance(exc, StoreUnavailable):
            self._unavailable(exc, step, answer)
        elif isinstance(exc, StoreError):
            log.error("store refused a rate-limit request: %s", exc)
            answer(500, {"title": "Internal Server Error", "status": 500, "detail": str(exc)})
        else:  # a bug: the request still gets an answer
            log.error("rate-limit request failed", exc_info=exc)
            answer(500, {"title": "Internal Server Error", "status": 500, "detail": repr(exc)})

    def _unavailable(self, exc: StoreUnavailable, step: Step, answer: Answer) -> None:
        STORE_ERRORS.labels("ratelimit").inc()
        if time.monotonic() >= self._down_until:
            # A real attempt failed: back off, so requests do not each wait for the
            # store's timeout; the first call after the backoff probes it again.
            if not self._down_until:
                log.warning(
                    "store unavailable (%s): on_error=%s",
                    exc,
                    self.on_error or "unset (the filter's on_store_error decides)",
                )
            self._down_until = time.monotonic() + BACKOFF_SECONDS
            STORE_UP.set(0)
        if self.on_error in ("fail_closed", None):
            answer(503, {"title": "Service Unavailable", "status": 503, "detail": str(exc)})
        elif self.on_error == "local":
            answer(200, self._fallback.decide(*step))
        else:
            _, _, burst, _, _ = step
            answer(200, {"allowed": True, "remaining": burst, "reset_ms": 0,
                         "retry_after_ms": 0, "limit": burst, "degraded": True})  # fmt: skip

    async def flags(self) -> FlagSnapshot:
        started = time.perf_counter()
        try:
            self._last_flags = await self.store.get_flags()
            _observe("flags", "ok", started)
        except StoreUnavailable as exc:
            _observe("flags", "error", started)
            STORE_ERRORS.labels("flags").inc()
            log.warning("store unavailable (%s): serving the last flag snapshot", exc)
        return self._last_flags

    def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
    ) -> Awaitable[CallResponse]:
        """``edgegw.chain.HttpCall`` for the in-process ``edgegw.store`` cluster. A rate
        limit (one per rate-limited request) is a ``Promise`` settled from the store's
        callback: the filter's ``on_http_call_response`` runs there, without a task."""
        if method == "POST" and path == "/v1/ratelimit":
            response: Promise[CallResponse] = Promise()
            self._rate_limit(body, False, functools.partial(_respond, response))
            return response
        return self._call(method, path, body)

    async def _call(self, method: str, path: str, body: bytes) -> CallResponse:
        status, doc = await self.handle(method, path, body)
        return CallResponse(status, list(JSON), json.dumps(doc).encode())

    async def aclose(self) -> None:
        await self.store.aclose()


def _parse(body: bytes) -> Any:
    """``json.loads(body or b"null")``: a filter's UTF-8 object (one per rate-limited
    request) decoded without json.loads' encoding detection and whitespace scans when it
    is one whole JSON text; anything else goes to json.loads, errors included."""
    try:
        text = body.decode()
        doc, end = _DECODER.raw_decode(text)
    except ValueError:  # UnicodeDecodeError too
        return json.loads(body or b"null")
    return doc if end == len(text) else json.loads(body)


def _respond(response: Promise[CallResponse], status: int, doc: Any) -> None:
    if isinstance(doc, RateDecision):
        response.resolve(CallResponse(status, list(JSON), doc.json_bytes()))
    else:
        response.resolve(CallResponse(status, list(JSON), json.dumps(doc).encode()))


def _observe(op: str, outcome: str, started: float) -> None:
    metrics.observe(STORE_SECONDS, STORE_BUCKETS, (op, outcome), time.perf_counter() - started)
