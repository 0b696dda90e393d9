"""The ``backends:`` section of gateway.yaml (part of ``edgegw.config``).

docs/configuration.md is the reference and docs/upstream.md the semantics (and how each
option maps to Envoy and Kong).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from edgegw.config.yamlnodes import (
    Node,
    Reader,
    as_bool,
    as_duration,
    as_int,
    as_percent,
    as_str,
    did_you_mean,
)
from edgegw.model import (
    Backend,
    BackendLimits,
    Endpoint,
    HealthCheck,
    LbPolicy,
    Outlier,
    Retry,
    UpstreamTLS,
)

BACKEND_KEYS = (
    "url",
    "endpoints",
    "timeout",
    "connect_timeout",
    "max_connections",
    "preserve_host",
    "lb",
    "hash_on",
    "health_check",
    "outlier",
    "retry",
    "limits",
    "tls",
)
LB_POLICIES = ("round_robin", "least_request", "random", "hash")
RETRY_CONDITIONS = ("connect-failure", "reset", "timeout", "5xx")
MAX_WEIGHT = 1000  # keeps a weighted round-robin schedule short
MAX_ATTEMPTS = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")


def read_backends(r: Reader, node: Node | None, base: Path) -> dict[str, Backend]:
    out: dict[str, Backend] = {}
    for name, child in ((r.mapping(node) or {}) if node is not None else {}).items():
        if not _NAME.match(name):
            r.problem(child, f"invalid backend name '{name}'")
        if isinstance(child.value, str):  # shorthand: `users: http://127.0.0.1:9001`
            child = Node({"url": child}, child.line, child.path)
        backend = _read_backend(r, name, child, base)
        if backend is not None:
            out[name] = backend
    return out


def _read_backend(r: Reader, name: str, node: Node, base: Path) -> Backend | None:
    m = r.mapping(node, BACKEND_KEYS)
    if m is None:
        return None
    if "url" not in m and "endpoints" not in m:
        r.problem(node, "missing required key 'url'", node.key_path("url"))
    elif "url" in m and "endpoints" in m:
        r.problem(node, "a backend has url or endpoints, not both")
    endpoints: tuple[Endpoint, ...] = ()
    url = r.convert(m.get("url"), backend_url, "")
    if "endpoints" in m:
        endpoints = _read_endpoints(r, m["endpoints"])
        url = endpoints[0].url if endpoints else ""
    lb = cast(LbPolicy, r.convert(m.get("lb"), _choice(LB_POLICIES), "round_robin"))
    hash_on = r.convert(m.get("hash_on"), _hash_on, None) if "hash_on" in m else None
    if hash_on is not None and lb != "hash":
        r.problem(m["hash_on"], "hash_on needs lb: hash")
    if lb == "hash" and hash_on is None:
        hash_on = "ip"
    tls = _read_tls(r, m["tls"], base) if "tls" in m else None
    if tls is not None:
        plain = [e.url for e in endpoints or (Endpoint(url),) if e.url.startswith("http:")]
        if plain:
            r.problem(m["tls"], f"tls needs https:// endpoints (not {plain[0]})")
    return Backend(
        name=name,
        url=url,
        timeout=r.convert(m.get("timeout"), as_duration, 30.0),
        connect_timeout=r.convert(m.get("connect_timeout"), as_duration, 5.0),
        max_connections=r.convert(m.get("max_connections"), lambda v: as_int(v, 1), 256),
        preserve_host=r.convert(m.get("preserve_host"), as_bool, False),
        endpoints=endpoints if len(endpoints) > 1 else (),
        lb=lb,
        hash_on=hash_on,
        health_check=_read_health(r, m["health_check"]) if "health_check" in m else None,
        outlier=_read_outlier(r, m["outlier"]) if "outlier" in m else None,
        retry=_read_retry(r, m["retry"]) if "retry" in m else None,
        limits=_read_limits(r, m["limits"]) if "limits" in m else None,
        tls=tls,
    )


def backend_url(value: Any) -> str:
    url = urlsplit(as_str(value))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"invalid backend URL {value!r} (expected http://host:port)")
    if url.query or url.fragment:
        raise ValueError(f"backend URL {value!r} must not have a query or fragment")
    try:
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"invalid port in backend URL {value!r}") from None
    return url.geturl().rstrip("/")


def _read_endpoints(r: Reader, node: Node) -> tuple[Endpoint, ...]:
    out: list[Endpoint] = []
    for item in r.sequence(node) or []:
        if isinstance(item.value, str):
            item = Node({"url": item}, item.line, item.path)
        e = r.mapping(item, ("url", "weight"), required=("url",))
        if e is None or "url" not in e:
            continue
        weight = r.convert(e.get("weight"), _weight, 1)
        out.append(Endpoint(r.convert(e["url"], backend_url, ""), weight))
    if isinstance(node.value, list) and not out:
        r.problem(node, "endpoints needs at least one endpoint")
    urls = [e.url for e in out]
    for index, url in enumerate(urls):
        if url in urls[:index]:
            r.problem(node, f"duplicate endpoint {url}", node.key_path(index))
    if len({urlsplit(u).path for u in urls}) > 1:
        r.problem(node, "endpoints of one backend must share their base path")
    return tuple(out)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            hint = did_you_mean(str(value), choices) or f" (expected one of {', '.join(choices)})"
            raise ValueError(f"unknown value {value!r}{hint}")
        return str(value)

    return parse


def _weight(value: Any) -> int:
    weight = as_int(value, 1)
    if weight > MAX_WEIGHT:
        raise ValueError(f"weight must be at most {MAX_WEIGHT}, got {weight}")
    return weight


def _hash_on(value: Any) -> str:
    text = as_str(value)
    kind, sep, name = text.partition(":")
    if text == "ip" or (kind in ("header", "cookie") and sep and _TOKEN.match(name)):
        return f"{kind}:{name.lower()}" if kind == "header" else text
    raise ValueError(f"invalid hash_on {value!r} (expected header:<name>, cookie:<name> or ip)")


def _count(value: Any) -> int:
    return as_int(value, 1)


def _read_health(r: Reader, node: Node) -> HealthCheck | None:
    keys = ("path", "interval", "timeout", "healthy", "unhealthy", "expect")
    m = r.mapping(node, keys)
    if m is None:
        return None
    d = HealthCheck()
    path = r.convert(m.get("path"), as_str, d.path)
    if not path.startswith("/"):
        r.problem(m["path"], f"must start with '/', got {path!r}")
    expect = d.expect
    if "expect" in m:
        ranges = [r.convert(i, _status_range, (0, 0)) for i in r.sequence(m["expect"]) or []]
        expect = tuple(x for x in ranges if x != (0, 0)) or d.expect
    return HealthCheck(
        path=path,
        interval=r.convert(m.get("interval"), as_duration, d.interval),
        timeout=r.convert(m.get("timeout"), as_duration, d.timeout),
        healthy=r.convert(m.get("healthy"), _count, d.healthy),
        unhealthy=r.convert(m.get("unhealthy"), _count, d.unhealthy),
        expect=expect,
    )


def _status_range(value: Any) -> tuple[int, int]:
    """``200``, ``"204"`` or ``"200-399"`` → an inclusive range of status codes."""
    match = _RANGE.match(str(value)) if isinstance(value, (str, int)) else None
    if match is None or isinstance(value, bool):
        raise ValueError(f"invalid status or range {value!r} (examples: 200, 200-399)")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 100 <= low <= high <= 599:
        raise ValueError(f"invalid status range {value!r} (statuses are 100 to 599)")
    return low, high


def _read_outlier(r: Reader, node: Node) -> Outlier | None:
    keys = ("consecutive_errors", "interval", "base_ejection", "max_ejected")
    m = r.mapping(node, keys)
    if m is None:
        return None
    d = Outlier()
    return Outlier(
        consecutive_errors=r.convert(m.get("consecutive_errors"), _count, d.consecutive_errors),
        interval=r.convert(m.get("interval"), as_duration, d.interval),
        base_ejection=r.convert(m.get("base_ejection"), as_duration, d.base_ejection),
        max_ejected=r.convert(m.get("max_ejected"), as_percent, d.max_ejected),
    )


def _read_retry(r: Reader, node: Node) -> Retry | None:
    keys = ("attempts", "on", "per_try_timeout", "budget", "backoff", "min_retry_concurrency")
    if isinstance(node.value, dict) and "True" in node.value:
        # YAML 1.1 (PyYAML) reads a bare `on` key as the boolean true: take it as `on`.
        value, path = node.value["True"], node.key_path("on")
        items = value.value
        if isinstance(items, list):
            items = [Node(i.value, i.line, f"{path}[{k}]") for k, i in enumerate(items)]
        on_node = Node(items, value.line, path)
        node = Node({**node.value, "on": on_node}, node.line, node.path)
        del node.value["True"]
    m = r.mapping(node, keys)
    if m is None:
        return None
    d = Retry()
    attempts = r.convert(m.get("attempts"), _count, 2)
    if attempts > MAX_ATTEMPTS:
        r.problem(m["attempts"], f"attempts must be at most {MAX_ATTEMPTS}, got {attempts}")
    on, statuses = set(d.on), set[int]()
    if "on" in m:
        on = set()
        for item in r.sequence(m["on"]) or []:
            if isinstance(item.value, int) and not isinstance(item.value, bool):
                if 500 <= item.value <= 599:
                    statuses.add(item.value)
                else:
                    r.problem(item, f"a retried status must be 500 to 599, got {item.value}")
            else:
                on.add(r.convert(item, _choice(RETRY_CONDITIONS), "reset"))
    base, most = d.backoff_base, d.backoff_max
    if "backoff" in m and (b := r.mapping(m["backoff"], ("base", "max"))) is not None:
        base = r.convert(b.get("base"), as_duration, base)
        most = r.convert(b.get("max"), as_duration, max(most, base))
        if most < base:
            r.problem(m["backoff"], "backoff max must not be below base")
    per_try = r.convert(m.get("per_try_timeout"), as_duration, 0.0) or None
    return Retry(
        attempts=attempts,
        on=tuple(sorted(on)),
        statuses=tuple(sorted(statuses)),
        per_try_timeout=per_try,
        budget=r.convert(m.get("budget"), as_percent, d.budget),
        min_retry_concurrency=r.convert(
            m.get("min_retry_concurrency"), as_int, d.min_retry_concurrency
        ),
        backoff_base=base,
        backoff_max=most,
    )


def _read_limits(r: Reader, node: Node) -> BackendLimits | None:
    m = r.mapping(node, ("max_connections", "max_pending", "max_requests"))
    if m is None:
        return None
    return BackendLimits(
        max_connections=r.convert(m.get("max_connections"), _count, 0) or None,
        max_pending=r.convert(m["max_pending"], as_int, 0) if "max_pending" in m else None,
        max_requests=r.convert(m.get("max_requests"), _count, 0) or None,
    )


def _read_tls(r: Reader, node: Node, base: Path) -> UpstreamTLS | None:
    m = r.mapping(node, ("verify", "ca", "sni", "cert", "key"))
    if m is None:
        return None
    files: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        files[key] = None
        if key in m and (text := r.convert(m[key], as_str, "")):
            files[key] = base / text
            if not files[key].is_file():  # type: ignore[union-attr]
                r.problem(m[key], f"file not found: {files[key]}")
    if (files["cert"] is None) != (files["key"] is None):
        r.problem(node, "tls cert and key go together (a client certificate for mTLS)")
    verify = r.convert(m.get("verify"), as_bool, True)
    if not verify and files["ca"] is not None:
        r.problem(m["ca"], "ca is unused with verify: false")
    return UpstreamTLS(
        verify=verify,
        ca=files["ca"],
        sni=r.convert(m.get("sni"), as_str, "") or None,
        cert=files["cert"],
        key=files["key"],
    )
