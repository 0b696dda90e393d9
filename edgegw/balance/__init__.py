"""Production upstreams: several endpoints per backend, load balancing, DNS
re-resolution, active health checks, outlier ejection, retries with a budget, circuit
breakers and upstream TLS (docs/upstream.md). A plain single-URL backend never gets here:
``Backend.balanced`` is false for it and edgegw.upstream uses its one pool directly."""

from edgegw.balance.balancer import Balancer
from edgegw.balance.tls import client_context

__all__ = ["Balancer", "client_context"]
