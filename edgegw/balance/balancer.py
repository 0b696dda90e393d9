"""One backend with several endpoints (or retries, health checks, limits): picks an
endpoint address per try, retries safely, ejects outliers, enforces circuit breakers.

A ``Balancer`` lives in one worker's ``HttpUpstream`` (made on the backend's first
request, inside the loop) and is closed with it (``aclose``). It wraps one try,
``HttpUpstream.request(..., pool=...)``, so the wire protocol stays in edgegw.http1 and
edgegw.upstream. docs/upstream.md describes the behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import math
import random
import socket
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from edgegw.balance import stats
from edgegw.balance.health import HealthChecker
from edgegw.balance.members import Member
from edgegw.balance.policy import POLICIES, Policy
from edgegw.balance.retry import IDEMPOTENT, backoff, buffered, condition
from edgegw.balance.tls import client_context
from edgegw.errors import (
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamOverloaded,
    UpstreamUnreachable,
)
from edgegw.headers import XFF, get
from edgegw.http1 import Pool
from edgegw.model import Backend, BackendLimits, Endpoint, Retry
from edgegw.tracing import RESEND
from edgegw.types import Headers

if TYPE_CHECKING:
    from edgegw.upstream import UpstreamResponse

log = logging.getLogger("edgegw.balance")

DNS_REFRESH = 5.0  # seconds between resolutions of endpoint host names (Envoy's default)
MAX_EJECTION = 300.0  # an ejection lasts at most this (Envoy's max_ejection_time)
Body = AsyncIterable[bytes] | bytes | None
KeyReader = Callable[[Headers], bytes | None]
Resolver = Callable[[str, int], Awaitable[list[str]]]


class Send(Protocol):
    """One try on one pool: ``HttpUpstream.request`` with ``pool``."""

    def __call__(
        self,
        backend: str,
        method: str,
        path: str,
        headers: Headers,
        body: Body,
        timeout: float | None = None,
        pool: Pool | None = None,
    ) -> Awaitable[UpstreamResponse]: ...


async def resolve(host: str, port: int) -> list[str]:
    """Every address of ``host``: the IPv4 ones when there are any, else the IPv6 ones
    (Envoy's V4_PREFERRED), sorted so that every worker sees the same list."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET})
    return v4 or sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET6})


