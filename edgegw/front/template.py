"""Header value templates: ``{header.x}``, ``{param.x}``, ``{geo.country}``,
``{claim.x}``; ``{{`` and ``}}`` stand for literal braces.

``parse`` runs at config load (a bad reference is a config error) and when a pipeline is
built; ``Values`` answers the references of one request, computing each source at most
once and only when a rule asks for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from edgegw.config.yamlnodes import did_you_mean
from edgegw.types import Headers

Part = str | tuple[str, str]  # a literal, or (source, name)
SOURCES = ("header", "param", "geo", "claim")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # a header name: RFC 9110 §5.6.2
_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
#: Set by filters only: the gateway removes every client's ``x-edgegw-*`` before the
#: filters run (docs/security.md), so these carry what a filter decided.
CLAIMS_HEADER = b"x-edgegw-claims"  # jwt_auth's claims_header: base64url JSON of the claims
COUNTRY_HEADER = b"x-edgegw-country"  # the geo filter's country_header
# RFC 9110 §5.5: never in a field value (they would end the header line: injection).
_FORBIDDEN = re.compile(rb"[\0\r\n]")


def parse(text: str) -> tuple[Part, ...]:
    """The parts of a template; ValueError names the first bad reference."""
    parts: list[Part] = []
    literal: list[str] = []
    pos = 0
    for m in _PIECE.finditer(text):
        literal.append(text[pos : m.start()])
        pos = m.end()
        piece = m.group(0)
        if piece in ("{{", "}}"):
            literal.append(piece[0])
            continue
        if m.group(1) is None:
            raise ValueError(f"unmatched '{piece}' in {text!r} (write {piece * 2} for a literal)")
        parts.append("".join(literal))
        literal = []
        parts.append(_reference(m.group(1)))
    literal.append(text[pos:])
    parts.append("".join(literal))
    return tuple(p for p in parts if p != "")


def _reference(raw: str) -> tuple[str, str]:
    source, dot, name = raw.partition(".")
    if source not in SOURCES or not dot or not name:
        hint = did_you_mean(source, SOURCES) or f" (expected one of {', '.join(SOURCES)})"
        raise ValueError(f"unknown template reference '{{{raw}}}'{hint}; e.g. {{header.x-user}}")
    if source == "header":
        if not _TOKEN.match(name):
            raise ValueError(f"invalid header name in '{{{raw}}}'")
        name = name.lower()
    if source == "geo" and name != "country":
        raise ValueError(f"unknown template reference '{{{raw}}}' (did you mean 'geo.country'?)")
    return source, name


class Values:
    """The template values of one request: its headers (as the backend gets them, for
    request rules after the filters), its query string."""

    __slots__ = ("_claims", "_params", "headers", "query")

    def __init__(self, headers: Headers, query: str) -> None:
        self.headers = headers
        self.query = query
        self._params: dict[str, bytes] | None = None
        self._claims: dict[str, Any] | None = None

    def render(self, parts: tuple[Part, ...]) -> bytes:
        """The value, or ``b""`` when a reference has none or the result holds a byte a
        header cannot carry (a ``%0d%0a`` in a query parameter)."""
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part.encode("latin-1", "replace"))
            else:
                out.append(self._lookup(*part))
        value = b"".join(out)
        return b"" if _FORBIDDEN.search(value) else value

    def _lookup(self, source: str, name: str) -> bytes:
        if source == "header":
            values = [v for n, v in self.headers if n == name.encode("latin-1")]
            return b", ".join(values)  # RFC 9110 §5.3: repeated fields combine with commas
        if source == "param":
            if self._params is None:
                self._params = _query_params(self.query)
            return self._params.get(name, b"")
        if source == "geo":
            return self._first(COUNTRY_HEADER)
        if self._claims is None:
            self._claims = _claims(self._first(CLAIMS_HEADER))
        return _claim_bytes(self._claims.get(name))

    def _first(self, name: bytes) -> bytes:
        return next((v for n, v in self.headers if n == name), b"")


def _query_params(query: str) -> dict[str, bytes]:
    """The first value of every query parameter (``application/x-www-form-urlencoded``:
    ``+`` is a space), percent-decoded to bytes."""
    params: dict[str, bytes] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        name = unquote_to_bytes(key.replace("+", " ")).decode("utf-8", "replace")
        if name and name not in params:
            params[name] = unquote_to_bytes(value.replace("+", " "))
    return params


def _claims(raw: bytes) -> dict[str, Any]:
    """jwt_auth's claims header: the token's payload segment (base64url, padding
    optional), or a JSON object as ab_flags also accepts."""
    if not raw:
        return {}
    try:
        text = raw if raw[:1] == b"{" else base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        claims = json.loads(text)
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def _claim_bytes(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (str, int, float)):
        return str(value).encode("utf-8")
    return b""  # arrays, objects, absent: no single header value
