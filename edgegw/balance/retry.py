"""Retry rules: which failures are retried, which requests may be repeated, the backoff.

A request is repeated only when that is safe: its body is bytes in hand (never a stream
already partly sent), and either nothing reached the backend (a connect failure) or the
method is idempotent (RFC 9110 §9.2.2). Retries happen before ``request()`` returns, so
never after response bytes reached the client.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, AsyncIterator

from edgegw.errors import (
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from edgegw.model import Retry

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# A streamed request body up to this size is read whole before the first try, so that a
# retry can send it again; a larger one is streamed once and never retried.
REPLAY_BOUND = 64 * 1024


def condition(exc: UpstreamError) -> str:
    """The ``retry.on`` name of a failure (by type: refused, reset, timed out)."""
    if isinstance(exc, UpstreamInvalidRequest):
        return ""  # the same bytes would fail again
    if isinstance(exc, (UpstreamUnreachable, UpstreamConnectTimeout)):
        return "connect-failure"
    if isinstance(exc, UpstreamConnectError):
        return "reset"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return ""  # UpstreamOverloaded and the like: never retried


def backoff(retry: Retry, retries: int) -> float:
    """Fully jittered exponential backoff (as Envoy): uniform in [0, base·2^(n-1)], the
    ceiling capped at ``max``."""
    ceiling = min(retry.backoff_max, retry.backoff_base * (1 << min(retries - 1, 20)))
    return random.uniform(0, ceiling)


async def buffered(
    body: AsyncIterable[bytes], bound: int = REPLAY_BOUND
) -> bytes | AsyncIterable[bytes]:
    """The whole body as bytes when it ends within ``bound``; else a stream that yields
    what was read, then the rest (sent once, not retried)."""
    chunks: list[bytes] = []
    size = 0
    iterator = aiter(body)
    async for chunk in iterator:
        chunks.append(chunk)
        size += len(chunk)
        if size > bound:
            return _chain(chunks, iterator)
    return b"".join(chunks)


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk
