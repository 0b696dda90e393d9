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

import json
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from edgegw.chain import CallResponse
from edgegw.errors import StoreError, StoreUnavailable
from edgegw.model import StoreConfig
from edgegw.observe import metrics
from edgegw.store.base import FlagSnapshot, RateDecision, Store, check_rate_request
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


class StoreAPI:
    """The API over one ``Store`` with the configured failure policy."""

    def __init__(self, store: Store, config: StoreConfig) -> None:
        self.store = store
        self.on_error = config.on_error
        self._fallback = host_memory_store()  # on_error: local
        self._last_flags = FlagSnapshot(0, {})
        self._down_until = 0.0  # while the store is known down, answer without waiting on it
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
            status, doc = await self._rate_limit(body, remote)
            return status, doc.as_json() if isinstance(doc, RateDecision) else doc
        if path == "/v1/flags" and method == "GET":
            return 200, (await self.flags()).as_json()
        return 404, {"title": "Not Found", "status": 404, "detail": f"no store API at {path}"}

    async def _rate_limit(self, body: bytes, remote: bool) -> tuple[int, Any]:
        try:
            doc = json.loads(body or b"null")
            key, rate, burst, period_ms, cost = check_rate_request(doc, remote)
        except ValueError as exc:
            return 400, {"title": "Bad Request", "status": 400, "detail": str(exc)}
        try:
            if time.monotonic() < self._down_until:
                raise StoreUnavailable("store down (retrying shortly)")
            started = time.perf_counter()
            try:
                decision = await self.store.rate_limit(key, rate, burst, period_ms, cost)
            except StoreError:
                _observe("ratelimit", "error", started)
                raise
            _observe("ratelimit", "ok", started)
            if self._down_until:
                log.warning("store reachable again")
                self._down_until = 0.0
            STORE_UP.set(1)
        except StoreUnavailable as exc:
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
                return 503, {"title": "Service Unavailable", "status": 503, "detail": str(exc)}
            if self.on_error == "local":
                decision = await self._fallback.rate_limit(key, rate, burst, period_ms, cost)
            else:
                return 200, {"allowed": True, "remaining": burst, "reset_ms": 0,
                             "retry_after_ms": 0, "limit": burst, "degraded": True}  # fmt: skip
        except StoreError as exc:
            log.error("store refused a rate-limit request: %s", exc)
            return 500, {"title": "Internal Server Error", "status": 500, "detail": str(exc)}
        return 200, decision

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

    async def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
    ) -> CallResponse:
        """``edgegw.chain.HttpCall`` for the in-process ``edgegw.store`` cluster."""
        if method == "POST" and path == "/v1/ratelimit":  # one per rate-limited request
            status, doc = await self._rate_limit(body, False)
            if isinstance(doc, RateDecision):
                return CallResponse(status, list(JSON), doc.json_bytes())
        else:
            status, doc = await self.handle(method, path, body)
        return CallResponse(status, list(JSON), json.dumps(doc).encode())

    async def aclose(self) -> None:
        await self.store.aclose()


def _observe(op: str, outcome: str, started: float) -> None:
    metrics.observe(STORE_SECONDS, STORE_BUCKETS, (op, outcome), time.perf_counter() - started)
