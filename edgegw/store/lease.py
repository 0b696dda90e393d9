"""Leased budgets: approximate global rate limits for very high rates (``store.lease``,
off by default; docs/store.md, "Leased budgets").

A process charges a slice of a key's burst in one ordinary GCRA step of the store
(``cost = k``, Redis' clock, atomic, as every other step) and then allows up to k requests
for that key without asking, for at most ``ttl``; what is left then is dropped, never given
back. So every request allowed was charged in the store before, at most ``ttl`` before:
across all replicas, the requests allowed in a window W are at most what the limit admits
in W + ``ttl``, and at most R*k requests (R processes, one lease each) are refused early
because another process holds them unspent.

When the bucket cannot pay for a whole slice, the lease is refused and the key's requests
go one by one to the store for ``ttl`` (each exact, as without leases): near its limit a
key is decided exactly. Requests that arrive while a key's lease is being fetched wait
for it instead of fetching their own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from edgegw.model import StoreLease
from edgegw.promise import Promise, promise_of
from edgegw.store.base import Answer, RateDecision, Step, Store

#: The store API's exact path: one GCRA step for ``step``, its outcome to ``answer``.
Exact = Callable[[Step, Answer], None]
#: The store API's outcome policy for a step that the store answered (or failed).
Decided = Callable[[float, Step, Answer, Promise[RateDecision]], None]
LeaseKey = tuple[str, int, int, int]  # a step without its cost
#: Keys remembered (leases held and keys decided exactly for now): requests choose keys,
#: so this is bounded; past it the expired entries go, then the oldest half.
MAX_KEYS = 10_000


class _Lease:
    __slots__ = ("count", "expires", "limit", "remaining", "reset_ms")

    def __init__(self, count: int, expires: float, decision: RateDecision) -> None:
        self.count = count  # requests this process may still allow
        self.expires = expires  # time.monotonic()
        self.remaining = decision.remaining  # the bucket's, once the slice was charged
        self.reset_ms = decision.reset_ms
        self.limit = decision.limit


class Leases:
    """One process's leases over ``store``; ``serve`` answers a cost-1 step from them."""

    def __init__(self, store: Store, config: StoreLease, exact: Exact, decided: Decided) -> None:
        self._store = store
        self._share = config.share
        self._ttl = config.ttl
        self._exact = exact
        self._decided = decided
        self._held: dict[LeaseKey, _Lease] = {}
        self._exact_until: dict[LeaseKey, float] = {}  # a slice was refused: exact for now
        self._waiting: dict[LeaseKey, list[Answer]] = {}  # a lease is being fetched

    def serve(self, step: Step, answer: Answer) -> bool:
        """Answer ``step`` (cost 1) from this process's lease of its key, now or once the
        lease being fetched arrives; False when the step must go to the store itself."""
        key, rate, burst, period_ms, _ = step
        lease_key = (key, rate, burst, period_ms)
        now = time.monotonic()
        lease = self._held.get(lease_key)
        if lease is not None:
            if lease.count > 0 and now < lease.expires:
                lease.count -= 1
                answer(200, _allowed(lease))
                return True
            del self._held[lease_key]  # spent or expired: the rest is dropped
        waiting = self._waiting.get(lease_key)
        if waiting is not None:
            waiting.append(answer)
            return True
        if self._exact_until.get(lease_key, 0.0) > now:
            return False
        size = int(self._share * burst)
        if size < 2:  # a slice of one is the exact step
            return False
        self._waiting[lease_key] = [answer]
        slice_step = (key, rate, burst, period_ms, size)
        pending = promise_of(self._store.rate_limit(*slice_step))
        granted = functools.partial(self._granted, lease_key, size, now, time.perf_counter())
        pending.then(granted)
        return True

    def _granted(
        self,
        lease_key: LeaseKey,
        size: int,
        asked: float,
        started: float,
        granted: Promise[RateDecision],
    ) -> None:
        """``asked``: when the slice was asked for (monotonic): it may be spent until
        ``ttl`` after that, not after its answer (the charge came first); ``started``:
        the same for the store's duration metric (perf_counter)."""
        waiters = self._waiting.pop(lease_key)
        step = (*lease_key, 1)
        if granted.error is not None:  # the store failed: its outcome policy, per request
            for answer in waiters:
                self._decided(started, step, answer, granted)
            return
        decision = granted.result()
        now = time.monotonic()
        self._make_room(now)
        if not decision.allowed:  # the bucket cannot pay for a slice: exact for a while
            self._exact_until[lease_key] = now + self._ttl
        if not decision.allowed or now >= asked + self._ttl:  # refused, or came too late
            for answer in waiters:
                self._exact(step, answer)
            return
        lease = self._held[lease_key] = _Lease(size, asked + self._ttl, decision)
        for answer in waiters:
            if lease.count > 0:
                lease.count -= 1
                answer(200, _allowed(lease))
            else:  # more waited than the slice holds
                self._exact(step, answer)

    def _make_room(self, now: float) -> None:
        if len(self._held) + len(self._exact_until) < MAX_KEYS:
            return
        self._held = {k: v for k, v in self._held.items() if v.expires > now}
        self._exact_until = {k: t for k, t in self._exact_until.items() if t > now}
        for table in (self._held, self._exact_until):
            if len(table) >= MAX_KEYS // 2:
                for stale in list(table)[: len(table) // 2]:  # insertion order: oldest
                    del table[stale]


def _allowed(lease: _Lease) -> RateDecision:
    # What this process sees: the bucket as the slice left it, plus the slice's unspent
    # part (approximate by design: another process may have spent the bucket since).
    return RateDecision(True, lease.remaining + lease.count, lease.reset_ms, 0, lease.limit)
