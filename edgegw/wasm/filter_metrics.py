"""Per filter metrics: the time of each call into a filter's stream callbacks, and what
it answered (continue, pause, reply, fail).

The header phases' common case runs in C (edgegw/wasm/native/phase.c): it times each hook call
and counts the filters that continued in the filter VM itself (``Vm.take_calls``); the
Python paths (body callbacks, pauses, replies, failures; edgegw/wasm/stream.py) add theirs
here. Both reach prometheus_client at each ``metrics.flush``, never per request.
"""

from __future__ import annotations

import weakref

from prometheus_client import Counter, Histogram

from edgegw.observe import metrics
from edgegw.wasm._native import Vm

#: A filter call takes microseconds; the C histogram's bounds (_phase_types.c) are these.
CALL_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                0.01, 0.025, float("inf"))  # fmt: skip
CALL_SECONDS = Histogram(
    "edgegw_filter_call_duration_seconds",
    "Time of one call into a filter's stream callback (guest code and its hostcalls)",
    ["filter"],
    buckets=CALL_BUCKETS,
)
OUTCOMES = Counter(
    "edgegw_filter_outcomes",
    "What a filter's stream callback answered: continue, pause, reply or fail",
    ["filter", "outcome"],
)
CONTINUE, PAUSE, REPLY, FAIL = "continue", "pause", "reply", "fail"

_vms: weakref.WeakSet[Vm] = weakref.WeakSet()
_names: dict[int, str] = {}  # id(vm) -> filter name, while it lives


def track(vm: Vm, name: str) -> None:
    """Report ``vm``'s calls as filter ``name``'s until it is gone."""
    _vms.add(vm)
    _names[id(vm)] = name
    weakref.finalize(vm, _names.pop, id(vm), None)


def outcome(name: str, what: str) -> None:
    """One answer of filter ``name`` decided in Python (pause, reply, fail, a body's
    continue)."""
    metrics.count(OUTCOMES, (name, what))


def _flush() -> None:
    for vm in list(_vms):
        continued, seconds, counts = vm.take_calls()
        if not seconds and not any(counts):
            continue
        name = _names.get(id(vm), "")
        metrics.add_observations(CALL_SECONDS.labels(name), list(counts), seconds)
        if continued:
            OUTCOMES.labels(name, CONTINUE).inc(continued)


metrics.on_flush(_flush)
