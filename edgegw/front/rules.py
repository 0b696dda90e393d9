"""Header rules (``headers:``, top level and per route; ``security_headers:``) compiled
for one pipeline: each request applies a few precompiled lists, and a route without
rules costs nothing."""

from __future__ import annotations

from edgegw.front.model import HeaderEdits, SecurityHeaders
from edgegw.front.template import Part, Values, parse
from edgegw.types import Headers

# A header name and its value: bytes when the template has no reference (made once),
# else its parts.
_Rule = tuple[bytes, bytes | tuple[Part, ...]]


class Edits:
    """One direction's ``{set, add, remove}``, in Envoy's order: names in ``remove`` go
    first, then ``set`` replaces every field of its name, then ``add`` appends.

    A ``set`` whose template renders empty (the claim or header it names is absent)
    removes the field: a client's own ``x-tenant`` never survives a rule meant to set
    it from a verified claim. An ``add`` that renders empty adds nothing."""

    __slots__ = ("_add", "_drop", "_set")

    def __init__(self, edits: HeaderEdits) -> None:
        def compiled(pairs: tuple[tuple[str, str], ...]) -> tuple[_Rule, ...]:
            out: list[_Rule] = []
            for name, text in pairs:
                parts = parse(text)
                static = all(isinstance(p, str) for p in parts)
                value = "".join(str(p) for p in parts).encode("latin-1") if static else parts
                out.append((name.encode("latin-1"), value))
            return tuple(out)

        self._set = compiled(edits.set)
        self._add = compiled(edits.add)
        self._drop = frozenset(n.encode("latin-1") for n in edits.remove) | {
            n for n, _ in self._set
        }

    def apply(self, headers: Headers, values: Values) -> Headers:
        """``headers`` edited (a new list; ``values`` renders against the input)."""
        out = [(n, v) for n, v in headers if n not in self._drop] if self._drop else list(headers)
        for pairs in (self._set, self._add):
            for name, template in pairs:
                value = template if isinstance(template, bytes) else values.render(template)
                if value:
                    out.append((name, value))
        return out


def join(*edits: HeaderEdits | None) -> tuple[Edits, ...]:
    """The compiled edits that are not empty, in order (global first, then the route's:
    the route's ``set`` wins)."""
    return tuple(Edits(e) for e in edits if e)


class Security:
    """``security_headers``: each added unless the response already has that field (a
    backend's own ``X-Frame-Options: SAMEORIGIN`` stays; ``headers.response.set``
    overrides either)."""

    __slots__ = ("_values",)

    def __init__(self, config: SecurityHeaders, tls: bool) -> None:
        self._values = tuple(
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in config.values
            if tls or n not in config.tls_only
        )

    def __bool__(self) -> bool:
        return bool(self._values)

    def apply(self, headers: Headers) -> Headers:
        present = {n for n, _ in headers}
        headers.extend((n, v) for n, v in self._values if n not in present)
        return headers
