"""The request as the edge accepts it: framing and Host checked, client headers cleaned.

One pass over the client's header list (``RequestPolicy.inspect``) before routing and
before any filter runs. It drops what a client must not send on: hop-by-hop headers
(RFC 9110 §7.6.1), ``x-edgegw-*`` (the gateway's and its filters' own headers), the
configured ``request_headers_to_remove`` and, unless allowed, names with underscores; it
keeps one normalized ``host`` and notes the framing headers, the request id and whether
X-Forwarded-* were sent (so the pipeline makes no pass of its own for them). Every
decision about a header name is made once per config and remembered (names repeat from
request to request), so a request pays one dict lookup per header. Rejections are
``(status, detail)`` values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from edgegw.headers import HOP_BY_HOP, REQUEST_ID, XFF, XFH, XFP
from edgegw.model import UnderscoreAction
from edgegw.types import Headers

INTERNAL_PREFIX = b"x-edgegw-"
# What inspect() does with a header name.
_KEEP, _DROP, _HOST, _LENGTH, _CODING, _CONNECTION, _REJECT, _NOTED_ID, _FORWARDED = range(9)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODING,
    b"connection": _CONNECTION,
}
# Kept, and noted on the way: the pipeline then needs no pass of its own for them.
_NOTED = {REQUEST_ID: _NOTED_ID, XFF: _FORWARDED, XFP: _FORWARDED, XFH: _FORWARDED}
_MAX_REMEMBERED = 4096  # distinct header names whose decision is kept (a client may invent many)
# RFC 9110 §7.2: Host = uri-host [ ":" port ]; uri-host is an IP-literal or a reg-name
# (RFC 3986 §3.2.2). An empty host is invalid for http(s) URIs (RFC 9110 §4.2.1).
_HOST_SYNTAX = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")
# Connection options that name no header field.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive"})
HEADER_TOO_LARGE = 431  # RFC 6585 §5


@dataclass(slots=True)
class Inbound:
    """What ``inspect`` learned: the cleaned headers and the request's framing."""

    headers: Headers
    authority: str
    host: bytes  # ``authority`` as bytes (b"" when none), as the host field carries it
    length: int | None  # Content-Length (validated), None when absent
    chunked: bool  # Transfer-Encoding: chunked
    nominated: frozenset[bytes]  # header names the Connection header lists (to drop)
    request_id: bytes | None  # the first X-Request-Id value, as sent
    forwarded: bool  # X-Forwarded-For, -Proto or -Host were sent


Rejection = tuple[int, str]


