"""``edgegw_filter_failures{filter}``: filter calls that failed (trap, deadline, invalid
answer), counted where ``on_error`` applies (edgegw/wasm/stream.py). Failures are rare, so
a plain dict handed to prometheus_client at ``metrics.flush`` is enough."""

from __future__ import annotations

from prometheus_client import Counter

from edgegw import metrics

FAILURES = Counter("edgegw_filter_failures", "Filter calls that failed", ["filter"])
_pending: dict[str, int] = {}


def failed(filter_name: str) -> None:
    _pending[filter_name] = _pending.get(filter_name, 0) + 1
    metrics.flush_soon()


def _flush() -> None:
    for name, count in _pending.items():
        FAILURES.labels(name).inc(count)
    _pending.clear()


metrics.on_flush(_flush)
