"""Filter-defined metrics (edgegw/wasm/shared.py): kept exactly for proxy_get_metric,
handed to prometheus_client in batches at edgegw.metrics.flush."""

from __future__ import annotations

from prometheus_client import REGISTRY

from edgegw import metrics
from edgegw.wasm.abi import MetricType, Status
from edgegw.wasm.shared import Metrics, SharedQueues


def sample(name: str, metric: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"filter": "test-shared", "name": metric})


async def test_counters_and_gauges_are_exported_at_flush_histograms_at_once() -> None:
    # In a running loop, as in a worker: flush_soon defers to a timer (FLUSH_SECONDS).
    shared = Metrics()
    counter = shared.define("test-shared", int(MetricType.COUNTER), "c")
    gauge = shared.define("test-shared", int(MetricType.GAUGE), "g")
    histogram = shared.define("test-shared", int(MetricType.HISTOGRAM), "h")
    assert counter is not None and gauge is not None and histogram is not None
    metrics.flush()
    assert shared.increment(counter, 2) == shared.increment(counter, 3) == Status.OK
    assert shared.record(counter, 10) == Status.OK  # +5
    assert shared.record(gauge, 7) == shared.increment(gauge, -2) == Status.OK
    assert shared.record(histogram, 3) == Status.OK
    # proxy_get_metric sees every change at once; /metrics after the next flush.
    assert (shared.get(counter), shared.get(gauge)) == (10, 5)
    assert sample("edgegw_filter_counter_total", "c") == 0.0
    assert sample("edgegw_filter_gauge", "g") == 0.0
    assert sample("edgegw_filter_histogram_count", "h") == 1.0
    assert metrics._timer is not None  # the flush is due
    metrics.flush()
    assert sample("edgegw_filter_counter_total", "c") == 10.0
    assert sample("edgegw_filter_gauge", "g") == 5.0
    # A counter set lower is not exported lower: only its increases count.
    assert shared.record(counter, 4) == shared.record(counter, 6) == Status.OK
    metrics.flush()
    assert sample("edgegw_filter_counter_total", "c") == 12.0 and shared.get(counter) == 6
    assert shared.increment(counter, -1) == Status.BAD_ARGUMENT
    assert shared.increment(histogram, 1) == Status.BAD_ARGUMENT
    assert shared.increment(99, 1) == Status.NOT_FOUND


def test_a_closed_vm_is_no_longer_notified_by_its_queues() -> None:
    """Plugin.close forgets its on_queue_ready: the process-wide queues must not keep a
    closed VM alive; the queue and its items stay for the VM that registers it next."""
    queues = SharedQueues()
    told: list[tuple[str, int]] = []

    def old(qid: int) -> None:
        told.append(("old", qid))

    def new(qid: int) -> None:
        told.append(("new", qid))

    qid = queues.register(b"vm", b"q", old)
    queues.forget(old)
    assert queues.enqueue(qid, b"kept") == Status.OK
    assert told == []
    assert queues.register(b"vm", b"q", new) == qid
    assert queues.enqueue(qid, b"more") == Status.OK
    assert told == [("new", qid)]
    assert queues.dequeue(qid) == b"kept"
