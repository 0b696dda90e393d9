"""``redis://`` (and ``rediss://``, ``unix://``): the store shared by gateway replicas.

Rate limiting is one Lua script per call, using Redis' own clock, so replicas agree and
counts are exact. Flags are a hash plus a version counter, changed by one script that
also publishes the new version; every process subscribes and re-reads. redis-py errors
stop here: callers see ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from edgegw.errors import StoreError, StoreUnavailable
from edgegw.model import StoreConfig
from edgegw.store.api import STORE_UP
from edgegw.store.base import FlagListener, FlagSnapshot, RateDecision, validate_flag
from edgegw.store.batch import Batcher, LeanSender
from edgegw.store.resp import RespConnection, speaks

log = logging.getLogger("edgegw.store")
RESYNC_SECONDS = 5.0  # re-read flags even without a message (a missed one, a restart)
MAX_BACKOFF = 5.0  # seconds between two attempts to resubscribe, at most

# KEYS[1] bucket; ARGV rate, burst, period_ms, cost. Same arithmetic as store/base.py gcra.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local period_ms, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local t_us = math.max(1, math.floor(period_ms * 1000 / math.max(1, rate)))
local tau = t_us * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = math.max(tat, now)
local new_tat = base + t_us * cost
local allow_at = math.max(0, new_tat - tau)
if allow_at > now then
  return {0, 0, math.ceil((base - now) / 1000), math.ceil((allow_at - now) / 1000), burst}
end
local ahead = new_tat - now
if cost > 0 then
  local ttl = math.max(1, math.ceil(ahead / 1000))
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl)
end
local remaining = 0
if tau > ahead then remaining = math.floor((tau - ahead) / t_us) end
return {1, remaining, math.ceil(ahead / 1000), 0, burst}
"""

# KEYS[1] hash, KEYS[2] version; ARGV op ('set'|'del'|'seed'), name, json, channel.
# The message is the whole new snapshot, {"version": N, "flags": {...}} (the values are
# stored as JSON): a subscriber applies it without reading the table back. Subscribers
# of older versions re-read the table on any message, so both can share a Redis.
FLAG_LUA = """
if ARGV[1] == 'del' then
  if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
elseif ARGV[1] == 'seed' then
  if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then
    return tonumber(redis.call('GET', KEYS[2]) or '0')
  end
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
local v = redis.call('INCR', KEYS[2])
local all = redis.call('HGETALL', KEYS[1])
local parts = {}
for i = 1, #all, 2 do parts[#parts + 1] = cjson.encode(all[i]) .. ':' .. all[i + 1] end
local doc = '{"version":' .. v .. ',"flags":{' .. table.concat(parts, ',') .. '}}'
redis.call('PUBLISH', ARGV[4], doc)
return v
"""


# KEYS[1] hash, KEYS[2] version: the table and its version in one atomic read.
FLAGS_READ_LUA = "return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}"


