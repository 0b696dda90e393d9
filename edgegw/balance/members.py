"""One endpoint address: its keep-alive pool and what the balancer knows about it."""

from __future__ import annotations

import math
import ssl
from typing import TYPE_CHECKING

from edgegw.http1 import Pool
from edgegw.model import Backend

if TYPE_CHECKING:
    from edgegw.balance.balancer import Balancer


class Member:
    """An address of an endpoint (a URL's host may resolve to several)."""

    __slots__ = (
        "active",
        "address",
        "balancer",
        "checks_failed",
        "checks_passed",
        "ejected_until",
        "ejections",
        "errors",
        "healthy",
        "key",
        "labels",
        "pool",
        "returned_at",
        "tries",
        "url",
        "weight",
    )

    def __init__(
        self,
        balancer: Balancer,
        backend: Backend,
        url: str,
        address: str,
        weight: int,
        tls: ssl.SSLContext | None,
        sni: str | None,
    ) -> None:
        self.balancer = balancer
        self.url = url
        self.address = address
        self.key = f"{url}@{address}"  # stable across workers: the Maglev name
        self.labels = (backend.name, self.key)  # of its metrics
        self.weight = weight
        self.pool = MemberPool(self, backend, address, tls, sni)
        self.active = 0  # requests in flight here (least_request; released with the body)
        self.tries = 0  # tries sent here since the last metrics flush (a plain int: hot)
        self.healthy = True  # by active health checks
        self.checks_passed = 0
        self.checks_failed = 0
        self.errors = 0  # consecutive failures seen by requests (outlier detection)
        self.ejections = 0  # the ejection multiplier
        self.ejected_until = 0.0
        self.returned_at = -math.inf

    def take_tries(self) -> int:
        tries, self.tries = self.tries, 0
        return tries

    def state(self, now: float) -> str:
        if self.ejected_until > now:
            return "ejected"
        return "healthy" if self.healthy else "unhealthy"

    def as_json(self, now: float) -> dict[str, object]:
        return {
            "url": self.url,
            "address": self.address,
            "weight": self.weight,
            "state": self.state(now),
            "ejections": self.ejections,
        }


class MemberPool(Pool):
    """The member's pool; releasing a response ends the request's count on the member
    (``Pool.release``, without a method of its own: one frame less per request)."""

    def __init__(
        self,
        member: Member,
        backend: Backend,
        address: str,
        tls: ssl.SSLContext | None,
        sni: str | None,
    ) -> None:
        super().__init__(backend, address, tls, sni)
        self.owner = member  # as a Member (the balancer's counts)
        self.member = member  # as Pool.release sees it: the in-flight counts it ends

    def queued(self, delta: int) -> None:
        self.owner.balancer.pending += delta  # limits.max_pending
