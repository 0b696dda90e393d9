"""Batched global rate limiting (edgegw/store/batch.py) against a real redis-server: the
same verdicts as one call per request, and a batch that dies with Redis follows
``on_error`` for every request in it."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgegw.errors import StoreUnavailable
from edgegw.model import StoreConfig
from edgegw.store.api import StoreAPI
from edgegw.store.base import RateDecision
from edgegw.store.redis import RedisStore
from edgegw.store.resp import pack, speaks
from tests.conftest import free_port, start_redis, wait_port

# Mixed keys, bursts and costs (0 reads without charging; a cost over the burst is
# always denied), with repeats of a key inside one batch. T = 60 s per request, so the
# verdicts and the headers' whole seconds do not depend on the few ms a run takes.
STEPS = [
    (f"k{i % 5}", 60, 1 + i % 4, 3_600_000, (0, 1, 1, 2, 5)[i % 5] if i % 7 else 0)
    for i in range(150)
]


def headers_view(d: RateDecision) -> tuple[Any, ...]:
    """What a client sees of a decision: status, RateLimit r and t, Retry-After."""
    return (d.allowed, d.remaining, d.limit, math.ceil(d.reset_ms / 1000),
            math.ceil(d.retry_after_ms / 1000))  # fmt: skip


async def test_batched_verdicts_equal_one_call_per_request(redis_server: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    batched = RedisStore(StoreConfig(url=redis_server, prefix=prefix + "b", timeout=5.0))
    single = RedisStore(
        StoreConfig(url=redis_server, prefix=prefix + "s", timeout=5.0), batch=False
    )
    try:
        # All at once: every step is asked for in one loop turn, concurrently.
        together = await asyncio.gather(*(batched.rate_limit(*s) for s in STEPS))
        one_by_one = [await single.rate_limit(*s) for s in STEPS]
        assert batched._batcher is not None and single._batcher is None
        assert batched._batcher.batches == math.ceil(len(STEPS) / 256)  # one script call
        assert [headers_view(d) for d in together] == [headers_view(d) for d in one_by_one]
        assert any(d.allowed for d in together) and not all(d.allowed for d in together)
        # Concurrent requests arriving over several loop turns: several batches, each
        # in arrival order, still the sequential answers.
        more = [await single.rate_limit(*s) for s in STEPS]
        before = batched._batcher.batches
        tasks = []
        for i, step in enumerate(STEPS):
            tasks.append(asyncio.ensure_future(batched.rate_limit(*step)))
            if i % 30 == 29:
                await asyncio.sleep(0)
        waves = await asyncio.gather(*tasks)
        assert batched._batcher.batches - before == 5
        assert [headers_view(d) for d in waves] == [headers_view(d) for d in more]
    finally:
        await batched.aclose()
        await single.aclose()


def _hold_redis(port: int) -> socket.socket:
    """A client whose script keeps Redis busy: commands sent meanwhile wait unanswered."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(pack("EVAL", "while true do end", 0))
    return sock


@pytest.mark.parametrize(
    ("on_error", "statuses"),
    [(None, {503}), ("fail_closed", {503}), ("fail_open", {200}), ("local", {200})],
)
async def test_redis_killed_mid_batch_follows_on_error_for_every_request(
    on_error: str | None, statuses: set[int], tmp_path: Path
) -> None:
    port = free_port()
    proc = start_redis(tmp_path, port)
    config = StoreConfig(url=f"redis://127.0.0.1:{port}/0", on_error=on_error, timeout=10.0)  # type: ignore[arg-type]
    store = RedisStore(config)
    api = StoreAPI(store, config)
    body = json.dumps({"key": "k", "rate": 1, "burst": 5, "period_ms": 60000}).encode()
    holder = None
    try:
        assert (await api.handle("POST", "/v1/ratelimit", body))[0] == 200  # connected
        holder = _hold_redis(port)
        await asyncio.sleep(0.3)  # the busy script runs
        calls = [
            asyncio.ensure_future(api.handle("POST", "/v1/ratelimit", body)) for _ in range(20)
        ]
        await asyncio.sleep(0.3)  # the batch is written and waits for its answer
        assert store._batcher is not None and store._batcher.batches == 2
        assert not any(c.done() for c in calls)
        proc.kill()  # mid-batch: Redis dies with the batch unanswered
        results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    finally:
        if holder is not None:
            holder.close()
        proc.kill()
        proc.wait()
        await api.aclose()
    assert {status for status, _ in results} == statuses
    if on_error == "fail_open":
        assert all(doc["allowed"] and doc["degraded"] for _, doc in results)
    if on_error == "local":  # the memory fallback limits them: 5 of 20 (burst 5)
        assert sum(doc["allowed"] for _, doc in results) == 5


def test_the_lean_path_takes_only_urls_it_serves_as_redis_py_would() -> None:
    assert speaks("redis://127.0.0.1:6379/0") and speaks("unix:///run/redis.sock?db=2")
    assert speaks("rediss://:secret@cache.internal:6380/1")
    assert not speaks("rediss://cache.internal:6380/0?ssl_cert_reqs=none")  # redis-py's
    assert not speaks("redis+cluster://127.0.0.1:7000")
    assert not speaks("redis+sentinel://127.0.0.1:26379/mymaster")


async def test_a_bare_version_message_from_an_older_gateway_still_refreshes(
    redis_server: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    store = RedisStore(StoreConfig(url=redis_server, prefix=prefix, timeout=5.0))
    seen: list[int] = []
    got = asyncio.Event()

    def listener(snapshot: Any) -> None:
        seen.append(snapshot.version)
        got.set()

    try:
        await store.put_flag("a", True)
        store.subscribe(listener)
        await asyncio.wait_for(got.wait(), 10)
        # An older gateway's edit: the table changes and only the version is published.
        sock = socket.create_connection(("127.0.0.1", int(redis_server.split(":")[2][:-2])))
        with sock:
            sock.sendall(pack("HSET", "{" + prefix + "}:flags", "b", "true")
                         + pack("INCR", "{" + prefix + "}:flags:version")
                         + pack("PUBLISH", "{" + prefix + "}:flags:changed", "2"))  # fmt: skip
            sock.recv(100)
            got.clear()
            await asyncio.wait_for(got.wait(), 10)
        assert seen == [1, 2]
        assert (await store.get_flags()).flags == {"a": True, "b": True}
    finally:
        await store.aclose()


async def _auth_checks(port: int) -> None:
    good = RedisStore(StoreConfig(url=f"redis://:s3cret@127.0.0.1:{port}/3", prefix="p"))
    bad = RedisStore(StoreConfig(url=f"redis://:wrong@127.0.0.1:{port}/3", prefix="p"))
    try:
        assert (await good.rate_limit("k", 1, 5, 60_000, 1)).remaining == 4
        with pytest.raises(StoreUnavailable):
            await bad.rate_limit("k", 1, 5, 60_000, 1)
    finally:
        await good.aclose()
        await bad.aclose()


def test_the_lean_connection_authenticates_and_selects_the_urls_database(
    tmp_path: Path,
) -> None:
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert wait_port("127.0.0.1", port, time.monotonic() + 15)
        asyncio.run(_auth_checks(port))
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(pack("AUTH", "s3cret") + pack("SELECT", 3) + pack("EXISTS", "p:rl:k"))
            replies = b""
            while replies.count(b"\r\n") < 3:
                replies += sock.recv(100)
        assert replies == b"+OK\r\n+OK\r\n:1\r\n"  # the bucket is in database 3
    finally:
        proc.kill()
        proc.wait()
