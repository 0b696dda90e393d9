"""Backends with several endpoints against real backend processes on loopback ports
(tests/lb_backend.py): balancing, retries, budget, limits, health checks, outlier
ejection, panic mode, DNS (``localhost`` only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from edgegw.balance import balancer as balancer_module
from edgegw.balance import stats
from edgegw.errors import UpstreamConnectError, UpstreamInvalidRequest, UpstreamOverloaded
from edgegw.model import Backend, BackendLimits, Endpoint, HealthCheck, Outlier, Retry
from edgegw.observe import metrics
from edgegw.types import Headers
from edgegw.upstream import HttpUpstream
from tests.conftest import Proc, free_port


def balanced(endpoints: list[str] | list[Endpoint], **options: Any) -> Backend:
    eps = tuple(e if isinstance(e, Endpoint) else Endpoint(e) for e in endpoints)
    options.setdefault("timeout", 5.0)
    return Backend(name="users", url=eps[0].url, endpoints=eps, **options)


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[[Backend], HttpUpstream]]:
    made: list[HttpUpstream] = []

    def make(backend: Backend) -> HttpUpstream:
        made.append(HttpUpstream({backend.name: backend}))
        return made[-1]

    yield make
    for up in made:
        await up.aclose()


async def get(
    up: HttpUpstream, method: str = "GET", headers: Headers | None = None, body: Any = None
) -> tuple[int, str]:
    """Status and the answering endpoint's name."""
    resp = await up.request("users", method, "/x", list(headers or []), body)
    try:
        data = b"".join([chunk async for chunk, _ in resp.chunks()])
    finally:
        resp.release()
    return resp.status, json.loads(data)["name"] if data.startswith(b"{") else ""


