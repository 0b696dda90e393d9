"""Load-balancing policies: which endpoint address takes the next request.

A policy is built for the addresses usable now (healthy, not ejected) whenever that set
changes, so a pick does only the policy's own arithmetic. docs/upstream.md compares them
with Envoy's and Kong's.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Sequence
from functools import partial
from hashlib import blake2b
from itertools import accumulate, cycle
from typing import Any, Generic, Protocol, TypeVar

# Maglev lookup table size: a prime well above the endpoint count, so each endpoint owns
# ~M/N slots and removing one moves ~1/N of the keys (Eisenbud et al., NSDI 2016, §3.4).
# Envoy uses 65537; this one is built in Python on every change of the usable set.
MAGLEV_SIZE = 5003


class Weighted(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def weight(self) -> int: ...
    @property
    def active(self) -> int: ...


M = TypeVar("M", bound=Weighted)


class Policy(Generic[M]):
    """Picks one of ``members`` (never empty)."""

    def __init__(self, members: Sequence[M]) -> None:
        self.members = members
        # ``pick(None)`` as one callable: what a balanced request's first try calls.
        self.keyless: Callable[[], M] = partial(self.pick, None)

    def pick(self, key: bytes | None) -> M:
        raise NotImplementedError


class RoundRobin(Policy[M]):
    """Smooth weighted round robin (nginx's): weights 5,1,1 give a a b a c a a, not a
    burst of five; equal weights are plain rotation. The start is random so that the
    workers do not all begin on the same endpoint."""

    def __init__(self, members: Sequence[M]) -> None:
        super().__init__(members)
        self.schedule = _smooth_schedule(members)
        start = random.randrange(len(self.schedule))
        # A C iterator, not Python arithmetic: every balanced request calls it.
        self.keyless = cycle(self.schedule[start:] + self.schedule[:start]).__next__

    def pick(self, key: bytes | None) -> M:
        return self.keyless()


def _smooth_schedule(members: Sequence[M]) -> list[M]:
    total = sum(m.weight for m in members)
    current = [0] * len(members)
    schedule = []
    for _ in range(total):
        for i, member in enumerate(members):
            current[i] += member.weight
        best = max(range(len(members)), key=current.__getitem__)
        current[best] -= total
        schedule.append(members[best])
    return schedule


class Random(Policy[M]):
    def __init__(self, members: Sequence[M]) -> None:
        super().__init__(members)
        self.cumulative = list(accumulate(m.weight for m in members))
        self.total = self.cumulative[-1]

    def pick(self, key: bytes | None) -> M:
        return self.members[bisect(self.cumulative, random.random() * self.total)]


class LeastRequest(Random[M]):
    """Power of two choices (Envoy's least_request): of two random addresses (by weight),
    the one with fewer requests in flight per unit of weight."""

    def __init__(self, members: Sequence[M]) -> None:
        super().__init__(members)
        self.uniform = len({m.weight for m in members}) == 1 and len(members) > 1
        self.others = len(members) - 1
        self.pairs = len(members) * self.others  # ordered pairs of two different ones

    def pick(self, key: bytes | None) -> M:
        if self.uniform:  # two different ones, each pair equally likely
            # One random() for both, not randrange (a Python function): the per-request path.
            pair = int(random.random() * self.pairs)
            i, j = pair // self.others, pair % self.others
            members = self.members
            a, b = members[i], members[j + (j >= i)]
            return a if a.active <= b.active else b  # equal weights
        a = b = super().pick(key)
        for _ in range(3):  # two different ones, unless one weighs nearly everything
            b = super().pick(key)
            if b is not a:
                break
        return a if a.active * b.weight <= b.active * a.weight else b


class Hash(Policy[M]):
    """Consistent hashing with a Maglev table: a key always lands on the same address
    while the set is unchanged, and only ~1/N of keys move when one of N leaves. A
    request without the key (no such header, cookie or address) gets a random pick."""

    def __init__(self, members: Sequence[M]) -> None:
        super().__init__(members)
        self.table = maglev_table([m.key for m in members], [m.weight for m in members])
        self.fallback = Random(members)

    def pick(self, key: bytes | None) -> M:
        if key is None:
            return self.fallback.pick(None)
        return self.members[self.table[key_hash(key) % len(self.table)]]


def key_hash(data: bytes) -> int:
    """A hash equal in every worker and process (``hash()`` of bytes is salted)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def maglev_table(
    names: Sequence[str], weights: Sequence[int], size: int = MAGLEV_SIZE
) -> list[int]:
    """Maglev population (NSDI 2016, Pseudocode 1), weighted by giving each name as many
    turns per round as its weight. Each name's permutation depends only on the name, so a
    name keeps most of its slots whoever else comes or goes."""
    count = len(names)
    offsets, skips = [], []
    for name in names:
        h = key_hash(name.encode())
        offsets.append(h % size)
        skips.append((h >> 32) % (size - 1) + 1)
    table = [-1] * size
    nexts = [0] * count
    filled = 0
    while True:
        for i in range(count):
            for _turn in range(weights[i]):
                slot = (offsets[i] + nexts[i] * skips[i]) % size
                while table[slot] >= 0:
                    nexts[i] += 1
                    slot = (offsets[i] + nexts[i] * skips[i]) % size
                table[slot] = i
                nexts[i] += 1
                filled += 1
                if filled == size:
                    return table


POLICIES: dict[str, type[Policy[Any]]] = {
    "round_robin": RoundRobin,
    "random": Random,
    "least_request": LeastRequest,
    "hash": Hash,
}
