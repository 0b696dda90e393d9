"""The ``Store`` interface, GCRA (the same arithmetic as filters/rate_limit/gcra.zig and
the Redis Lua script), and flag validation."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

MAX_COUNT = 1_000_000  # rate, burst, cost
# One call can push a key's bucket at most about a period ahead (rate 1, cost 1): a day
# bounds what a caller can lock, and still fits daily quotas.
MAX_PERIOD_MS = 24 * 3600 * 1000
# Over the network (the admin port) a call must charge: cost 0 reads a key's quota, which
# only the gateway's own filters (in-process) may do.
MIN_REMOTE_COST = 1
MAX_KEY_BYTES = 1024
Step = tuple[str, int, int, int, int]  # a GCRA step: key, rate, burst, period_ms, cost
#: How a rate-limit request is answered: ``(status, RateDecision | JSON document)``.
Answer = Callable[[int, Any], None]
FLAG_KEYS = frozenset({"enabled", "rollout", "countries", "headers", "claims", "description"})
_BAD_NAME_CHARS = frozenset(",= \t\r\n")


class RateDecision(NamedTuple):
    """Immutable as a frozen dataclass, made in a fifth of its time: one per rate-limited
    request (docs/benchmarks.md, the rate_limit filter alone)."""

    allowed: bool
    remaining: int
    reset_ms: int
    retry_after_ms: int
    limit: int

    def as_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "remaining": self.remaining,
            "reset_ms": self.reset_ms,
            "retry_after_ms": self.retry_after_ms,
            "limit": self.limit,
        }

    def json_bytes(self) -> bytes:
        """``json.dumps(self.as_json()).encode()``, formatted directly: the store
        answers one per rate-limited request (docs/benchmarks.md, rate_limit alone)."""
        return (
            b'{"allowed": %s, "remaining": %d, "reset_ms": %d, "retry_after_ms": %d, "limit": %d}'
            % (
                b"true" if self.allowed else b"false",
                self.remaining,
                self.reset_ms,
                self.retry_after_ms,
                self.limit,
            )
        )


@dataclass(frozen=True, slots=True)
class FlagSnapshot:
    version: int
    flags: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "flags": self.flags}


FlagListener = Callable[[FlagSnapshot], None]


class Store(Protocol):
    """Rate-limit counters and the flag table. Methods raise ``StoreUnavailable`` when
    the backing service cannot be reached."""

    def rate_limit(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> Awaitable[RateDecision]:
        """The decision, as a ``Promise`` (edgegw/promise.py) on the hot path: the store
        API answers a filter from its callback, without a task. A coroutine works too."""
        ...

    async def get_flags(self) -> FlagSnapshot: ...

    async def put_flag(self, name: str, definition: Any) -> int: ...

    async def delete_flag(self, name: str) -> int | None: ...

    async def seed_flags(self, flags: dict[str, Any]) -> None: ...

    def subscribe(self, listener: FlagListener) -> None:
        """Call ``listener`` soon with the current snapshot, then with every new one
        (edits from any process), until the store is closed. Needs a running loop."""
        ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


def gcra(
    tat_us: int, now_us: int, rate: int, burst: int, period_ms: int, cost: int
) -> tuple[RateDecision, int]:
    """One GCRA step; returns the decision and the new TAT (unchanged when denied)."""
    t_us = max(1, (period_ms * 1000) // max(1, rate))
    tau = t_us * burst
    base = max(tat_us, now_us)
    new_tat = base + t_us * cost
    allow_at = max(0, new_tat - tau)
    if allow_at > now_us:
        return RateDecision(
            False, 0, _ceil_ms(base - now_us), _ceil_ms(allow_at - now_us), burst
        ), tat_us
    ahead = new_tat - now_us
    remaining = (tau - ahead) // t_us if tau > ahead else 0
    return RateDecision(True, remaining, _ceil_ms(ahead), 0, burst), new_tat


def _ceil_ms(us: int) -> int:
    return math.ceil(us / 1000)


def check_rate_request(doc: Any, remote: bool = False) -> Step:
    """Validate a /v1/ratelimit body (``remote``: it came over the network); raises
    ValueError naming the bad field."""
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object")
    # What a filter sends (one per rate-limited request), checked in one expression;
    # anything else takes the checks below, which name the bad field.
    get = doc.get
    key, rate, burst, period_ms, cost = (
        get("key"), get("rate"), get("burst"), get("period_ms"), get("cost", 1))  # fmt: skip
    if (
        type(key) is str
        and 0 < len(key) <= MAX_KEY_BYTES
        and type(rate) is int
        and type(burst) is int
        and type(period_ms) is int
        and type(cost) is int
        and 1 <= rate <= MAX_COUNT
        and 1 <= burst <= MAX_COUNT
        and 1 <= period_ms <= MAX_PERIOD_MS
        and (MIN_REMOTE_COST if remote else 0) <= cost <= MAX_COUNT
    ):
        return key, rate, burst, period_ms, cost
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if len(key) > MAX_KEY_BYTES:
        raise ValueError(f"key must be at most {MAX_KEY_BYTES} characters")
    values: list[int] = []
    # Bounds keep every intermediate of GCRA exact in Redis' Lua (doubles, 2^53).
    for name, minimum, maximum in (
        ("rate", 1, MAX_COUNT),
        ("burst", 1, MAX_COUNT),
        ("period_ms", 1, MAX_PERIOD_MS),
        ("cost", MIN_REMOTE_COST if remote else 0, MAX_COUNT),
    ):
        value = doc.get(name, 1 if name == "cost" else None)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ValueError(f"{name} must be an integer from {minimum} to {maximum}")
        values.append(value)
    return key, values[0], values[1], values[2], values[3]


def validate_flag(name: str, definition: Any) -> Any:
    """A flag definition as filters/ab_flags reads it; raises ValueError explaining why
    not. Returns the definition to store."""
    if not name or any(c in _BAD_NAME_CHARS for c in name):
        raise ValueError("flag names must be non-empty without ',', '=' or spaces")
    if isinstance(definition, bool):
        return definition
    if not isinstance(definition, dict):
        raise ValueError("a flag is true, false or an object")
    unknown = set(definition) - FLAG_KEYS
    if unknown:
        raise ValueError(f"unknown flag keys: {', '.join(sorted(unknown))}")
    if "enabled" in definition and not isinstance(definition["enabled"], bool):
        raise ValueError("enabled must be true or false")
    rollout = definition.get("rollout", 100)
    if (
        isinstance(rollout, bool)
        or not isinstance(rollout, (int, float))
        or not 0 <= rollout <= 100
    ):
        raise ValueError("rollout must be a number from 0 to 100")
    countries = definition.get("countries", [])
    if not isinstance(countries, list) or not all(
        isinstance(c, str) and len(c) == 2 for c in countries
    ):
        raise ValueError("countries must be a list of 2-letter codes")
    for key in ("headers", "claims"):
        table = definition.get(key, {})
        if not isinstance(table, dict) or not all(
            isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v)
            for v in table.values()
        ):
            raise ValueError(f"{key} must map names to lists of values")
    return definition
