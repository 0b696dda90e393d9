"""State filters share inside one worker process: shared data (with CAS), shared queues
and filter-defined metrics. Process-wide on purpose: it outlives VM reloads, as in Envoy."""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from edgegw import metrics
from edgegw.wasm.abi import MetricType, Status

log = logging.getLogger("edgegw.wasm")


# Bounds of shared data per worker process. ABI 0.2.1 has no delete, so without them every
# key a filter derives from client input (a rate limit per header value) would stay for the
# life of the process. docs/filters.md: the statuses a filter gets at a bound.
MAX_KEY_BYTES = 1024
MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # keys and values together


class SharedData:
    """key → (value, cas). A set with a non-zero cas that is not the current one fails
    with CAS_MISMATCH (spec: proxy_set_shared_data).

    Bounded: a key over ``max_key_bytes`` is BAD_ARGUMENT; a set that would pass
    ``max_entries`` keys or ``max_total_bytes`` of keys and values is INTERNAL_FAILURE and
    changes nothing (the ABI has no "full" status; existing keys stay writable while the
    size allows)."""

    def __init__(
        self,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_entries: int = MAX_ENTRIES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self._items: dict[bytes, tuple[bytes, int]] = {}
        self._cas = 0
        self._bytes = 0
        self._max_key = max_key_bytes
        self._max_entries = max_entries
        self._max_bytes = max_total_bytes
        self._full_logged = False

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._items.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> Status:
        current = self._items.get(key)
        if cas and (current is None or current[1] != cas):
            return Status.CAS_MISMATCH
        if current is None:
            if len(key) > self._max_key:
                return Status.BAD_ARGUMENT
            grow = len(key) + len(value)
            if len(self._items) >= self._max_entries or self._bytes + grow > self._max_bytes:
                return self._full()
        else:
            grow = len(value) - len(current[0])
            if grow > 0 and self._bytes + grow > self._max_bytes:
                return self._full()
        self._bytes += grow
        self._cas += 1
        self._items[key] = (value, self._cas)
        return Status.OK

    def _full(self) -> Status:
        if not self._full_logged:  # once per process: a full table is a steady state
            self._full_logged = True
            log.warning(
                "shared data full (%d keys, %d bytes): new keys are refused",
                len(self._items),
                self._bytes,
            )
        return Status.INTERNAL_FAILURE


@dataclass
class _Queue:
    vm_id: bytes
    name: bytes
    items: deque[bytes] = field(default_factory=deque)
    notify: Callable[[int], None] | None = None  # the registering root's on_queue_ready


class SharedQueues:
    def __init__(self) -> None:
        self._queues: dict[int, _Queue] = {}
        self._by_name: dict[tuple[bytes, bytes], int] = {}

    def register(self, vm_id: bytes, name: bytes, notify: Callable[[int], None]) -> int:
        qid = self._by_name.get((vm_id, name))
        if qid is None:
            qid = len(self._queues) + 1
            self._by_name[(vm_id, name)] = qid
            self._queues[qid] = _Queue(vm_id, name)
        self._queues[qid].notify = notify
        return qid

    def forget(self, notify: Callable[[int], None]) -> None:
        """A closed VM's root is no longer told about its queues (the queues and their
        items stay, as in Envoy, for the VM that registers them next)."""
        for queue in self._queues.values():
            if queue.notify == notify:
                queue.notify = None

    def resolve(self, vm_id: bytes, name: bytes) -> int | None:
        qid = self._by_name.get((vm_id, name))
        if qid is None and not vm_id:  # no vm_id given: any VM's queue of that name
            qid = next((q for (_v, n), q in self._by_name.items() if n == name), None)
        return qid

    def enqueue(self, qid: int, value: bytes) -> Status:
        queue = self._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(value)
        if queue.notify is not None:
            queue.notify(qid)
        return Status.OK

    def dequeue(self, qid: int) -> bytes | Status:
        queue = self._queues.get(qid)
        if queue is None:
            return Status.NOT_FOUND
        return queue.items.popleft() if queue.items else Status.EMPTY


_SANITIZE = re.compile(r"[^a-zA-Z0-9_:]")
_COUNTERS = Counter("edgegw_filter_counter", "Counters defined by filters", ["filter", "name"])
_GAUGES = Gauge(
    "edgegw_filter_gauge",
    "Gauges defined by filters",
    ["filter", "name"],
    multiprocess_mode="livesum",
)
_HISTOGRAMS = Histogram(
    "edgegw_filter_histogram", "Histograms defined by filters", ["filter", "name"]
)


@dataclass
class _Metric:
    kind: MetricType
    value: int
    child: object
    pending: int = 0  # a counter's increase not yet handed to prometheus_client
    dirty: bool = False  # a gauge's value not yet handed to prometheus_client


class Metrics:
    """proxy_define_metric & co. Values are kept here too (proxy_get_metric) and exported
    as ``edgegw_filter_{counter,gauge,histogram}{filter,name}`` on /metrics. Counters and
    gauges reach prometheus_client in batches, as the request metrics do
    (edgegw/metrics.py: a sample in a multi-worker gateway is an mmap write under a lock,
    and filters count on every request); histograms at once."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        self._ids: dict[tuple[str, int, str], int] = {}
        metrics.on_flush(self.flush)

    def define(self, filter_name: str, kind: int, name: str) -> int | None:
        if kind not in (0, 1, 2):
            return None
        key = (filter_name, kind, name)
        if key in self._ids:
            return self._ids[key]
        family = (_COUNTERS, _GAUGES, _HISTOGRAMS)[kind]
        child = family.labels(filter_name, _SANITIZE.sub("_", name))
        self._metrics.append(_Metric(MetricType(kind), 0, child))
        self._ids[key] = len(self._metrics)
        return len(self._metrics)

    def _get(self, mid: int) -> _Metric | None:
        return self._metrics[mid - 1] if 0 < mid <= len(self._metrics) else None

    def increment(self, mid: int, offset: int) -> Status:
        metric = self._get(mid)
        if metric is None or metric.kind == MetricType.HISTOGRAM:
            return Status.NOT_FOUND if metric is None else Status.BAD_ARGUMENT
        if metric.kind == MetricType.COUNTER and offset < 0:
            return Status.BAD_ARGUMENT
        metric.value += offset
        if metric.kind == MetricType.COUNTER:
            metric.pending += offset
        else:
            metric.dirty = True
        metrics.flush_soon()
        return Status.OK

    def record(self, mid: int, value: int) -> Status:
        metric = self._get(mid)
        if metric is None:
            return Status.NOT_FOUND
        if metric.kind == MetricType.HISTOGRAM:
            metric.child.observe(value)  # type: ignore[attr-defined]
        elif metric.kind == MetricType.GAUGE:
            metric.dirty = True
        else:  # a counter set lower is not exported lower: it counts increases only
            metric.pending += max(0, value - metric.value)
        metric.value = value
        metrics.flush_soon()
        return Status.OK

    def get(self, mid: int) -> int | None:
        metric = self._get(mid)
        return None if metric is None else metric.value

    def flush(self) -> None:
        """Hand pending counter increases and gauge values to prometheus_client
        (``edgegw.metrics.flush`` calls it)."""
        for metric in self._metrics:
            if metric.pending:
                metric.child.inc(metric.pending)  # type: ignore[attr-defined]
                metric.pending = 0
            if metric.dirty:
                metric.child.set(metric.value)  # type: ignore[attr-defined]
                metric.dirty = False


SHARED_DATA = SharedData()
QUEUES = SharedQueues()
METRICS = Metrics()
