"""Who gets a flag: the ab_flags filter's evaluation (filters/ab_flags/flags.zig) in
Python, for the admin UI's preview of a sample key.

The filter computes, for each flag (docs/filters/ab_flags.md, "Feature flags"):
``on = enabled AND every targeting rule matches AND
murmur3_32(utf8("<flag>:<key>"), seed 0) % 10000 < round(rollout * 100)``.
This module does the same steps in the same order; tests/integration/test_ui_preview.py
sends the same keys through the real filter and compares the ``x-edgegw-flags`` header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_MASK = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (Austin Appleby's reference), as filters/sdk's pw.murmur3."""
    c1, c2, h = 0xCC9E2D51, 0x1B873593, seed & _MASK
    n = len(data) - len(data) % 4
    for i in range(0, n, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * c1) & _MASK
        k = (((k << 15) | (k >> 17)) * c2) & _MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = data[n:]
    if tail:
        k = (int.from_bytes(tail, "little") * c1) & _MASK
        h ^= (((k << 15) | (k >> 17)) * c2) & _MASK
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def bucket(flag: str, key: str) -> int:
    """The key's bucket in [0, 10000) for ``flag``."""
    return murmur3_32(f"{flag}:{key}".encode()) % 10000


def threshold(rollout: Any) -> int:
    """Buckets below this are in the rollout: Zig's @round (half away from zero) of the
    clamped percentage times 100; a non-number counts as 100, as in the filter."""
    if isinstance(rollout, bool) or not isinstance(rollout, int | float):
        rollout = 100
    return math.floor(min(max(float(rollout), 0.0), 100.0) * 100 + 0.5)


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None  # floats and objects never match, as in flags.zig's scalarText


def _list_has(allowed: Any, want: str, ignore_case: bool) -> bool:
    items = [allowed] if isinstance(allowed, str) else allowed if isinstance(allowed, list) else []
    for item in items:
        if isinstance(item, str) and (
            item.lower() == want.lower() if ignore_case else item == want
        ):
            return True
    return False


def evaluate(
    name: str,
    definition: Any,
    key: str,
    country: str = "",
    headers: Mapping[str, str] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"on": bool, "reason": str, "bucket": int, "threshold": int}`` for one subject."""
    b = bucket(name, key)
    out: dict[str, Any] = {"bucket": b, "threshold": 10000}
    if isinstance(definition, bool):
        return {**out, "on": definition, "reason": "shorthand " + str(definition).lower()}
    if not isinstance(definition, dict):
        return {**out, "on": False, "reason": "not an object"}
    if definition.get("enabled") is False:
        return {**out, "on": False, "reason": "disabled"}
    if "countries" in definition and not _list_has(definition["countries"], country, True):
        return {**out, "on": False, "reason": f"country '{country}' not targeted"}
    given = {k.lower(): v for k, v in (headers or {}).items()}
    for header, allowed in _table(definition.get("headers")).items():
        got = given.get(header.lower())
        if got is None or not _list_has(allowed, got, False):
            return {**out, "on": False, "reason": f"header '{header}' does not match"}
    claim_rules = _table(definition.get("claims"))
    if claim_rules and claims is None:
        return {**out, "on": False, "reason": "no claims"}
    for claim, allowed in claim_rules.items():
        value = (claims or {}).get(claim)
        values = value if isinstance(value, list) else [value]
        texts = [t for t in map(_scalar, values) if t is not None]
        if value is None or not any(_list_has(allowed, t, False) for t in texts):
            return {**out, "on": False, "reason": f"claim '{claim}' does not match"}
    limit = threshold(definition.get("rollout", 100))
    on = b < limit
    reason = f"bucket {b} {'<' if on else '>='} {limit} (rollout)"
    return {**out, "threshold": limit, "on": on, "reason": reason}


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
