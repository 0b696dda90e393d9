"""Active health checks: one task per balanced backend (per worker) probes every endpoint
address with ``GET <path>`` each ``interval``, all addresses at once, each probe bounded by
``timeout``; the task ends with the balancer (``Balancer.aclose``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgegw.balance.balancer import Balancer
    from edgegw.balance.members import Member

log = logging.getLogger("edgegw.balance")


class HealthChecker:
    def __init__(self, balancer: Balancer) -> None:
        check = balancer.backend.health_check
        assert check is not None
        self.balancer = balancer
        self.check = check
        self.path = check.path.encode("latin-1")

    async def run(self) -> None:
        await self.balancer.resolved.wait()
        while True:
            members = list(self.balancer.members)
            results = await asyncio.gather(
                *(self.probe(m) for m in members), return_exceptions=True
            )
            changed = [self.record(m, ok is True) for m, ok in zip(members, results, strict=True)]
            if any(changed):
                self.balancer.refresh()
            await asyncio.sleep(self.check.interval)

    async def probe(self, member: Member) -> bool:
        """True when ``GET path`` answers with an expected status within ``timeout``."""
        pool = member.pool
        request = b"GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: edgegw-health-check\r\n" % (
            self.path,
            pool.authority,
        )
        try:
            async with asyncio.timeout(self.check.timeout):
                reader, writer = await asyncio.open_connection(
                    pool.host, pool.port, ssl=pool.ssl, server_hostname=pool.sni
                )
                try:
                    writer.write(request + b"connection: close\r\n\r\n")
                    line = await reader.readline()  # HTTP/1.1 200 OK (RFC 9112 §4)
                finally:
                    writer.transport.abort()
        except (OSError, TimeoutError, ssl.SSLError, ValueError):
            return False
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False
        status = int(parts[1])
        return any(low <= status <= high for low, high in self.check.expect)

    def record(self, member: Member, ok: bool) -> bool:
        """Count a result; True when it flips the member's health (thresholds reached)."""
        check = self.check
        if ok:
            member.checks_failed = 0
            member.checks_passed += 1
            if not member.healthy and member.checks_passed >= check.healthy:
                member.healthy = True
                log.info("backend %s: %s is healthy", self.balancer.name, member.key)
                return True
        else:
            member.checks_passed = 0
            member.checks_failed += 1
            if member.healthy and member.checks_failed >= check.unhealthy:
                member.healthy = False
                log.warning("backend %s: %s is unhealthy", self.balancer.name, member.key)
                return True
        return False
