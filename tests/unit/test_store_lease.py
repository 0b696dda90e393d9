"""Leased budgets (store.lease, edgegw/store/lease.py) over a counting memory store: what
is allowed, what the store is asked, expiry, failures; across replicas with a real Redis
in tests/integration/test_replicas.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edgegw.config import parse_config
from edgegw.errors import StoreUnavailable
from edgegw.model import StoreConfig, StoreLease
from edgegw.store.api import StoreAPI
from edgegw.store.base import RateDecision
from edgegw.store.memory import MemoryStore

HOUR_MS = 3_600_000


class CountingStore(MemoryStore):
    """A memory store that records the cost of every step it is asked for."""

    def __init__(self, down: bool = False, delay: float = 0.0) -> None:
        super().__init__()
        self.costs: list[int] = []
        self.down = down
        self.delay = delay  # seconds before each answer

    async def rate_limit(  # type: ignore[override]
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> RateDecision:
        self.costs.append(cost)
        await asyncio.sleep(self.delay)
        if self.down:
            raise StoreUnavailable("down")
        return self.decide(key, rate, burst, period_ms, cost)


def body(key: str = "k", burst: int = 10) -> bytes:
    doc = {"key": key, "rate": 1, "burst": burst, "period_ms": HOUR_MS, "cost": 1}
    return json.dumps(doc).encode()


async def ask(api: StoreAPI, n: int, key: str = "k", burst: int = 10) -> list[tuple[int, Any]]:
    """``n`` filter requests one after the other (each answered before the next)."""
    return [await api.handle("POST", "/v1/ratelimit", body(key, burst)) for _ in range(n)]


def allowed(answers: list[tuple[int, Any]]) -> int:
    return sum(1 for status, doc in answers if status == 200 and doc["allowed"])


def test_one_process_allows_exactly_the_burst_in_a_call_per_slice() -> None:
    store = CountingStore()
    api = StoreAPI(store, StoreConfig(lease=StoreLease(share=0.25, ttl=60)))
    answers = asyncio.run(ask(api, 14, burst=20))  # slices of 5
    assert allowed(answers) == 14
    assert store.costs == [5, 5, 5]  # three slices paid for fourteen requests
    # What a request is told: the bucket as the slice left it plus the slice's unspent part.
    assert [doc["remaining"] for _, doc in answers[:5]] == [19, 18, 17, 16, 15]
    more = asyncio.run(ask(api, 10, burst=20))
    assert allowed(answers + more) == 20  # the burst, exactly: nothing allowed uncharged
    # The fourth slice was paid, then the bucket could not pay a fifth: refused, and the
    # key's requests went one by one (exact) from then on.
    assert store.costs == [5, 5, 5, 5, 5, 1, 1, 1, 1]
    assert not more[-1][1]["allowed"] and more[-1][1]["retry_after_ms"] > 0


def test_an_expired_slice_is_dropped_not_given_back() -> None:
    store = CountingStore()
    api = StoreAPI(store, StoreConfig(lease=StoreLease(share=0.5, ttl=0.05)))

    async def run() -> list[tuple[int, Any]]:
        first = await ask(api, 1)  # a slice of 5, 4 unspent
        await asyncio.sleep(0.1)
        return first + await ask(api, 12)

    answers = asyncio.run(run())
    # 1 of the first slice, 5 of the second; the bucket (10) cannot pay a third.
    assert allowed(answers) == 6
    assert store.costs[:3] == [5, 5, 5] and set(store.costs[3:]) == {1}


def test_a_slice_answered_after_its_ttl_is_not_spent() -> None:
    # Spending it then would allow requests more than ttl after their charge.
    store = CountingStore(delay=0.05)
    api = StoreAPI(store, StoreConfig(lease=StoreLease(share=0.5, ttl=0.02)))
    answers = asyncio.run(ask(api, 1))
    assert allowed(answers) == 1
    assert store.costs == [5, 1]  # the late slice dropped, the request decided exactly


def test_requests_waiting_for_a_slice_share_it_and_the_rest_go_exact() -> None:
    store = CountingStore()
    api = StoreAPI(store, StoreConfig(lease=StoreLease(share=0.5, ttl=60)))

    async def run() -> list[tuple[int, Any]]:
        calls = (api.handle("POST", "/v1/ratelimit", body()) for _ in range(8))
        return list(await asyncio.gather(*calls))

    answers = asyncio.run(run())
    assert allowed(answers) == 8
    assert store.costs == [5, 1, 1, 1]  # one slice for the first five, three exact steps


def test_a_failed_slice_follows_the_outcome_policy_for_every_waiting_request() -> None:
    for on_error, status in ((None, 503), ("fail_closed", 503), ("fail_open", 200)):
        store = CountingStore(down=True)
        api = StoreAPI(store, StoreConfig(on_error=on_error, lease=StoreLease(0.5, 60)))

        async def run(api: StoreAPI = api) -> list[tuple[int, Any]]:
            calls = (api.handle("POST", "/v1/ratelimit", body()) for _ in range(4))
            return list(await asyncio.gather(*calls))

        answers = asyncio.run(run())
        assert [s for s, _ in answers] == [status] * 4, on_error
        assert store.costs == [5]  # one slice asked for; the store's backoff did the rest


def test_the_admin_port_and_other_costs_are_decided_by_the_store() -> None:
    store = CountingStore()
    api = StoreAPI(store, StoreConfig(lease=StoreLease(share=0.5, ttl=60)))

    async def run() -> None:
        await api.handle("POST", "/v1/ratelimit", body(), remote=True)
        peek = {"key": "k", "rate": 1, "burst": 10, "period_ms": HOUR_MS, "cost": 0}
        await api.handle("POST", "/v1/ratelimit", json.dumps(peek).encode())
        await ask(api, 1, burst=3)  # a slice of one is the exact step

    asyncio.run(run())
    assert store.costs == [1, 0, 1]


def test_lease_is_read_from_gateway_yaml() -> None:
    text = "version: 1\nstore: {url: 'redis://127.0.0.1:1', lease: {share: 25%, ttl: 100ms}}\n"
    assert parse_config(text, env={}).store.lease == StoreLease(share=0.25, ttl=0.1)
    assert parse_config("version: 1\n", env={}).store.lease is None  # off by default
