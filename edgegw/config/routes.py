"""The ``routes:`` section of gateway.yaml (part of ``edgegw.config``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edgegw.config.front import read_cors, read_header_rules, read_rewrite
from edgegw.config.yamlnodes import (
    Node,
    Reader,
    as_bool,
    as_duration,
    as_size,
    as_str,
    did_you_mean,
    plain,
)
from edgegw.model import (
    Aggregate,
    AggregateTarget,
    Backend,
    FilterSpec,
    Match,
    Route,
    Split,
    frozen_map,
)

ROUTE_KEYS = (
    "name",
    "match",
    "filters",
    "backend",
    "split",
    "aggregate",
    "strip_prefix",
    "request_headers_to_remove",
    "cors",
    "headers",
    "rewrite",
    "websocket",
)
TARGET_KEYS = (
    "backend",
    "path",
    "group",
    "required",
    "timeout",
    "default",
    "target",
    "allow",
    "deny",
    "mapping",
    "method",
)
_PARAM = re.compile(r"\{([^{}]*)\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # a header name: RFC 9110 §5.6.2
# The methods a route may name: RFC 9110 §9 plus PATCH (RFC 5789). Method names are
# extensible tokens (RFC 9110 §9.1), but no backend behind this gateway is expected to speak
# one, so anything else is far likelier a typo (`GETT`) than intent: it is an error.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def read_routes(
    r: Reader,
    node: Node | None,
    backends: Mapping[str, Backend],
    filters: Mapping[str, FilterSpec],
) -> tuple[Route, ...]:
    routes: list[Route] = []
    seen: set[str] = set()
    items = (r.sequence(node) or []) if node is not None else []
    for index, item in enumerate(items):
        route = _read_route(r, item, index, backends, filters)
        if route is None:
            continue
        if route.name in seen:
            r.problem(item, f"duplicate route name '{route.name}'", item.key_path("name"))
        seen.add(route.name)
        routes.append(route)
    return tuple(routes)


def _backend_ref(r: Reader, node: Node, backends: Mapping[str, Backend]) -> str:
    name = r.convert(node, as_str, "")
    if name and name not in backends:
        r.problem(node, f"unknown backend '{name}'{did_you_mean(name, backends)}")
    return name


def _read_route(
    r: Reader,
    node: Node,
    index: int,
    backends: Mapping[str, Backend],
    filters: Mapping[str, FilterSpec],
) -> Route | None:
    m = r.mapping(node, ROUTE_KEYS, required=("match",))
    if m is None:
        return None
    name = r.convert(m.get("name"), as_str, f"route{index}")
    match, params = _read_match(r, m["match"]) if "match" in m else (Match(prefix="/"), set())
    chain: list[str] = []
    for item in (r.sequence(m["filters"]) or []) if "filters" in m else []:
        fname = r.convert(item, as_str, "")
        if fname and fname not in filters:
            r.problem(item, f"unknown filter '{fname}'{did_you_mean(fname, filters)}")
        elif fname and filters[fname].background:
            r.problem(item, f"filter '{fname}' is a background plugin and cannot run on a route")
        chain.append(fname)
    targets = [k for k in ("backend", "split", "aggregate") if k in m]
    if len(targets) != 1:
        found = ", ".join(targets) or "none"
        r.problem(node, f"a route needs exactly one of backend, split, aggregate (found: {found})")
    split = _read_split(r, m["split"], backends) if "split" in m else None
    aggregate = _read_aggregate(r, m["aggregate"], backends, params) if "aggregate" in m else None
    strip = r.convert(m.get("strip_prefix"), as_bool, False)
    if strip and match.prefix is None:
        r.problem(m["strip_prefix"], "strip_prefix needs match.prefix")
    rewrite = read_rewrite(r, m["rewrite"]) if "rewrite" in m else None
    if "rewrite" in m and (strip or aggregate is not None):  # one rule for the upstream path
        other = "strip_prefix" if strip else "aggregate (its targets have their own paths)"
        r.problem(m["rewrite"], f"rewrite cannot be combined with {other}")
    websocket = r.convert(m.get("websocket"), as_bool, False)
    if websocket and "backend" not in m:  # a WebSocket is one connection to one backend
        r.problem(m["websocket"], "websocket needs a single backend (not split or aggregate)")
    return Route(
        name=name,
        match=match,
        filters=tuple(chain),
        backend=_backend_ref(r, m["backend"], backends) if "backend" in m else None,
        split=split,
        aggregate=aggregate,
        strip_prefix=strip,
        request_headers_to_remove=read_header_names(r, m.get("request_headers_to_remove")),
        cors=read_cors(r, m["cors"]) if "cors" in m else None,
        headers=read_header_rules(r, m["headers"]) if "headers" in m else None,
        rewrite=rewrite,
        websocket=websocket,
    )


# Routing and the backend's framing depend on these: they cannot be removed by name.
_UNREMOVABLE = frozenset({"host", "content-length", "transfer-encoding"})


def read_header_names(r: Reader, node: Node | None) -> tuple[str, ...]:
    """A list of header names (``request_headers_to_remove``), lower-cased."""
    names: list[str] = []
    for item in (r.sequence(node) or []) if node is not None else []:
        name = r.convert(item, as_str, "").lower()
        if not _TOKEN.match(name):
            r.problem(item, f"invalid header name {item.value!r}")
        elif name in _UNREMOVABLE:
            r.problem(item, f"header '{name}' cannot be removed (routing and framing need it)")
        else:
            names.append(name)
    return tuple(names)


def _read_match(r: Reader, node: Node) -> tuple[Match, set[str]]:
    m = r.mapping(node, ("prefix", "path", "methods", "host"))
    if m is None:
        return Match(prefix="/"), set()
    if ("prefix" in m) == ("path" in m):
        r.problem(node, "match needs exactly one of prefix, path")
    prefix = r.convert(m.get("prefix"), _abs_path, None) if "prefix" in m else None
    path = r.convert(m.get("path"), _abs_path, None) if "path" in m else None
    params: set[str] = set()
    if path is not None:
        for raw in _PARAM.findall(path):
            if not _IDENT.match(raw):
                r.problem(m["path"], f"invalid path parameter '{{{raw}}}'")
            elif raw in params:
                r.problem(m["path"], f"duplicate path parameter '{{{raw}}}'")
            params.add(raw)
    methods: list[str] = []
    for item in (r.sequence(m["methods"]) or []) if "methods" in m else []:
        method = r.convert(item, _method, "")
        if method and method not in methods:
            methods.append(method)
    host = r.convert(m.get("host"), as_str, "").lower() or None
    return Match(prefix=prefix, path=path, methods=tuple(methods), host=host), params


def _method(value: Any) -> str:
    """A known method name; lower case is accepted and means the upper-case one."""
    method = as_str(value).upper()
    if method not in METHODS:
        hint = did_you_mean(method, METHODS) or f" (expected one of {', '.join(METHODS)})"
        raise ValueError(f"unknown method {value!r}{hint}")
    return method


def _abs_path(value: Any) -> str:
    text = as_str(value)
    if not text.startswith("/"):
        raise ValueError(f"must start with '/', got {text!r}")
    return text


def _read_split(r: Reader, node: Node, backends: Mapping[str, Backend]) -> Split | None:
    m = r.mapping(node, ("header", "backends", "default"), ("header", "backends", "default"))
    if m is None:
        return None
    variants: dict[str, str] = {}
    for variant, ref in ((r.mapping(m["backends"]) or {}) if "backends" in m else {}).items():
        variants[variant] = _backend_ref(r, ref, backends)
    return Split(
        header=r.convert(m.get("header"), as_str, "x-edgegw-variant").lower(),
        backends=frozen_map(variants),
        default=_backend_ref(r, m["default"], backends) if "default" in m else "",
    )


def _read_aggregate(
    r: Reader, node: Node, backends: Mapping[str, Backend], params: set[str]
) -> Aggregate | None:
    keys = ("backends", "timeout", "meta", "forward_headers", "max_body")
    m = r.mapping(node, keys, required=("backends",))
    if m is None:
        return None
    targets: list[AggregateTarget] = []
    for item in (r.sequence(m["backends"]) or []) if "backends" in m else []:
        target = _read_target(r, item, backends, params)
        if target is not None:
            targets.append(target)
    if "backends" in m and not targets:
        r.problem(m["backends"], "an aggregate needs at least one backend")
    headers = [
        r.convert(h, as_str, "").lower()
        for h in ((r.sequence(m["forward_headers"]) or []) if "forward_headers" in m else [])
    ]
    return Aggregate(
        backends=tuple(targets),
        timeout=r.convert(m.get("timeout"), as_duration, 5.0),
        meta=r.convert(m.get("meta"), as_bool, False),
        forward_headers=tuple(headers),
        max_body=r.convert(m.get("max_body"), as_size, 10 * 1024 * 1024),
    )


def _read_target(
    r: Reader, node: Node, backends: Mapping[str, Backend], params: set[str]
) -> AggregateTarget | None:
    m = r.mapping(node, TARGET_KEYS, required=("backend", "path"))
    if m is None or "backend" not in m:
        return None
    path = r.convert(m.get("path"), _abs_path, "/")
    for raw in _PARAM.findall(path):
        source, _, _ = raw.partition(".")
        if source in ("query", "header") and "." in raw:
            continue
        if raw not in params:
            hint = did_you_mean(raw, params)
            r.problem(m["path"], f"unknown template parameter '{{{raw}}}'{hint}")
    mapping: dict[str, str] = {}
    for key, value in ((r.mapping(m["mapping"]) or {}) if "mapping" in m else {}).items():
        mapping[key] = r.convert(value, as_str, key)
    return AggregateTarget(
        backend=_backend_ref(r, m["backend"], backends),
        path=path,
        group=r.convert(m.get("group"), as_str, "") or None,
        required=r.convert(m.get("required"), as_bool, True),
        timeout=r.convert(m.get("timeout"), as_duration, 0.0) or None,
        default=plain(m["default"]) if "default" in m else None,
        target=r.convert(m.get("target"), as_str, "") or None,
        allow=_strings(r, m.get("allow")),
        deny=_strings(r, m.get("deny")),
        mapping=frozen_map(mapping),
        method=r.convert(m.get("method"), _method, "GET"),
    )


def _strings(r: Reader, node: Node | None) -> tuple[str, ...]:
    if node is None:
        return ()
    return tuple(r.convert(item, as_str, "") for item in (r.sequence(node) or []))
