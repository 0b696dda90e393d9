"""Global rate limiting in batches: the GCRA steps that concurrent requests ask for
during one event-loop turn go to Redis as ONE script call carrying all their keys.

The script applies the steps one after the other in arrival order, atomically (a script
runs alone in Redis) and with one reading of Redis' own clock (``TIME``), so each
request gets exactly the decision it would get from its own call at that instant, and
replicas still agree: nothing is decided outside Redis. A key that appears twice in a
batch sees its first step's update, as two calls in a row would.

Failures are per batch: a connection lost, a timeout or an error reply fails every
request of the batch with the same ``StoreError``, and ``store.on_error`` (or the
filter's ``on_store_error``) applies to each of them (edgegw/store/api.py).

No task or future per batch or per request: the reply's callback (``data_received``)
settles each request's ``Promise``, whose subscriber answers the filter at once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import hiredis

from edgegw.errors import StoreError, StoreUnavailable
from edgegw.promise import Promise
from edgegw.store.base import RateDecision, Step
from edgegw.store.resp import RespConnection

log = logging.getLogger("edgegw.store")

#: Requests per script call; a bigger batch is split (each part one call, pipelined),
#: so one call never keeps Redis busy for long.
MAX_BATCH = 256

# KEYS[i] bucket; ARGV[4i-3..4i] rate, burst, period_ms, cost. The arithmetic is GCRA_LUA's
# (edgegw/store/redis.py) and store/base.py gcra's, once per key.
GCRA_BATCH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local rate, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local period_ms, cost = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local t_us = math.max(1, math.floor(period_ms * 1000 / math.max(1, rate)))
  local tau = t_us * burst
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local base = math.max(tat, now)
  local new_tat = base + t_us * cost
  local allow_at = math.max(0, new_tat - tau)
  local o = (i - 1) * 5
  if allow_at > now then
    out[o + 1], out[o + 2], out[o + 3] = 0, 0, math.ceil((base - now) / 1000)
    out[o + 4], out[o + 5] = math.ceil((allow_at - now) / 1000), burst
  else
    local ahead = new_tat - now
    if cost > 0 then
      local ttl = math.max(1, math.ceil(ahead / 1000))
      redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', ttl)
    end
    local remaining = 0
    if tau > ahead then remaining = math.floor((tau - ahead) / t_us) end
    out[o + 1], out[o + 2], out[o + 3] = 1, remaining, math.ceil(ahead / 1000)
    out[o + 4], out[o + 5] = 0, burst
  end
end
return out
"""

Part = list[tuple[Step, Promise[RateDecision]]]
#: Sends one part (at most MAX_BATCH steps) and settles every promise of it.
SendBatch = Callable[[Part], None]


class Batcher:
    """Collects the steps asked for in one loop turn and hands them to ``send`` at the
    end of the turn (``loop.call_soon``: callbacks already queued run first and join).
    Each step gets a ``Promise``, settled from the callback that reads the batch's reply."""

    def __init__(self, send: SendBatch) -> None:
        self._send = send
        self._pending: Part = []
        self.batches = 0  # batches sent (tests and benchmarks read it)

    def rate_limit(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> Promise[RateDecision]:
        promise: Promise[RateDecision] = Promise()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(((key, rate, burst, period_ms, cost), promise))
        return promise

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            part = pending[start : start + MAX_BATCH]
            self.batches += 1
            try:
                self._send(part)
            except Exception as exc:  # a bug must not leave the batch's requests waiting
                log.exception("rate-limit batch failed")
                fail(part, StoreError(f"rate-limit batch failed: {exc!r}"))

    async def aclose(self) -> None:
        pass  # every part sent is settled by its connection (a reply, a loss, a timeout)


def fail(part: Part, exc: StoreError) -> None:
    for _, promise in part:
        promise.fail(exc)


class LeanSender:
    """``SendBatch`` over a ``RespConnection``: one EVALSHA per batch (EVAL, which also
    caches the script, when Redis answers EVALSHA with an error: a restarted Redis or a
    SCRIPT FLUSH lost it). ``on_outcome(True | False)``: a batch was answered / failed
    for want of Redis."""

    def __init__(
        self, conn: RespConnection, bucket_prefix: str, on_outcome: Callable[[bool], None]
    ) -> None:
        self._conn = conn
        self._prefix = bucket_prefix
        self._on_outcome = on_outcome
        sha = hashlib.sha1(GCRA_BATCH_LUA.encode()).hexdigest().encode()  # EVALSHA's name
        self._evalsha = _bulk(b"EVALSHA") + _bulk(sha)
        self._eval = _bulk(b"EVAL") + _bulk(GCRA_BATCH_LUA.encode())
        self._connecting: set[asyncio.Task[None]] = set()

    def __call__(self, part: Part) -> None:
        # EVALSHA sha numkeys key... (rate burst period_ms cost)..., packed by hand: this
        # runs once per batch, for every request of it.
        prefix = self._prefix
        keys = [_bulk((prefix + step[0]).encode()) for step, _ in part]
        args = b"".join([*keys, *(_numbers(*step[1:]) for step, _ in part)])
        head = b"*%d\r\n" % (3 + 5 * len(part)) + self._evalsha + _bulk(b"%d" % len(part))
        command = head + args
        if self._conn.connected:
            self._conn.send(command, functools.partial(self._answered, part, args))
            return
        task = asyncio.ensure_future(self._connect_and_send(part, command, args))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, part: Part, command: bytes, args: bytes) -> None:
        try:
            await self._conn.ensure()
            self._conn.send(command, functools.partial(self._answered, part, args))
        except StoreError as exc:
            self._failed(part, exc)
        except asyncio.CancelledError:  # closed while connecting: nobody waits forever
            fail(part, StoreUnavailable("redis: store closed"))
            raise

    def _answered(self, part: Part, args: bytes | None, reply: Any) -> None:
        """The reply to ``part``'s script call (``args``: EVALSHA's, to resend with EVAL
        if Redis does not have the script)."""
        if isinstance(reply, hiredis.ReplyError) and args is not None:
            head = b"*%d\r\n" % (3 + 5 * len(part)) + self._eval + _bulk(b"%d" % len(part))
            try:
                self._conn.send(head + args, functools.partial(self._answered, part, None))
            except StoreError as exc:
                self._failed(part, exc)
            return
        if isinstance(reply, StoreError):
            self._failed(part, reply)
            return
        if not isinstance(reply, list) or len(reply) != 5 * len(part):
            fail(part, StoreError(f"redis refused the rate-limit script: {reply!r}"))
            return
        self._on_outcome(True)
        i = 0
        for _, promise in part:
            promise.resolve(RateDecision(bool(reply[i]), reply[i + 1], reply[i + 2],
                                         reply[i + 3], reply[i + 4]))  # fmt: skip
            i += 5

    def _failed(self, part: Part, exc: StoreError) -> None:
        if isinstance(exc, StoreUnavailable):
            self._on_outcome(False)
        fail(part, exc)

    async def aclose(self) -> None:
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


@functools.lru_cache(maxsize=4096)
def _numbers(rate: int, burst: int, period_ms: int, cost: int) -> bytes:
    # A policy asks with the same four numbers every time: packed once.
    return b"".join(_bulk(b"%d" % n) for n in (rate, burst, period_ms, cost))