async def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_weighted_round_robin_with_one_pool_per_endpoint(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    a, b, c = procs(3)
    up = make_upstream(balanced([a.url, b.url, Endpoint(c.url, 2)]))
    names = Counter([(await get(up))[1] for _ in range(40)])
    assert names == {"e0": 10, "e1": 10, "e2": 20}
    members = up._balancers["users"].members
    # sequential requests: each endpoint's own keep-alive connection was reused
    assert [len(m.pool.conns) for m in members] == [1, 1, 1]
    assert (a.count(), b.count(), c.count()) == (10, 10, 20)
    # Tries per endpoint are plain ints on the members until the metrics flush takes them.
    metrics.flush()
    tries = [stats.REQUESTS.labels("users", m.key)._value.get() for m in members]
    assert tries == [10, 10, 20] and [m.tries for m in members] == [0, 0, 0]


async def test_random_and_call_use_every_endpoint(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    # call() serves proxy-wasm http_call and aggregation: the same balancing.
    a, b = procs(2)
    up = make_upstream(balanced([a.url, b.url], lb="random"))
    seen = set()
    for _ in range(40):
        result = await up.call("users", "GET", "/y", "", [], b"", 5.0)
        assert result.status == 200
        seen.add(json.loads(result.body)["name"])
    assert seen == {"e0", "e1"}


async def test_one_endpoint_killed_under_load_no_get_fails_and_it_returns(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    a, b, c = procs(3)
    backend = balanced(
        [a.url, b.url, c.url],
        connect_timeout=1.0,
        # Budget 100%: every request in flight may retry at once. The kill fails the tries
        # of all six clients together; the default (20%, at least 3) would pass some on.
        retry=Retry(attempts=3, on=("connect-failure", "reset"), statuses=(502, 503), budget=1.0),
        health_check=HealthCheck(interval=0.2, timeout=0.5, healthy=1, unhealthy=1),
        outlier=Outlier(consecutive_errors=2, base_ejection=0.5, max_ejected=0.5),
    )
    up = make_upstream(backend)
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            status, _ = await get(up)
            statuses[status] += 1

    clients = [asyncio.ensure_future(client()) for _ in range(6)]
    await wait_for(lambda: sum(statuses.values()) > 60)
    b.kill()
    balancer = up._balancers["users"]
    dead = next(m for m in balancer.members if m.url == b.url)
    await wait_for(lambda: dead not in balancer.usable)  # health/outlier window
    served = sum(statuses.values())
    await wait_for(lambda: sum(statuses.values()) > served + 60)
    assert dead not in balancer.usable  # stayed out while dead
    b.start()
    await wait_for(lambda: dead in balancer.usable)  # the health check brings it back
    await wait_for(lambda: b.count() > 5)  # ... and traffic returns
    stop.set()
    await asyncio.gather(*clients)
    assert set(statuses) == {200}, statuses  # no client-visible failure for GETs


async def test_least_request_steers_away_from_a_slow_endpoint(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    fast1, slow, fast2 = procs(3)
    slow.control(delay=0.3)
    up = make_upstream(balanced([fast1.url, slow.url, fast2.url], lb="least_request"))

    async def client() -> list[str]:
        return [(await get(up))[1] for _ in range(10)]

    batches = await asyncio.gather(*[client() for _ in range(6)])
    names = Counter(n for batch in batches for n in batch)
    assert sum(names.values()) == 60
    assert names["e1"] <= 10, names  # round robin would have sent it 20


async def test_hash_keeps_a_user_on_one_endpoint_and_moves_few_on_removal(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    eps = procs(4)
    up = make_upstream(balanced([p.url for p in eps], lb="hash", hash_on="header:x-user-id"))
    users = [f"user-{i}".encode() for i in range(60)]

    async def where(user: bytes) -> str:
        return (await get(up, headers=[(b"x-user-id", user)]))[1]

    first = {u: await where(u) for u in users}
    again = [await where(u) for u in users[:20]]
    assert again == [first[u] for u in users[:20]]  # the same endpoint every time
    assert len(set(first.values())) == 4  # spread over all of them
    # The same users on a backend without e3: only e3's users move.
    smaller = make_upstream(
        balanced([p.url for p in eps[:3]], lb="hash", hash_on="header:x-user-id")
    )
    moved = [u for u in users if (await get(smaller, headers=[(b"x-user-id", u)]))[1] != first[u]]
    assert {u for u in users if first[u] == "e3"} <= set(moved)
    stayed = [u for u in users if first[u] != "e3" and u not in moved]
    assert len(stayed) >= 0.9 * sum(1 for u in users if first[u] != "e3")


async def test_max_requests_gives_503_at_once(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    (slow,) = procs(1)
    slow.control(delay=1.0)
    up = make_upstream(balanced([slow.url], limits=BackendLimits(max_requests=2)))
    running = [asyncio.ensure_future(get(up)) for _ in range(2)]
    await wait_for(lambda: slow.count() == 2)
    with pytest.raises(UpstreamOverloaded) as info:
        await get(up)
    assert not any(t.done() for t in running)  # refused while the two were still running
    error = info.value
    assert (error.status, error.backend, error.limit) == (503, "users", "max_requests")
    assert [s for s, _ in await asyncio.gather(*running)] == [200, 200]


async def test_max_pending_refuses_instead_of_queueing(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    (slow,) = procs(1)
    slow.control(delay=1.0)
    limits = BackendLimits(max_connections=1, max_pending=0)
    up = make_upstream(balanced([slow.url], limits=limits))
    running = asyncio.ensure_future(get(up))
    await wait_for(lambda: slow.count() == 1)
    with pytest.raises(UpstreamOverloaded) as info:
        await get(up)
    assert info.value.limit == "max_pending"
    assert not running.done()
    assert (await running)[0] == 200


async def test_retry_goes_to_another_endpoint_on_a_listed_status(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    bad, good = procs(2)
    bad.control(status=503)
    retry = Retry(attempts=2, on=(), statuses=(503,), backoff_base=0.001, backoff_max=0.002)
    up = make_upstream(balanced([bad.url, good.url], retry=retry))
    results = [await get(up) for _ in range(20)]
    assert results == [(200, "e1")] * 20
    assert good.count() == 20 and bad.count() >= 10  # each try of e0 was retried on e1


async def test_only_safe_requests_are_repeated(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    (resetting,) = procs(1)
    resetting.control(reset=1)
    retry = Retry(attempts=2, on=("connect-failure", "reset"), backoff_base=0.001)
    up = make_upstream(balanced([resetting.url], retry=retry))
    with pytest.raises(UpstreamConnectError):
        await get(up, "POST", body=b"once")  # not idempotent: sent once
    assert resetting.count() == 1
    with pytest.raises(UpstreamConnectError):
        await get(up, "PUT", body=b"small")  # idempotent, body in hand: retried
    assert resetting.count() == 3

    async def stream(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 1024):
            yield b"x" * 1024

    with pytest.raises(UpstreamConnectError):
        await get(up, "PUT", body=stream(8 * 1024))  # small stream: buffered, retried
    assert resetting.count() == 5
    with pytest.raises(UpstreamConnectError):
        await get(up, "PUT", body=stream(256 * 1024))  # too big to keep: streamed once
    assert resetting.count() == 6


async def test_connect_failure_is_retried_for_any_method(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    (alive,) = procs(1)
    dead = f"http://127.0.0.1:{free_port()}"
    retry = Retry(attempts=2, on=("connect-failure",), backoff_base=0.001)
    up = make_upstream(balanced([dead, alive.url], retry=retry))
    results = [await get(up, "POST", body=b"{}") for _ in range(10)]
    assert results == [(200, "e0")] * 10  # nothing reached the dead one: safe to resend


async def test_per_try_timeout_moves_on_to_another_endpoint(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    slow, fast = procs(2)
    slow.control(delay=3.0)
    retry = Retry(attempts=2, on=("timeout",), per_try_timeout=0.2, backoff_base=0.001)
    up = make_upstream(balanced([slow.url, fast.url], retry=retry))
    assert [await get(up) for _ in range(6)] == [(200, "e1")] * 6


async def test_retry_budget_holds_under_a_failing_backend(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    failing, other = procs(2)
    failing.control(status=503, delay=0.3)
    other.control(status=503, delay=0.3)
    no_budget = Retry(attempts=3, on=(), statuses=(503,), budget=0.0, min_retry_concurrency=0)
    up = make_upstream(balanced([failing.url, other.url], retry=no_budget))
    results = await asyncio.gather(*[get(up) for _ in range(10)])
    assert [s for s, _ in results] == [503] * 10  # the backend's answer, passed on
    assert failing.count() + other.count() == 10  # no retry at all
    # A budget of two retries in flight: 10 failing requests cost at most 10 + 2 + 2 tries
    # (the first wave returns together; two retry, the rest give up; those two retry again).
    two = replace(no_budget, min_retry_concurrency=2, backoff_base=0.001, backoff_max=0.002)
    up2 = make_upstream(balanced([failing.url, other.url], retry=two))
    results = await asyncio.gather(*[get(up2) for _ in range(10)])
    assert [s for s, _ in results] == [503] * 10
    tries = failing.count() + other.count() - 10
    assert 10 < tries <= 14, tries
    stats._flush()
    assert stats.CIRCUIT_OPEN.labels("users", "retry_budget")._value.get() >= 8


async def test_outlier_ejection_respects_max_ejected(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    bad1, bad2, good = procs(3)
    bad1.control(status=500)
    bad2.control(status=500)
    outlier = Outlier(consecutive_errors=2, base_ejection=30.0, max_ejected=0.5)
    up = make_upstream(balanced([bad1.url, bad2.url, good.url], outlier=outlier))
    results = [await get(up) for _ in range(30)]
    balancer = up._balancers["users"]
    now = balancer.loop.time()
    states = [m.state(now) for m in balancer.members]
    assert states.count("ejected") == 1  # 50% of three: one at most
    assert states[2] == "healthy"
    ejected = states.index("ejected")
    assert [bad1, bad2][ejected].count() == 2  # two consecutive errors, then no more
    assert [bad1, bad2][1 - ejected].count() > 5  # the other one stays in: max_ejected
    assert Counter(results)[(200, "e2")] >= 12  # then it shares the load with the other


async def test_panic_mode_uses_all_when_none_is_healthy(
    procs: Callable[[int], list[Proc]],
    make_upstream: Callable[[Backend], HttpUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = procs(2)
    a.control(health=503)
    b.control(health=503)
    check = HealthCheck(interval=0.1, timeout=0.5, healthy=1, unhealthy=1)
    up = make_upstream(balanced([a.url, b.url], health_check=check))
    assert (await get(up))[0] == 200  # the first request makes the balancer
    balancer = up._balancers["users"]
    await wait_for(lambda: balancer.panic)
    assert {(await get(up))[0] for _ in range(4)} == {200}
    assert {(await get(up))[1] for _ in range(4)} == {"e0", "e1"}  # all are used
    assert stats.PANIC.labels("users")._value.get() == 1
    assert "panic mode" in caplog.text
    a.control(health=200)
    await wait_for(lambda: not balancer.panic)
    assert {(await get(up))[1] for _ in range(6)} == {"e0"}  # only the healthy one now


async def test_health_checks_end_with_the_upstream(
    procs: Callable[[int], list[Proc]],
) -> None:
    (a,) = procs(1)
    check = HealthCheck(interval=0.1, timeout=0.5)
    up = HttpUpstream({"users": balanced([a.url], health_check=check)})
    await get(up)
    tasks = set(up._balancers["users"]._tasks)
    assert tasks and not any(t.done() for t in tasks)
    await up.aclose()
    assert all(t.done() for t in tasks)


async def test_localhost_is_resolved_and_re_resolved(
    procs: Callable[[int], list[Proc]],
    make_upstream: Callable[[Backend], HttpUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (a,) = procs(1)
    lookups: list[str] = []
    real = balancer_module.resolve

    async def counting(host: str, port: int) -> list[str]:
        lookups.append(host)
        return await real(host, port)

    monkeypatch.setattr(balancer_module, "resolve", counting)
    monkeypatch.setattr(balancer_module, "DNS_REFRESH", 0.05)
    up = make_upstream(balanced([f"http://localhost:{a.port}", a.url]))
    assert (await get(up))[0] == 200
    balancer = up._balancers["users"]
    named = [m for m in balancer.members if m.url.startswith("http://localhost")]
    assert [m.address for m in named] == ["127.0.0.1"]  # IPv4 first, as Envoy's V4_PREFERRED
    assert named[0].pool.authority == f"localhost:{a.port}".encode()  # Host stays the name
    await wait_for(lambda: len(lookups) >= 3)
    assert set(lookups) == {"localhost"}
    assert balancer.members[0] is named[0]  # same address again: same pool, same state
    assert {(await get(up))[0] for _ in range(4)} == {200}


async def test_a_request_that_cannot_be_written_ejects_nobody_and_is_not_retried(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    a, b = procs(2)
    retry = Retry(attempts=3, on=("connect-failure", "reset"), backoff_base=0.001)
    outlier = Outlier(consecutive_errors=1, base_ejection=30.0, max_ejected=1.0)
    up = make_upstream(balanced([a.url, b.url], retry=retry, outlier=outlier))
    smuggling = [(b"x-note", b"a\r\nGET /evil HTTP/1.1")]  # e.g. set by a faulty filter
    for _ in range(4):
        with pytest.raises(UpstreamInvalidRequest):
            await get(up, headers=smuggling)
    balancer = up._balancers["users"]
    now = balancer.loop.time()
    assert [m.state(now) for m in balancer.members] == ["healthy", "healthy"]
    assert a.count() + b.count() == 0  # nothing was written, nothing retried
    assert {(await get(up))[0] for _ in range(2)} == {200}


async def test_a_client_gone_during_a_retry_gives_its_budget_back(
    procs: Callable[[int], list[Proc]], make_upstream: Callable[[Backend], HttpUpstream]
) -> None:
    (failing,) = procs(1)
    failing.control(status=503)
    retry = Retry(attempts=3, on=(), statuses=(503,), backoff_base=5.0, backoff_max=5.0)
    up = make_upstream(balanced([failing.url], retry=retry, timeout=30.0))
    request = asyncio.ensure_future(get(up))
    await wait_for(lambda: "users" in up._balancers and up._balancers["users"].retrying == 1)
    request.cancel()  # the client went away while the retry waited (backoff) or ran
    with pytest.raises(asyncio.CancelledError):
        await request
    balancer = up._balancers["users"]
    assert (balancer.retrying, balancer.active, balancer.members[0].active) == (0, 0, 0)


async def test_a_name_that_does_not_resolve_leaves_the_other_endpoints_serving(
    procs: Callable[[int], list[Proc]],
    make_upstream: Callable[[Backend], HttpUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (a,) = procs(1)

    async def failing(host: str, port: int) -> list[str]:
        raise OSError(f"{host}: no such name")  # as getaddrinfo's gaierror (an OSError)

    monkeypatch.setattr(balancer_module, "resolve", failing)
    up = make_upstream(balanced([f"http://localhost:{a.port}", a.url]))
    assert [await get(up) for _ in range(3)] == [(200, "e0")] * 3
    assert [m.url for m in up._balancers["users"].members] == [a.url]