class RequestPolicy:
    """The header rules of one config (``request_headers_to_remove``,
    ``headers_with_underscores_action``, ``limits.max_header_bytes``)."""

    def __init__(
        self, remove: Iterable[str], underscores: UnderscoreAction, max_header_bytes: int
    ) -> None:
        self.remove = frozenset(n.lower().encode("latin-1") for n in remove)
        self.underscores = underscores
        self.max_header_bytes = max_header_bytes
        self._actions: dict[bytes, int] = {}
        self._hosts: dict[bytes, str] = {}  # valid Host values seen, decoded

    def _classify(self, name: bytes) -> int:
        action = _SPECIAL.get(name)
        if action is None:
            if name in HOP_BY_HOP or name in self.remove or name.startswith(INTERNAL_PREFIX):
                action = _DROP
            elif b"_" in name and self.underscores != "allow":
                # Envoy's headers_with_underscores_action: x_user_id reaches many backends
                # (CGI, nginx, Django's META) as the same key as x-user-id.
                action = _REJECT if self.underscores == "reject_request" else _DROP
            else:
                action = _NOTED.get(name, _KEEP)
        if len(self._actions) < _MAX_REMEMBERED:
            self._actions[name] = action
        return action

    def _authority(self, value: bytes) -> str | None:
        known = self._hosts.get(value)
        if known is None and _HOST_SYNTAX.fullmatch(value):
            known = value.decode("latin-1")
            if len(self._hosts) < _MAX_REMEMBERED:
                self._hosts[value] = known
        return known

    def inspect(
        self,
        raw: Iterable[tuple[bytes, bytes]],
        target_size: int,
        http11: bool,
        target_authority: bytes | None = None,
    ) -> Inbound | Rejection:
        """Clean the client's headers. ``target_size`` (method and request target) counts
        against ``max_header_bytes`` as Envoy counts its pseudo-headers; the authority of
        an absolute-form target (``target_authority``) replaces Host (RFC 9112 §3.2.2)."""
        actions = self._actions
        kept: Headers = []
        size = target_size
        # Framing and Host fields are rare beyond one each: the first value of each is
        # kept, and a list only when a second comes (no list per request otherwise).
        host: bytes | None = None
        length_value: bytes | None = None
        coding: bytes | None = None
        hosts = lengths = codings = 0
        connection: list[bytes] | None = None
        request_id = None
        forwarded = False
        for name, value in raw:
            size += len(name) + len(value)
            action = actions.get(name)
            if action is None:
                action = self._classify(name)
            if action == _KEEP:
                kept.append((name, value))
            elif action == _DROP:
                continue
            elif action == _HOST:
                hosts += 1
                host = value
            elif action == _NOTED_ID:
                kept.append((name, value))
                if request_id is None:
                    request_id = value
            elif action == _FORWARDED:
                kept.append((name, value))
                forwarded = True
            elif action == _LENGTH:
                lengths += 1
                length_value = value
                kept.append((name, value))
            elif action == _CODING:
                codings += 1
                coding = value
            elif action == _CONNECTION:
                if connection is None:
                    connection = [value]
                else:
                    connection.append(value)
            else:
                return 400, f"header name with an underscore: {name.decode('latin-1')}"
        if size > self.max_header_bytes:
            return HEADER_TOO_LARGE, f"request headers over {self.max_header_bytes} bytes"
        if hosts > 1:  # RFC 9112 §3.2: more than one Host field: 400
            return 400, "more than one Host header"
        authority, field = "", b""
        if host is not None or http11:
            # RFC 9112 §3.2: an HTTP/1.1 request without Host, or with an invalid one, is
            # answered 400. HTTP/1.0 may leave it out (granian then gives an empty one).
            given = host or b""
            found = self._authority(given) if given or http11 else ""
            if found is None:
                return 400, "missing or invalid Host header"
            authority, field = found, given
        if target_authority is not None:
            found = self._authority(target_authority)
            if found is None:
                return 400, "invalid authority in the request target"
            authority, field = found, target_authority
        length = None
        if length_value is not None:
            # RFC 9112 §6.3 (5): several or invalid Content-Length values are unrecoverable.
            if lengths > 1 or not length_value.isdigit():
                return 400, "invalid Content-Length"
            length = int(length_value)
        chunked = False
        if coding is not None:
            if length is not None:  # RFC 9112 §6.1: both are a smuggling attempt (§11.2)
                return 400, "both Content-Length and Transfer-Encoding"
            if codings > 1 or coding.strip().lower() != b"chunked":
                # RFC 9112 §6.1: a transfer coding the server does not understand: 501.
                return 501, "unsupported Transfer-Encoding (only chunked is accepted)"
            chunked = True
        nominated: frozenset[bytes] = frozenset()
        if connection is not None:
            tokens = {t.strip().lower() for v in connection for t in v.split(b",")}
            tokens -= _CONNECTION_OPTIONS
            tokens.discard(b"")
            if tokens:
                nominated = frozenset(tokens)
        # One host field, the authority routing used (filters see it as :authority): the
        # bytes as sent, which decode to ``authority`` (latin-1 maps byte for byte).
        if authority:
            kept.append((b"host", field))
        return Inbound(kept, authority, field, length, chunked, nominated, request_id, forwarded)


_ID_BATCH = 256  # request ids per draw of random bytes
_ids: list[bytes] = []
os.register_at_fork(after_in_child=_ids.clear)  # a child never repeats its parent's ids


def new_request_id() -> bytes:
    """A fresh request id: 32 hex digits, 128 bits from ``os.urandom``. The bytes are drawn
    for ``_ID_BATCH`` ids at a time (one system call per batch, not per request), as
    Envoy's random generator buffers its own for its request-id UUIDs."""
    if not _ids:
        digits = os.urandom(16 * _ID_BATCH).hex().encode()
        _ids.extend(digits[i : i + 32] for i in range(0, len(digits), 32))
    return _ids.pop()


def absolute_form(target: str) -> tuple[str, str] | None:
    """``(authority, origin-form path)`` of an absolute-form request target
    (``http://host:port/path?q``, RFC 9112 §3.2.2), None for any other form."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    authority, slash, path = rest.partition("/")
    return authority, slash + path if slash else "/"


def drop_names(headers: Headers, names: frozenset[bytes]) -> Headers:
    """``headers`` without ``names`` (a route's own removals, Connection-nominated ones)."""
    return [(n, v) for n, v in headers if n not in names]
