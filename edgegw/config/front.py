"""The front-door keys of gateway.yaml (part of ``edgegw.config``): ``headers`` and
``security_headers`` at the top level; ``cors``, ``headers`` and ``rewrite`` on a route.
Every problem names its YAML path and line; regular expressions and templates are
compiled here, once."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from edgegw.config.yamlnodes import Node, Reader, as_bool, as_duration, as_str, did_you_mean
from edgegw.front import template
from edgegw.front.model import (
    TLS_ONLY,
    CorsPolicy,
    HeaderEdits,
    HeaderRules,
    Rewrite,
    SecurityHeaders,
)
from edgegw.headers import HOP_BY_HOP

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2
_HOP = frozenset(n.decode() for n in HOP_BY_HOP)
# Beyond the hop-by-hop ones: the framing (RFC 9112 §6) and Host are the gateway's own
# (``preserve_host`` forwards the client's Host).
_NOT_EDITABLE = {
    "request": _HOP | {"host", "content-length"},
    "response": _HOP | {"content-length"},
}
CORS_KEYS = (
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "allow_credentials",
    "max_age",
)
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
# OWASP HTTP Headers Cheat Sheet recommendations; HSTS only over TLS (RFC 6797 §7.2).
SECURITY_DEFAULTS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
    "strict-transport-security": "max-age=63072000",
}
SECURITY_NAMES = (
    *SECURITY_DEFAULTS,
    "content-security-policy",
    "content-security-policy-report-only",
    "permissions-policy",
    "cross-origin-opener-policy",
    "cross-origin-embedder-policy",
    "cross-origin-resource-policy",
    "x-permitted-cross-domain-policies",
)


def read_cors(r: Reader, node: Node) -> CorsPolicy | None:
    m = r.mapping(node, CORS_KEYS, required=("allow_origins",))
    if m is None:
        return None
    credentials = r.convert(m.get("allow_credentials"), as_bool, False)
    exact: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    wildcard = False
    for item in _items(r, m.get("allow_origins")):
        text = r.convert(item, as_str, "")
        if text == "*":
            wildcard = True
            if credentials:  # Fetch, "HTTP responses": "*" never works with credentials
                r.problem(item, "'*' cannot be used with allow_credentials: true "
                          "(list the origins, or a regex: entry)")  # fmt: skip
        elif text.startswith("regex:"):
            try:
                patterns.append(re.compile(text[6:]))
            except re.error as exc:
                r.problem(item, f"invalid regular expression {text[6:]!r}: {exc}")
        elif text:
            try:
                exact.add(_origin(text))
            except ValueError as exc:
                r.problem(item, str(exc))
    if "allow_origins" in m and not (exact or patterns or wildcard):
        r.problem(m["allow_origins"], "allow_origins needs at least one origin")
    methods = _list(r, m.get("allow_methods"), _method, credentials)
    max_age = r.convert(m.get("max_age"), as_duration, 0.0)
    return CorsPolicy(
        origins=frozenset(exact),
        origin_patterns=tuple(patterns),
        any_origin=wildcard,
        allow_methods=methods,
        allow_headers=_list(r, m.get("allow_headers"), _header_name, credentials),
        expose_headers=_list(r, m.get("expose_headers"), _header_name, credentials),
        allow_credentials=credentials,
        max_age=int(max_age) if "max_age" in m else None,
    )


def _origin(text: str) -> str:
    """An exact origin as browsers serialize it: ``scheme://host[:port]``, lower-case."""
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.netloc or url.path or url.query:
        hint = " (no path, not even a trailing '/')" if url.path else ""
        raise ValueError(f"invalid origin {text!r}: expected scheme://host[:port]{hint}")
    return text.lower()


def _items(r: Reader, node: Node | None) -> list[Node]:
    return (r.sequence(node) or []) if node is not None else []


def _list(r: Reader, node: Node | None, parse: Any, credentials: bool) -> tuple[str, ...]:
    out: list[str] = []
    for item in _items(r, node):
        value = r.convert(item, as_str, "")
        if value == "*" and credentials:
            # Fetch, "HTTP responses": with credentials "*" is a literal name, matching nothing.
            r.problem(item, "'*' means nothing with allow_credentials: true; list the names")
        elif value == "*":
            out.append(value)
        elif value:
            out.append(r.convert(item, parse, ""))
    return tuple(v for v in out if v)


