"""Route matching: first route in config order whose prefix/path, methods and host match.

Everything is compiled once per config; a request costs a few string comparisons (prefix
routes) or one regex match (path templates). ``allowed`` runs only for a request no route
took, to tell 405 (the path exists for other methods) from 404.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from urllib.parse import unquote

from edgegw.model import Route
from edgegw.paths import is_safe_segment

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    prefix: str | None  # without a trailing slash ("" for "/")
    pattern: re.Pattern[str] | None
    methods: frozenset[str]
    host: str | None  # exact host
    host_suffix: str | None  # from "*.example.com": ".example.com"


def compile_template(template: str) -> re.Pattern[str]:
    """``/api/profile/{user_id}`` → a regex with one named group per parameter; a
    parameter matches one non-empty path segment."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


def _compile(route: Route) -> CompiledRoute:
    match = route.match
    host = match.host.lower() if match.host else None
    suffix = host[1:] if host and host.startswith("*.") else None
    return CompiledRoute(
        route=route,
        prefix=match.prefix.rstrip("/") if match.prefix is not None else None,
        pattern=compile_template(match.path) if match.path is not None else None,
        methods=frozenset(match.methods),
        host=None if suffix else host,
        host_suffix=suffix,
    )


class Router:
    """Finds the route of a request. Immutable; build a new one for a new config."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._routes = tuple(_compile(r) for r in routes)
        self._needs_host = any(r.host or r.host_suffix for r in self._routes)
        # For each route limited to some methods: a router for the same route without
        # that limit, and the methods. Only these can make a miss a 405 (a route open to
        # every method that fits the path would have matched).
        self._by_method = tuple(
            (Router((_any_method(r),)), r.match.methods) for r in routes if r.match.methods
        )

    def match(self, method: str, path: str, host: str) -> tuple[Route, dict[str, str]] | None:
        """``path`` normalized (edgegw/paths.py), without the query; ``host`` as sent (a
        port is ignored). Path parameters come back percent-decoded."""
        if self._needs_host:
            host = _bare_host(host)
        for cr in self._routes:
            if cr.methods and method not in cr.methods:
                continue
            if cr.host is not None and host != cr.host:
                continue
            if cr.host_suffix is not None and not host.endswith(cr.host_suffix):
                continue
            if cr.prefix is not None:
                # Segment-aware: /users matches /users and /users/1, never /usersx.
                if path.startswith(cr.prefix) and (
                    len(path) == len(cr.prefix) or path[len(cr.prefix)] == "/"
                ):
                    return cr.route, {}
                continue
            assert cr.pattern is not None
            m = cr.pattern.match(path)
            if m is not None:
                params = _decoded(m.groupdict())
                if params is not None:
                    return cr.route, params
        return None

    def allowed(self, path: str, host: str) -> tuple[str, ...]:
        """The methods of the routes whose path and host fit, in config order; for a
        request ``match`` found no route for. Empty: no route has this path (404)."""
        methods: dict[str, None] = {}
        for router, route_methods in self._by_method:
            if router.match("", path, host) is not None:
                methods.update(dict.fromkeys(route_methods))
        return tuple(methods)


def _any_method(route: Route) -> Route:
    return dataclasses.replace(route, match=dataclasses.replace(route.match, methods=()))


def _decoded(params: dict[str, str]) -> dict[str, str] | None:
    """Path parameters percent-decoded (the path is matched encoded, edgegw/paths.py);
    None when one decodes to ``.``, ``..`` or holds a ``/`` (an escaped slash kept by
    ``keep_escaped``): such a value would change the shape of any path it is put in."""
    for name, value in params.items():
        if "%" in value:
            value = params[name] = unquote(value)
            if not is_safe_segment(value):
                return None
        elif value in (".", ".."):
            return None
    return params


def _bare_host(host: str) -> str:
    host = host.lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