def key_reader(hash_on: str | None) -> KeyReader | None:
    """What ``lb: hash`` hashes, read from the request headers upstream sees."""
    if hash_on is None:
        return None
    kind, _, name = hash_on.partition(":")
    if kind == "header":
        wanted = name.encode("latin-1")
        return lambda headers: get(headers, wanted)
    if kind == "cookie":
        prefix = name.encode("latin-1") + b"="

        def cookie(headers: Headers) -> bytes | None:
            for n, v in headers:
                if n == b"cookie":  # HTTP/2 may split cookies over several fields
                    for part in v.split(b";"):
                        part = part.strip()
                        if part.startswith(prefix):
                            return part[len(prefix) :]
            return None

        return cookie

    def client_ip(headers: Headers) -> bytes | None:
        # edgegw.headers appends the client's address to X-Forwarded-For last.
        xff = get(headers, XFF)
        return xff.rsplit(b",", 1)[-1].strip() if xff else None

    return client_ip


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Balancer:
    def __init__(self, backend: Backend, send: Send, resolver: Resolver | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.loop = asyncio.get_running_loop()
        self.send = send
        self.resolver = resolver or resolve
        self.endpoints = backend.endpoints or (Endpoint(backend.url),)
        https = any(e.url.startswith("https:") for e in self.endpoints)
        self.tls = client_context(backend.tls) if https else None
        self.sni = backend.tls.sni if backend.tls else None
        self.limits = backend.limits or BackendLimits()
        retry = backend.retry
        self.retry = retry if retry is not None and retry.attempts > 1 else None
        # The first try's deadline: the retry's own when it is shorter than the whole.
        self.per_try = self.retry.per_try_timeout if self.retry else None
        statuses = set(self.retry.statuses) if self.retry else set()
        if self.retry and "5xx" in self.retry.on:
            statuses.update(range(500, 600))
        self.retry_statuses = frozenset(statuses)
        self.key = key_reader(backend.hash_on)
        self.policy_type = POLICIES[backend.lb]
        self.members: list[Member] = []
        self.usable: list[Member] = []
        self.policy: Policy[Member] | None = None
        self.panic = False
        self.active = 0  # tries in flight (their responses not yet released)
        self.retrying = 0  # retries in flight (the retry budget counts them)
        self.backing_off = 0  # requests waiting out a backoff before their next try
        self.pending = 0  # tries waiting for a free connection (MemberPool.queued)
        self.ready = False  # the first resolution is done (``resolved`` set)
        self.plain: Callable[[], Member] | None = None  # see _replan
        self.next_return = math.inf  # when the next ejected member comes back
        self.resolved = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retired: list[Pool] = []
        self._addresses: dict[Endpoint, list[str]] = {}
        self.health = HealthChecker(self) if backend.health_check else None
        names = [e for e in self.endpoints if not _is_ip(urlsplit(e.url).hostname or "")]
        for endpoint in self.endpoints:
            if endpoint not in names:
                self._addresses[endpoint] = [urlsplit(endpoint.url).hostname or ""]
        if names:
            self._spawn(self._resolve_forever(names))
        else:
            self._rebuild()
            self._set_resolved()
        if self.health is not None:
            self._spawn(self.health.run())
        stats.register(id(self), self)

    # -- membership --------------------------------------------------------------------
    def _set_resolved(self) -> None:
        self.ready = True
        self.resolved.set()
        self._replan()

    def _replan(self) -> None:
        """``plain``: the policy when a first try needs no per-request check (resolved,
        no hash key, no ejection to end, no request limits), else None (``_first``)."""
        limits = self.limits
        plain = (
            self.ready
            and self.key is None
            and self.next_return == math.inf
            and limits.max_requests is None
            and limits.max_pending is None
        )
        self.plain = self.policy.keyless if plain and self.policy is not None else None

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_forever(self, names: list[Endpoint]) -> None:
        try:
            await self._resolve_loop(names)
        finally:  # requests waiting for the first resolution must not wait forever
            self._set_resolved()

    async def _resolve_loop(self, names: list[Endpoint]) -> None:
        while True:
            changed = False
            for endpoint in names:
                url = urlsplit(endpoint.url)
                port = url.port or (443 if url.scheme == "https" else 80)
                try:
                    addresses = await self.resolver(url.hostname or "", port)
                except (OSError, UnicodeError) as exc:  # keep the last good addresses
                    log.warning("backend %s: cannot resolve %s: %s", self.name, url.hostname, exc)
                    continue
                if addresses and addresses != self._addresses.get(endpoint):
                    self._addresses[endpoint] = addresses
                    changed = True
            if changed or not self.resolved.is_set():  # the first pass builds in any case:
                self._rebuild()  # endpoints given as addresses need no lookup
            self._set_resolved()
            await asyncio.sleep(DNS_REFRESH)

    def _rebuild(self) -> None:
        """Members for the current addresses; a member whose address stays keeps its
        pool and state, one whose address went away keeps serving what it has in
        flight (its idle connections close) and is dropped."""
        old = {(m.url, m.address): m for m in self.members}
        total = sum(e.weight * len(self._addresses.get(e, ())) for e in self.endpoints)
        members = []
        for endpoint in self.endpoints:
            for address in self._addresses.get(endpoint, ()):
                member = old.pop((endpoint.url, address), None)
                if member is None:
                    member = self._member(endpoint, address, total)
                members.append(member)
        for gone in old.values():
            stats.count(stats.REQUESTS, gone.labels, gone.take_tries())
            for conn in gone.pool.idle:
                conn.abort()
            self._retired.append(gone.pool)
        for pool in self._retired:  # a retired pool whose last request ended: close it
            if not pool.conns:
                pool.close()
        self._retired = [pool for pool in self._retired if pool.conns]
        self.members = members
        self.refresh()

    def _member(self, endpoint: Endpoint, address: str, total_weight: int) -> Member:
        backend = dataclasses.replace(self.backend, url=endpoint.url)
        if self.limits.max_connections is not None:
            # The backend-wide connection limit, shared out by weight (at least one each).
            share = self.limits.max_connections * endpoint.weight // max(total_weight, 1)
            backend = dataclasses.replace(backend, max_connections=max(1, share))
        return Member(self, backend, endpoint.url, address, endpoint.weight, self.tls, self.sni)

    def refresh(self) -> None:
        """Recompute the usable members (healthy, not ejected) and the policy over them;
        called on every state change, never per request."""
        now = self.loop.time()
        usable = [m for m in self.members if m.healthy and m.ejected_until <= now]
        ejected = [m.ejected_until for m in self.members if m.ejected_until > now]
        self.next_return = min(ejected, default=math.inf)
        panic = not usable and bool(self.members)
        if panic != self.panic:
            self.panic = panic
            stats.PANIC.labels(self.name).set(int(panic))
            if panic:
                log.warning("backend %s: no healthy endpoint, panic mode: using all", self.name)
            else:
                log.info("backend %s: healthy endpoints again, panic mode over", self.name)
        if panic:
            usable = list(self.members)
        if usable != self.usable or self.policy is None:
            self.usable = usable
            self.policy = self.policy_type(usable) if usable else None
        for member in self.members:
            state = member.healthy and member.ejected_until <= now
            stats.HEALTHY.labels(self.name, member.key).set(int(state))
        self._replan()
        stats.changed()

    def pick(self, key: bytes | None, tried: list[Member] | None = None) -> Member:
        if self.next_return != math.inf and self.next_return <= self.loop.time():
            self.refresh()  # an ejection ended
        policy = self.policy
        if policy is None:
            raise UpstreamUnreachable(self.name, "no endpoint address (DNS returned none)")
        member = policy.pick(key)
        if tried and member in tried:  # a retry goes elsewhere when there is an elsewhere
            others = [m for m in self.usable if m not in tried]
            if others:
                member = random.choice(others)
        return member

    # -- requests ----------------------------------------------------------------------
    # A request's first try runs in HttpUpstream.request's own coroutine: ``first`` picks
    # and counts the member, ``abandoned`` or ``answered`` account for the outcome. Retry
    # state (deadline, members tried, RESEND) comes into being only once a try failed
    # (``retry_deadline``, ``resume``). ``request`` takes what the first try cannot: a
    # request before the first DNS answer, a streamed body to buffer for retries.
    def first(self, headers: Headers, body: Body) -> Member | None:
        """The member for a request's first try, counted in; None when the request must
        go through ``request``. Raises ``UpstreamOverloaded`` (a limit reached)."""
        pick = self.plain
        if pick is None or (
            body is not None and self.retry is not None and not isinstance(body, bytes)
        ):
            return self._first(headers, body)
        # The common case, as ``pick`` and ``enter`` would do it with nothing to check:
        # every bytecode here is paid by every request (docs/upstream.md, cost).
        member = pick()
        member.active += 1
        member.tries += 1
        self.active += 1
        return member

    def _first(self, headers: Headers, body: Body) -> Member | None:
        if not self.ready or (
            self.retry is not None and body is not None and not isinstance(body, bytes)
        ):
            return None
        max_requests = self.limits.max_requests
        if max_requests is not None and self.active >= max_requests:
            raise self._overflow("max_requests", max_requests)
        member = self.pick(self.key(headers) if self.key is not None else None)
        self.enter(member)
        return member

    def enter(self, member: Member) -> None:
        """A try starts on ``member``; ``MemberPool.release`` or ``abandoned`` ends it."""
        max_pending = self.limits.max_pending
        if max_pending is not None and self.pending >= max_pending:
            pool = member.pool
            if not pool.idle and len(pool.conns) + pool.opening >= pool.backend.max_connections:
                raise self._overflow("max_pending", max_pending)  # it would wait
        member.active += 1
        member.tries += 1
        self.active += 1

    def abandoned(self, member: Member, exc: BaseException) -> None:
        """A try on ``member`` ended without a response."""
        member.active -= 1  # no response: MemberPool.release will not run
        self.active -= 1
        if isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamInvalidRequest):
            self._failed(member)  # the endpoint failed (not the request's own fault)

    def answered(self, member: Member, status: int) -> bool:
        """A try on ``member`` got a response; True when ``retry`` lists its status (then
        ``retry_deadline`` decides)."""
        if status >= 500:
            self._failed(member)
        elif member.errors:
            member.errors = 0
        return status in self.retry_statuses

    def retry_deadline(
        self, failure: UpstreamError | int, method: str, timeout: float | None, started: float
    ) -> float | None:
        """After a failed first try (an error, or a status that ``retry`` lists), started
        at ``started`` (perf_counter): the deadline of the retries, or None when there is
        no retry. The caller calls ``resume`` next, with no await in between."""
        if self.retry is None:
            return None
        deadline = self.loop.time() + (timeout or self.backend.timeout)
        deadline -= time.perf_counter() - started  # the request's deadline, not this try's
        idempotent = method in IDEMPOTENT
        if isinstance(failure, int):
            wanted = self._retry_status(failure, idempotent, deadline)
        else:
            wanted = self._retry_error(failure, idempotent, deadline)
        return deadline if wanted else None

    async def resume(
        self,
        tried: Member,
        deadline: float,
        method: str,
        path: str,
        headers: Headers,
        body: bytes | None,
        timeout: float | None,
    ) -> UpstreamResponse:
        """The retries after a first try on ``tried`` that ``retry_deadline`` retries."""
        assert self.retry is not None
        stats.count(stats.RETRIES, (self.name,))
        key = self.key(headers) if self.key is not None else None
        return await self._tries(self.retry, key, method, path, headers, body, deadline, [tried])

    async def request(
        self, method: str, path: str, headers: Headers, body: Body, timeout: float | None
    ) -> UpstreamResponse:
        """A whole request when ``first`` gave None."""
        if not self.ready:
            await self.resolved.wait()
        max_requests = self.limits.max_requests
        if max_requests is not None and self.active >= max_requests:
            raise self._overflow("max_requests", max_requests)
        key = self.key(headers) if self.key is not None else None
        retry = self.retry
        if retry is None:
            return await self._try(self.pick(key), method, path, headers, body, timeout)
        if body is not None and not isinstance(body, bytes):
            body = await buffered(body)
        deadline = self.loop.time() + (timeout or self.backend.timeout)
        return await self._tries(retry, key, method, path, headers, body, deadline, [])

    async def _tries(
        self,
        retry: Retry,
        key: bytes | None,
        method: str,
        path: str,
        headers: Headers,
        body: Body,
        deadline: float,
        tried: list[Member],
    ) -> UpstreamResponse:
        """Tries until one succeeds or retrying is not allowed (``retry.on``, safety,
        attempts, the budget, the deadline); ``tried``: the members that failed so far."""
        replayable = not isinstance(body, AsyncIterable)
        idempotent = method in IDEMPOTENT
        retries = len(tried)
        while True:
            # A retry counts against the budget from the decision (no await between the
            # check and this) until its try ended, however it ends (cancelled included).
            if retries:
                self.retrying += 1
            resend = RESEND.set(retries)  # the try's span: http.request.resend_count
            try:
                if retries:
                    self.backing_off += 1
                    try:
                        await asyncio.sleep(backoff(retry, retries))
                    finally:
                        self.backing_off -= 1
                member = self.pick(key, tried)
                remaining = deadline - self.loop.time()
                per_try = min(retry.per_try_timeout or remaining, remaining)
                last = retries + 1 >= retry.attempts or not replayable
                try:
                    resp = await self._try(member, method, path, headers, body, per_try)
                except UpstreamError as exc:
                    if last or not self._retry_error(exc, idempotent, deadline):
                        raise
                else:
                    if last or not self._retry_status(resp.status, idempotent, deadline):
                        return resp
                    resp.release()  # its body never reached the client
            finally:
                if retries:
                    self.retrying -= 1
                RESEND.reset(resend)
            tried.append(member)
            retries += 1
            stats.count(stats.RETRIES, (self.name,))

    def _retry_error(self, exc: UpstreamError, idempotent: bool, deadline: float) -> bool:
        """Whether a failed try (not the last) is retried: ``retry.on``, safety, budget."""
        assert self.retry is not None
        why = condition(exc)  # "" for UpstreamOverloaded and the like: never retried
        safe = why == "connect-failure" or idempotent
        return why in self.retry.on and safe and self._may_retry(deadline)

    def _retry_status(self, status: int, idempotent: bool, deadline: float) -> bool:
        wanted = status in self.retry_statuses and idempotent
        return wanted and self._may_retry(deadline)

    def _may_retry(self, deadline: float) -> bool:
        """The retry budget (Envoy's): retries in flight stay within ``budget`` of the
        active requests (at least ``min_retry_concurrency``), and time is left. Active:
        the tries in flight (responses still streaming included) and the requests
        waiting out a backoff."""
        retry = self.retry
        assert retry is not None
        if deadline - self.loop.time() <= retry.backoff_base:
            return False
        active = self.active + self.backing_off
        allowed = max(retry.min_retry_concurrency, retry.budget * active)
        if self.retrying >= allowed:
            stats.count(stats.CIRCUIT_OPEN, (self.name, "retry_budget"))
            return False
        return True

    async def _try(
        self,
        member: Member,
        method: str,
        path: str,
        headers: Headers,
        body: Body,
        timeout: float | None,
    ) -> UpstreamResponse:
        """One try of ``request`` or ``resume`` (a retry, or a first try ``first`` left)."""
        self.enter(member)
        try:
            resp = await self.send(self.name, method, path, headers, body, timeout, member.pool)
        except BaseException as exc:
            self.abandoned(member, exc)
            raise
        self.answered(member, resp.status)  # _tries decides on retries itself
        return resp

    def _overflow(self, limit: str, value: int) -> UpstreamOverloaded:
        stats.count(stats.CIRCUIT_OPEN, (self.name, limit))
        return UpstreamOverloaded(self.name, limit, value)

    # -- outlier detection (passive) -----------------------------------------------------
    def _failed(self, member: Member) -> None:
        stats.count(stats.ERRORS, member.labels)
        outlier = self.backend.outlier
        if outlier is None:
            return
        member.errors += 1
        now = self.loop.time()
        if member.errors < outlier.consecutive_errors or member.ejected_until > now:
            return
        member.errors = 0
        ejected = sum(1 for m in self.members if m.ejected_until > now)
        if ejected + 1 > max(1, int(outlier.max_ejected * len(self.members))):
            return  # max_ejected: the rest must carry the traffic
        # The multiplier decays by one per ``interval`` spent back in service.
        decay = int((now - member.returned_at) / outlier.interval) if member.ejections else 0
        member.ejections = max(0, member.ejections - decay) + 1
        longest = max(MAX_EJECTION, outlier.base_ejection)
        span = min(outlier.base_ejection * member.ejections, longest)
        member.ejected_until = member.returned_at = now + span
        stats.count(stats.EJECTIONS, member.labels)
        log.warning("backend %s: ejected %s for %.3gs", self.name, member.key, span)
        self.refresh()

    # -- lifecycle and status ----------------------------------------------------------
    def report(self) -> tuple[str, dict[str, Any]]:
        now = self.loop.time()
        return self.name, {
            "lb": self.backend.lb,
            "panic": self.panic,
            "endpoints": [m.as_json(now) for m in self.members],
        }

    def tries(self) -> list[tuple[tuple[str, str], int]]:
        """Tries per member since the last call (the metrics flush takes them)."""
        return [(m.labels, m.take_tries()) for m in self.members if m.tries]

    async def aclose(self) -> None:
        for labels, tries in self.tries():
            stats.count(stats.REQUESTS, labels, tries)
        stats.unregister(id(self))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for member in self.members:
            member.pool.close()
        for pool in self._retired:
            pool.close()