def _method(value: Any) -> str:
    method = as_str(value).upper()
    if method not in _METHODS:
        raise ValueError(f"unknown method {value!r}{did_you_mean(method, _METHODS)}")
    return method


def _header_name(value: Any) -> str:
    name = as_str(value).lower()
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {value!r}")
    return name


def read_header_rules(r: Reader, node: Node) -> HeaderRules | None:
    m = r.mapping(node, ("request", "response"))
    if m is None:
        return None
    return HeaderRules(
        request=_edits(r, m.get("request"), "request"),
        response=_edits(r, m.get("response"), "response"),
    )


def _edits(r: Reader, node: Node | None, direction: str) -> HeaderEdits:
    if node is None or (m := r.mapping(node, ("set", "add", "remove"))) is None:
        return HeaderEdits()
    forbidden = _NOT_EDITABLE[direction]

    def name_of(item: Node, key: str) -> str:
        name = key.lower()
        if not _TOKEN.match(name):
            r.problem(item, f"invalid header name {key!r}")
            return ""
        if name in forbidden:
            why = "hop-by-hop (RFC 9110 §7.6.1)" if name in _HOP else "set by the gateway"
            r.problem(item, f"header '{name}' cannot be edited: it is {why}")
            return ""
        return name

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        out = []
        if key in m and m[key].value is not None:
            for hname, value in (r.mapping(m[key]) or {}).items():
                name, text = name_of(value, hname), r.convert(value, _value, "")
                try:
                    template.parse(text)
                except ValueError as exc:
                    r.problem(value, str(exc))
                    continue
                if name:
                    out.append((name, text))
        return tuple(out)

    removed = []
    for item in _items(r, m.get("remove")):
        name = name_of(item, r.convert(item, as_str, ""))
        if name:
            removed.append(name)
    return HeaderEdits(set=pairs("set"), add=pairs("add"), remove=tuple(removed))


def _value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a string (quote values such as 'on', 'true' or 'off')")
    text = str(value)
    if any(c in text for c in "\0\r\n"):
        raise ValueError("a header value cannot hold NUL, CR or LF (RFC 9110 §5.5)")
    return text


def read_rewrite(r: Reader, node: Node) -> Rewrite | None:
    m = r.mapping(node, ("path_regex", "to"), required=("path_regex", "to"))
    if m is None or "path_regex" not in m or "to" not in m:
        return None
    source = r.convert(m["path_regex"], as_str, "")
    try:
        pattern = re.compile(source)
    except re.error as exc:
        r.problem(m["path_regex"], f"invalid regular expression {source!r}: {exc}")
        return None
    to = r.convert(m["to"], as_str, "")
    try:  # parses the replacement: a \2 beyond the groups, a bad escape
        pattern.sub(to, "")
    except (re.error, IndexError) as exc:
        r.problem(m["to"], f"invalid replacement {to!r}: {exc}")
        return None
    if not to.startswith("/"):
        r.problem(m["to"], f"must start with '/', got {to!r}")
    return Rewrite(pattern=pattern, to=to)


def read_security_headers(r: Reader, node: Node | None) -> SecurityHeaders | None:
    """``off`` (YAML reads it as false), ``default``, or a mapping of header names over
    the defaults, where ``off``/false/null drops one."""
    if node is None or node.value is False or node.value == "off":
        return None
    values = dict(SECURITY_DEFAULTS)
    tls_only = set(TLS_ONLY)
    if node.value is True or node.value == "default":
        pass
    elif isinstance(node.value, dict):
        for key, child in node.value.items():
            name = key.lower()
            if name not in SECURITY_NAMES:
                hint = did_you_mean(name, SECURITY_NAMES)
                r.problem(child, f"unknown security header '{key}'{hint}")
            elif child.value is None or child.value is False or child.value == "off":
                values.pop(name, None)
            else:
                values[name] = r.convert(child, _value, "")
                tls_only.discard(name)  # set on purpose: sent even without TLS here
    else:
        r.problem(node, f"expected off, default or a mapping of headers, got {node.value!r}")
        return None
    return SecurityHeaders(values=tuple(values.items()), tls_only=frozenset(tls_only))
