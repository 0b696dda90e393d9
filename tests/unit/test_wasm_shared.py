"""Filter-defined metrics (edgegw/wasm/shared.py): kept exactly for proxy_get_metric,
handed to prometheus_client in batches at edgegw.observe.metrics.flush."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from edgegw.observe import metrics
from edgegw.wasm._native import Table
from edgegw.wasm.abi import MetricType, Status
from edgegw.wasm.shared import Metrics, SharedQueues
from tests.wat import load_plugin, proxy_wat, write_wasm


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


_SIGNED_WAT = proxy_wat(
    """
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get (param i32 i32) (result i32)))
""",
    """
  (data (i32.const 16) "gauge")
  (data (i32.const 32) "counter")
  ;; Results at 256: the counter's status for -1, the gauge's value (u64) after +5, -1.
  (func (export "run") (local $gauge i32) (local $counter i32)
    (drop (call $define (i32.const 1) (i32.const 16) (i32.const 5) (i32.const 128)))
    (drop (call $define (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 132)))
    (local.set $gauge (i32.load (i32.const 128)))
    (local.set $counter (i32.load (i32.const 132)))
    (i32.store (i32.const 256) (call $increment (local.get $counter) (i64.const -1)))
    (drop (call $increment (local.get $gauge) (i64.const 5)))
    (drop (call $increment (local.get $gauge) (i64.const -1)))
    (drop (call $get (local.get $gauge) (i32.const 264))))
""",
)


def test_a_negative_i64_offset_arrives_signed(tmp_path: Path) -> None:
    # proxy_increment_metric's offset is an i64: -1 used to arrive as 2**64 - 1, so a
    # gauge went up by that and a counter's "offset < 0" check could never fire.
    plugin = load_plugin(write_wasm(tmp_path, "signed", _SIGNED_WAT), "test-signed")
    plugin.call("run")
    assert plugin.memory.read_u32(256) == Status.BAD_ARGUMENT  # a counter never goes down
    assert int.from_bytes(plugin.memory.read(264, 8), "little") == 4
    metrics.flush()
    labels = {"filter": "test-signed", "name": "gauge"}
    assert REGISTRY.get_sample_value("edgegw_filter_gauge", labels) == 4.0
    labels["name"] = "counter"
    assert REGISTRY.get_sample_value("edgegw_filter_counter_total", labels) == 0.0
    plugin.close()


def test_a_closed_vm_is_no_longer_notified_by_its_queues() -> None:
    """Plugin.close forgets its on_queue_ready: the process-wide queues must not keep a
    closed VM alive; the queue and its items stay for the VM that registers it next."""
    queues = SharedQueues(Table(None, 4096, 16), None)
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
