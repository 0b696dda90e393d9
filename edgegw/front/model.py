"""The validated, immutable config of the front-door rules (part of ``edgegw.model``).

Header names are lower-case; template values are kept as written and compiled when a
pipeline is built (``edgegw/front/rules.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CorsPolicy:
    """A route's CORS policy (Fetch standard, "CORS protocol")."""

    origins: frozenset[str] = frozenset()  # exact origins, lower-case (scheme://host[:port])
    origin_patterns: tuple[re.Pattern[str], ...] = ()  # "regex:..." entries, full match
    any_origin: bool = False  # "*" listed (never with credentials: config refuses it)
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int | None = None  # seconds (Access-Control-Max-Age)


@dataclass(frozen=True)
class HeaderEdits:
    """One direction's edits, applied in this order: remove, set, add (Envoy's order)."""

    set: tuple[tuple[str, str], ...] = ()  # name -> value template
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class HeaderRules:
    request: HeaderEdits = field(default_factory=HeaderEdits)
    response: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(frozen=True)
class Rewrite:
    """``path_regex`` replaced by ``to`` (``\\1`` groups) in the path sent upstream."""

    pattern: re.Pattern[str]
    to: str


#: Headers a ``security_headers`` value only goes out with when the listener is TLS.
TLS_ONLY = frozenset({"strict-transport-security"})


@dataclass(frozen=True)
class SecurityHeaders:
    """Response headers added when the response has none of that name."""

    values: tuple[tuple[str, str], ...] = ()
    tls_only: frozenset[str] = frozenset()  # names dropped unless the listener is TLS
