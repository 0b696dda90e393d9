"""The C histogram of filter calls (edgegw/wasm/_phase_types.c) buckets as
prometheus_client would with ``filter_metrics.CALL_BUCKETS``."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import REGISTRY

from edgegw.observe import metrics
from edgegw.wasm import _native, filter_metrics


def test_c_buckets_match_the_histogram_bounds() -> None:
    vm = _native.Vm()
    values = [*filter_metrics.CALL_BUCKETS[:-1], 0.0, 3e-6, 7e-5, 0.02, 30.0]
    expected = [0] * len(filter_metrics.CALL_BUCKETS)
    for seconds in values:
        vm.observe_call(seconds)
        expected[bisect_left(filter_metrics.CALL_BUCKETS, seconds)] += 1
    continued, total, counts = vm.take_calls()
    assert (continued, list(counts)) == (0, expected)
    assert abs(total - sum(values)) < 1e-9
    assert vm.take_calls() == (0, 0.0, (0,) * len(expected))  # taken: reset


class _Plugin(_native.Vm):  # as Plugin: a Python subclass, weakly referable
    pass


def test_tracked_vm_reaches_the_registry_at_flush() -> None:
    vm = _Plugin()
    filter_metrics.track(vm, "t-unit-filter")
    vm.observe_call(0.0004)
    filter_metrics.outcome("t-unit-filter", filter_metrics.PAUSE)
    metrics.flush()
    labels = {"filter": "t-unit-filter"}
    assert REGISTRY.get_sample_value("edgegw_filter_call_duration_seconds_count", labels) == 1
    bucket = {**labels, "le": "0.0005"}
    assert REGISTRY.get_sample_value("edgegw_filter_call_duration_seconds_bucket", bucket) == 1
    pause = {**labels, "outcome": "pause"}
    assert REGISTRY.get_sample_value("edgegw_filter_outcomes_total", pause) == 1
