"""A route's CORS policy at the edge (Fetch standard, "CORS protocol"; compared
with Envoy's CORS filter in docs/security.md).

- A CORS-preflight request (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``, Fetch "HTTP requests") is answered here with 204: it never
  reaches the filters nor the backend. An allowed origin gets the policy's
  ``Access-Control-Allow-*`` headers; any other gets none, and the browser then refuses
  the actual request (Fetch, "CORS-preflight fetch").
- Every other response on the route gets, for an allowed origin,
  ``Access-Control-Allow-Origin`` (the origin echoed; ``*`` only for a policy listing
  ``*`` without credentials), ``-Allow-Credentials`` and ``-Expose-Headers``; for any
  other origin none. The route's policy is the only source: such headers from the
  backend or a filter are removed first, so a backend's ``*`` cannot widen it.
- ``Vary: Origin`` goes on every response of the route, allowed or not: the answer
  depends on ``Origin`` and a shared cache must keep one copy per origin (Fetch, "CORS
  protocol and HTTP caches").
"""

from __future__ import annotations

from edgegw.front.model import CorsPolicy
from edgegw.types import Headers

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_CREDENTIALS = b"access-control-allow-credentials"
ALLOW_METHODS = b"access-control-allow-methods"
ALLOW_HEADERS = b"access-control-allow-headers"
EXPOSE_HEADERS = b"access-control-expose-headers"
MAX_AGE = b"access-control-max-age"
_OWNED = frozenset(
    {ALLOW_ORIGIN, ALLOW_CREDENTIALS, ALLOW_METHODS, ALLOW_HEADERS, EXPOSE_HEADERS, MAX_AGE}
)
_VARY = b"vary"


class Cors:
    """A ``CorsPolicy`` compiled: the fixed header values made once."""

    __slots__ = ("_actual", "_preflight", "policy")

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy
        extra: Headers = []
        if policy.allow_credentials:
            extra.append((ALLOW_CREDENTIALS, b"true"))
        actual = list(extra)
        if policy.expose_headers:
            actual.append((EXPOSE_HEADERS, ", ".join(policy.expose_headers).encode("latin-1")))
        if policy.allow_methods:
            extra.append((ALLOW_METHODS, ", ".join(policy.allow_methods).encode("latin-1")))
        if policy.allow_headers:
            extra.append((ALLOW_HEADERS, ", ".join(policy.allow_headers).encode("latin-1")))
        if policy.max_age is not None:
            extra.append((MAX_AGE, str(policy.max_age).encode()))
        self._preflight = tuple(extra)
        self._actual = tuple(actual)

    def allowed(self, origin: bytes | None) -> bool:
        if origin is None:
            return False
        p = self.policy
        if p.any_origin:
            return True
        text = origin.decode("latin-1")
        # Serialized origins are ASCII with a lower-case scheme and host (URL standard,
        # "ASCII serialization of an origin"); config entries are lower-cased likewise.
        return text in p.origins or any(r.fullmatch(text) for r in p.origin_patterns)

    def _allow_origin(self, origin: bytes) -> bytes:
        # Fetch, "HTTP responses": with credentials the value must be the origin itself, never "*".
        return b"*" if self.policy.any_origin else origin

    def preflight(self, origin: bytes | None) -> Headers:
        """The headers of the 204 answering a preflight from ``origin``."""
        headers: Headers = [(_VARY, b"Origin")]
        if origin is not None and self.allowed(origin):
            headers.append((ALLOW_ORIGIN, self._allow_origin(origin)))
            headers.extend(self._preflight)
        return headers

    def response(self, headers: Headers, origin: bytes | None) -> Headers:
        """A response's headers with the policy's in place of any CORS ones it had."""
        out = [(n, v) for n, v in headers if n not in _OWNED]
        if origin is not None and self.allowed(origin):
            out.append((ALLOW_ORIGIN, self._allow_origin(origin)))
            out.extend(self._actual)
        return add_vary_origin(out)


def add_vary_origin(headers: Headers) -> Headers:
    """``Vary: Origin`` added unless a ``Vary`` already names it or is ``*`` (RFC 9110
    §12.5.5: a list; another field line of it combines with the first)."""
    for name, value in headers:
        if name == _VARY:
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"origin" in tokens or b"*" in tokens:
                return headers
    headers.append((_VARY, b"Origin"))
    return headers
