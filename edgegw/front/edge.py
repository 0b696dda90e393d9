"""The front-door rules of one config, compiled once (``Front.build``), and their hooks
in a request (``Edge``).

Order, decided here and documented in docs/configuration.md ("Front door"):

1. a CORS preflight on a route with ``cors`` is answered before the filters run;
2. request filters; then ``headers.request`` (global, then the route's), so a rule can
   use what the filters set (``{claim.tenant}`` from jwt_auth) and remove what they added;
3. backend (``rewrite`` of the path sent), response filters;
4. on every response, the backend's and the gateway's or a filter's own replies alike:
   ``security_headers`` (added when absent), then ``headers.response`` (global, then the
   route's), then the route's CORS headers.

``Pipeline`` keeps ``front = None`` when a config has none of these, and every hook
stays off its path.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

from edgegw.chain import Exchange, LocalReply
from edgegw.front.cors import ORIGIN, REQUEST_METHOD, Cors
from edgegw.front.rules import Edits, Security, join
from edgegw.front.template import Values
from edgegw.headers import get
from edgegw.model import GatewayConfig
from edgegw.routing import Router
from edgegw.types import Headers, Message, Send


@dataclass(frozen=True, slots=True)
class RouteRules:
    request: tuple[Edits, ...]
    response: tuple[Edits, ...]
    cors: Cors | None


class Front:
    """A config's rules, compiled (templates parsed, header names encoded, CORS values
    joined)."""

    def __init__(self, config: GatewayConfig) -> None:
        top = config.headers
        security = None
        if config.security_headers is not None:
            security = Security(config.security_headers, config.tls is not None)
        self.security = security or None
        self.response = join(top.response if top else None)
        self.routes: dict[str, RouteRules] = {}
        for route in config.routes:
            own = route.headers
            self.routes[route.name] = RouteRules(
                request=join(top.request if top else None, own.request if own else None),
                response=join(top.response if top else None, own.response if own else None),
                cors=Cors(route.cors) if route.cors is not None else None,
            )

    @classmethod
    def build(cls, config: GatewayConfig) -> Front | None:
        """``None`` when the config has no header rules, security headers nor CORS."""
        if (
            config.headers
            or config.security_headers
            or any(r.headers or r.cors for r in config.routes)
        ):
            return cls(config)
        return None

    def start(self, send: Send, headers: Headers, query: bytes) -> Edge:
        return Edge(self, send, headers, query.decode("latin-1"))

    def request(self, ex: Exchange) -> None:
        """``headers.request`` on the request the filters left (step 2 above)."""
        edits = self.routes[ex.route.name].request
        if edits:
            values = Values(ex.request_headers, ex.path.partition("?")[2])
            for e in edits:
                ex.request_headers = e.apply(ex.request_headers, values)


class Edge:
    """One request's view of the rules: its ``send`` edits the response head."""

    __slots__ = ("_ex", "_front", "_headers", "_origin", "_query", "_rules", "_send")

    def __init__(self, front: Front, send: Send, headers: Headers, query: str) -> None:
        self._front = front
        self._send = send
        self._headers = headers  # until a route is found: the client's
        self._query = query
        self._rules: RouteRules | None = None
        self._ex: Exchange | None = None
        self._origin: bytes | None = None

    def preflight(self, router: Router, path: str, authority: str) -> tuple[str, LocalReply] | None:
        """A CORS-preflight request (Fetch, "HTTP requests") for a route with ``cors``: that route's
        name and the 204 answering it. The route is the one the actual request would
        take (routed by ``Access-Control-Request-Method``): a route limited to POST
        still answers the preflight of a POST."""
        wanted = get(self._headers, REQUEST_METHOD)
        origin = get(self._headers, ORIGIN)
        if wanted is None or origin is None:
            return None
        found = router.match(wanted.decode("latin-1").strip(), path, authority)
        if found is None:
            return None
        cors = self._front.routes[found[0].name].cors
        if cors is None:
            return None
        return found[0].name, LocalReply(204, cors.preflight(origin))

    def bind(self, ex: Exchange) -> None:
        """The request was routed: its route's rules apply to the response."""
        self._ex = ex
        self._rules = self._front.routes[ex.route.name]
        if self._rules.cors is not None:
            self._origin = get(ex.request_headers, ORIGIN)

    def send(self, message: Message) -> Awaitable[None]:
        # Not a coroutine of its own: the server's send is awaited by the caller directly.
        if message["type"] == "http.response.start":
            message = {**message, "headers": self._head(list(message["headers"]))}
        return self._send(message)

    def _head(self, headers: Headers) -> Headers:
        front = self._front
        if front.security is not None:
            headers = front.security.apply(headers)
        rules = self._rules
        edits = rules.response if rules is not None else front.response
        if edits:
            request = self._ex.request_headers if self._ex is not None else self._headers
            values = Values(request, self._query)
            for e in edits:
                headers = e.apply(headers, values)
        if rules is not None and rules.cors is not None:
            headers = rules.cors.response(headers, self._origin)
        return headers
