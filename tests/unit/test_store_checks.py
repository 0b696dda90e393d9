"""The checks of a /v1/ratelimit body: the one-expression path a filter's request takes
and the field-by-field checks that name what is wrong accept exactly the same bodies."""

from __future__ import annotations

from typing import Any

import pytest

from edgegw.store.base import MAX_COUNT, MAX_KEY_BYTES, MAX_PERIOD_MS, check_rate_request

GOOD = {"key": "u", "rate": 10, "burst": 5, "period_ms": 1000, "cost": 1}


@pytest.mark.parametrize(
    ("change", "remote", "expected"),
    [
        ({}, False, ("u", 10, 5, 1000, 1)),
        ({"cost": None}, False, ("u", 10, 5, 1000, 1)),  # cost defaults to 1
        ({"cost": 0}, False, ("u", 10, 5, 1000, 0)),  # a filter may peek
        (
            {"rate": MAX_COUNT, "burst": MAX_COUNT, "cost": MAX_COUNT},
            False,
            ("u", MAX_COUNT, MAX_COUNT, 1000, MAX_COUNT),
        ),
        ({"period_ms": MAX_PERIOD_MS}, True, ("u", 10, 5, MAX_PERIOD_MS, 1)),
        ({"key": "k" * MAX_KEY_BYTES}, False, ("k" * MAX_KEY_BYTES, 10, 5, 1000, 1)),
    ],
)
def test_accepted(change: dict[str, Any], remote: bool, expected: tuple[Any, ...]) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert check_rate_request(body, remote) == expected


@pytest.mark.parametrize(
    ("change", "remote", "field"),
    [
        ({"key": ""}, False, "key"),
        ({"key": 7}, False, "key"),
        ({"key": "k" * (MAX_KEY_BYTES + 1)}, False, "key"),
        ({"rate": True}, False, "rate"),  # a bool is an int in Python, not in JSON
        ({"rate": 1.0}, False, "rate"),
        ({"rate": 0}, False, "rate"),
        ({"rate": MAX_COUNT + 1}, False, "rate"),
        ({"burst": None}, False, "burst"),
        ({"burst": "5"}, False, "burst"),
        ({"period_ms": 0}, False, "period_ms"),
        ({"period_ms": MAX_PERIOD_MS + 1}, False, "period_ms"),
        ({"cost": 0}, True, "cost"),  # over the network cost 0 would read anyone's quota
        ({"cost": -1}, False, "cost"),
        ({"cost": False}, False, "cost"),
    ],
)
def test_refused_naming_the_field(change: dict[str, Any], remote: bool, field: str) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=f"^{field} must"):
        check_rate_request(body, remote)


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        check_rate_request([GOOD])