def connect(url: str, timeout: float) -> tuple[Any, list[Any]]:
    """A redis.asyncio client for ``url``: ``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://host:port`` (Redis Cluster) or
    ``redis+sentinel://host:port[,host:port]/service[/db]`` (Sentinel-managed master).
    Also returns the helper clients (Sentinel's) to close with it."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    parts = urlsplit(url)
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        from redis.asyncio.cluster import RedisCluster

        plain = parts._replace(scheme=parts.scheme.replace("+cluster", "")).geturl()
        return RedisCluster.from_url(plain, **options), []
    if parts.scheme == "redis+sentinel":
        from redis.asyncio.sentinel import Sentinel

        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host.strip("[]"), int(port or 26379)))
        service, _, db = parts.path.strip("/").partition("/")
        sentinel = Sentinel(hosts, sentinel_kwargs=options, password=parts.password, **options)
        client = sentinel.master_for(service or "mymaster", db=int(db or 0), **options)
        return client, list(sentinel.sentinels)
    return aioredis.Redis.from_url(url, health_check_interval=10, **options), []


def _snapshot_of(message: Any) -> FlagSnapshot | None:
    """The snapshot a flag change message carries (None: not one, e.g. a bare version)."""
    if not message or message.get("type") != "message":
        return None
    try:
        doc = json.loads(message["data"])
        version, flags = doc["version"], doc["flags"]
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(version, bool) or not isinstance(version, int) or not isinstance(flags, dict):
        return None
    return FlagSnapshot(version, flags)


class RedisStore:
    def __init__(self, config: StoreConfig, batch: bool = True) -> None:
        self._client, self._helpers = connect(config.url, config.timeout)
        # {prefix} is a hash tag: in Redis Cluster the three flag keys share one slot, so
        # one script may touch them together.
        self._bucket = f"{config.prefix}:rl:"  # counters spread over the cluster's slots
        p = "{" + config.prefix + "}"
        self._hash, self._version, self._channel = (
            f"{p}:flags",
            f"{p}:flags:version",
            f"{p}:flags:changed",
        )
        self._scripts: dict[str, str] = {}
        self._listeners: list[FlagListener] = []
        self._snapshot = FlagSnapshot(0, {})
        self._task: asyncio.Task[None] | None = None
        self._unseeded: dict[str, Any] = {}  # config flags not yet seeded (store was down)
        self.up = True
        # redis://, rediss://, unix://: GCRA steps batched per loop turn on a lean
        # connection (edgegw/store/batch.py); Cluster, Sentinel and URLs with options
        # for redis-py: one call per request.
        self._lean: RespConnection | None = None
        self._batcher: Batcher | None = None
        self._sender: LeanSender | None = None
        if batch and speaks(config.url):
            self._lean = RespConnection(config.url, config.timeout)
            self._sender = LeanSender(self._lean, self._bucket, self._set_up)
            self._batcher = Batcher(self._sender)

    def _set_up(self, up: bool) -> None:
        self.up = up

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            sha = self._scripts.get(script)
            if sha is None:
                sha = self._scripts[script] = await self._client.script_load(script)
            try:
                result = await self._client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:  # Redis restarted and lost its script cache
                sha = self._scripts[script] = await self._client.script_load(script)
                result = await self._client.evalsha(sha, len(keys), *keys, *args)
        except ResponseError as exc:  # Redis answered: the request was bad, not the store
            raise StoreError(f"redis refused the operation: {exc}") from exc
        except (RedisError, OSError) as exc:
            self.up = False
            raise StoreUnavailable(f"redis: {exc}") from exc
        self.up = True
        return result

    def rate_limit(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> Awaitable[RateDecision]:
        if self._batcher is not None:  # a Promise: no coroutine on the hot path
            return self._batcher.rate_limit(key, rate, burst, period_ms, cost)
        return self._rate_limit_one(key, rate, burst, period_ms, cost)

    async def _rate_limit_one(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> RateDecision:
        r = await self._eval(GCRA_LUA, [self._bucket + key], [rate, burst, period_ms, cost])
        return RateDecision(bool(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))

    async def get_flags(self) -> FlagSnapshot:
        version, table = await self._eval(FLAGS_READ_LUA, [self._hash, self._version], [])
        pairs = iter(table)
        flags = {k.decode(): json.loads(v) for k, v in zip(pairs, pairs, strict=True)}
        return FlagSnapshot(int(version or 0), flags)

    async def _flag_op(self, op: str, name: str, definition: Any = None) -> int:
        body = json.dumps(definition) if op != "del" else ""
        keys = [self._hash, self._version]
        return int(await self._eval(FLAG_LUA, keys, [op, name, body, self._channel]))

    async def put_flag(self, name: str, definition: Any) -> int:
        return await self._flag_op("set", name, validate_flag(name, definition))

    async def delete_flag(self, name: str) -> int | None:
        version = await self._flag_op("del", name)
        return None if version < 0 else version

    async def seed_flags(self, flags: dict[str, Any]) -> None:
        # Seeds only flags the store does not have: live edits survive restarts. If Redis
        # is down now, the flag subscription seeds them once it connects.
        self._unseeded = {name: validate_flag(name, d) for name, d in flags.items()}
        await self._seed()

    async def _seed(self) -> None:
        for name, definition in list(self._unseeded.items()):
            await self._flag_op("seed", name, definition)
            del self._unseeded[name]

    def subscribe(self, listener: FlagListener) -> None:
        self._listeners.append(listener)
        if self._task is None:
            self._task = asyncio.ensure_future(self._follow())
        else:
            asyncio.get_running_loop().call_soon(listener, self._snapshot)

    async def _refresh(self) -> None:
        snapshot = await self.get_flags()
        if snapshot.version != self._snapshot.version or not self._snapshot.version:
            self._publish(snapshot)

    def _publish(self, snapshot: FlagSnapshot) -> None:
        self._snapshot = snapshot
        for listener in self._listeners:
            listener(snapshot)

    async def _follow(self) -> None:
        """Subscribe, re-read on every message; on errors keep the last snapshot and
        reconnect with backoff. An outage is logged twice, when it starts and when it
        ends, however many retries it takes (each retry logs at DEBUG only)."""
        backoff = 0.1
        down_since = 0.0  # monotonic time of the first failure of the current outage
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                if self._unseeded:
                    await self._seed()
                await self._refresh()
                backoff = 0.1
                if down_since:
                    log.warning(
                        "flag subscription restored after %.1f s",
                        time.monotonic() - down_since,
                    )
                    down_since = 0.0
                    STORE_UP.set(1)
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=RESYNC_SECONDS
                    )
                    snapshot = _snapshot_of(message)
                    if snapshot is None:  # the resync timeout, or an older publisher
                        await self._refresh()
                    elif snapshot.version > self._snapshot.version:
                        self._publish(snapshot)
            except (RedisError, OSError, StoreUnavailable) as exc:
                self.up = False
                if not down_since:
                    down_since = time.monotonic()
                    STORE_UP.set(0)
                    log.warning(
                        "flag subscription lost (%s); keeping the last flags, retrying with "
                        "backoff up to %.0f s",
                        exc,
                        MAX_BACKOFF,
                    )
                else:
                    log.debug("flag subscription still down (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    async def health(self) -> bool:
        try:
            await self._client.ping()
        except (RedisError, OSError):
            self.up = False
            return False
        self.up = True
        return True

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        if self._sender is not None:
            await self._sender.aclose()
        if self._lean is not None:
            await self._lean.aclose()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:  # a Sentinel-managed pool is not closed with its client
            await pool.disconnect()
        for helper in self._helpers:
            await helper.aclose()
