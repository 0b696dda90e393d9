"""The admin UI's flag preview (edgegw/ui/preview.py) and live quantiles (edgegw/ui/live.py).
That the preview agrees with the real ab_flags filter is tests/ui/test_admin_ui.py's
test_preview_matches_the_ab_flags_filter."""

from __future__ import annotations

from edgegw.observe import metrics
from edgegw.ui import live, preview


def test_murmur3_reference_vectors() -> None:
    assert preview.murmur3_32(b"") == 0
    assert preview.murmur3_32(b"hello") == 0x248BFA47
    assert preview.murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def test_threshold_rounds_half_away_from_zero_as_zig() -> None:
    # 0.125% is 12.5 buckets: Zig's @round gives 13 where Python's round() gives 12.
    assert preview.threshold(0.125) == 13
    assert preview.threshold(25) == 2500
    assert preview.threshold(150) == 10000
    assert preview.threshold("x") == 10000
    assert preview.threshold(True) == 10000


def test_rules_in_the_filters_order() -> None:
    key = "user-1"
    b = preview.bucket("f", key)
    assert preview.evaluate("f", {"enabled": False}, key)["reason"] == "disabled"
    assert preview.evaluate("f", True, key)["on"] is True
    on_de = preview.evaluate("f", {"countries": ["de"]}, key, country="DE")
    assert on_de["on"] is True
    assert preview.evaluate("f", {"countries": ["DE"]}, key, country="FR")["on"] is False
    rule = {"headers": {"x-beta": ["1"]}}
    assert preview.evaluate("f", rule, key, headers={"X-Beta": "1"})["on"] is True
    assert preview.evaluate("f", rule, key, headers={"x-beta": "2"})["on"] is False
    claims = {"claims": {"plan": ["pro"], "n": ["3"]}}
    assert preview.evaluate("f", claims, key, claims={"plan": ["free", "pro"], "n": 3})["on"]
    assert not preview.evaluate("f", claims, key)["on"]
    assert not preview.evaluate("f", {"claims": {"r": ["1.5"]}}, key, claims={"r": 1.5})["on"]
    limit = b + 1  # a rollout just above the key's bucket turns it on, at it turns it off
    assert preview.evaluate("f", {"rollout": limit / 100}, key)["on"] is True
    assert preview.evaluate("f", {"rollout": b / 100}, key)["on"] is False


def test_quantile_interpolates_inside_a_bucket() -> None:
    counts = [0.0] * len(metrics.BUCKETS)
    i = metrics.BUCKETS.index(0.01)
    for j in range(i, len(counts)):  # 10 observations in (0.005, 0.01]
        counts[j] = 10
    q = live.quantile(0.5, counts)
    assert q is not None and 0.005 < q < 0.01
    assert live.quantile(0.5, [0.0] * len(counts)) is None


def test_series_gives_rates_between_samples() -> None:
    m = live.LiveMetrics()
    first = live.RouteTotals(count=10, errors=0)
    second = live.RouteTotals(count=30, errors=5)
    m.add(live.Sample(100.0, {"r": first}, {}, {}, {}))
    m.add(live.Sample(102.0, {"r": second}, {}, {}, {}))
    point = m.series(["r", "idle"])["r"]["points"][0]
    assert point["rps"] == 10.0 and point["error_rate"] == 0.25
    assert m.series(["idle"])["idle"]["points"][0]["rps"] == 0.0
