"""gateway.yaml (version 1) → a validated, immutable ``GatewayConfig``.

Every problem is collected (``yamlnodes.Reader``) and raised together as one
``ConfigError``; each names its YAML path and line. The contract is docs/design.md section 3;
docs/configuration.md is the user reference.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from edgegw.config.access_log import read_access_log
from edgegw.config.backends import read_backends
from edgegw.config.front import read_header_rules, read_security_headers
from edgegw.config.listener import read_listener_tls
from edgegw.config.routes import read_header_names, read_routes
from edgegw.config.tracing import read_tracing
from edgegw.config.yamlnodes import (
    Node,
    Reader,
    as_bool,
    as_duration,
    as_int,
    as_percent,
    as_size,
    as_str,
    did_you_mean,
    one_of,
    parse_tree,
    plain,
)
from edgegw.errors import ConfigError
from edgegw.model import (
    Address,
    AdminConfig,
    EscapedSlashes,
    FilterSpec,
    GatewayConfig,
    GeoIPConfig,
    Limits,
    OnErrorPolicy,
    OnTrapPolicy,
    PathsConfig,
    ServerKind,
    ServerLimits,
    SharedDataConfig,
    StoreConfig,
    StoreLease,
    StoreOnError,
    UnderscoreAction,
    frozen_map,
)
from edgegw.observe.loglevels import LEVELS
from edgegw.store.base import validate_flag

TOP_KEYS = (
    "version",
    "listen",
    "server",
    "workers",
    "admin",
    "store",
    "backends",
    "filters",
    "routes",
    "limits",
    "paths",
    "shared_data",
    "trusted_proxies",
    "background",
    "geoip",
    "tracing",
    "access_log",
    "sched_batch",
    "drain_timeout",
    "request_headers_to_remove",
    "headers_with_underscores_action",
    "headers",
    "security_headers",
    "tls",
    "http2",
)
_SERVERS = one_of("granian", "hypercorn")
_STORE_ON_ERROR = one_of("fail_open", "fail_closed", "local")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate ``path``. Raises ConfigError (all problems) or OSError."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_config(text, source=path, env=env)


def parse_config(
    text: str, source: Path | None = None, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate YAML text; relative ``wasm`` paths resolve against ``source``'s folder."""
    root, problems = parse_tree(text, env)
    reader = Reader()
    reader.problems.extend(problems)
    config = None
    if not problems or root.value is not None:
        base = source.resolve().parent if source is not None else Path.cwd()
        config = _read_gateway(reader, root, base, source)
    if reader.problems or config is None:
        raise ConfigError(
            sorted(reader.problems, key=lambda p: (p.line or 0, p.path)),
            str(source) if source else "",
        )
    return config


def _read_gateway(r: Reader, root: Node, base: Path, source: Path | None) -> GatewayConfig | None:
    top = r.mapping(root, TOP_KEYS, required=("version",))
    if top is None:
        return None
    # `admin:` or `routes:` with nothing after them mean "none", as if absent.
    top = {k: v for k, v in top.items() if v.value is not None or k == "version"}
    version = r.convert(top.get("version"), as_int, 1)
    if "version" in top and version != 1:
        r.problem(top["version"], f"unsupported version {version} (this edgegw reads version 1)")
    backends = read_backends(r, top.get("backends"), base)
    filters = _read_filters(r, top.get("filters"), base)
    background = _read_names(r, top.get("background"), filters, "filter")
    for name in background:
        if name in filters:
            filters[name] = dataclasses.replace(filters[name], background=True)
    routes = read_routes(r, top.get("routes"), backends, filters)
    admin = _read_admin(r, top.get("admin"))
    listen = r.convert(top.get("listen"), parse_address, Address("127.0.0.1", 8080))
    if admin.listen is not None and admin.listen == listen:
        r.problem(top["admin"], f"admin listens on the same address as the gateway ({listen})")
    geoip = None
    if "geoip" in top and (g := r.mapping(top["geoip"], ("database",), ("database",))):
        database = r.convert(g.get("database"), as_str, "")
        geoip = GeoIPConfig(database=(base / database) if database else Path())
        if database and not geoip.database.is_file():
            r.problem(g["database"], f"GeoIP database not found: {geoip.database}")
    return GatewayConfig(
        version=1,
        listen=listen,
        server=cast(
            ServerKind, r.convert(top.get("server"), one_of("granian", "hypercorn"), "granian")
        ),
        workers=r.convert(top.get("workers"), lambda v: as_int(v, 1), 1),
        admin=admin,
        store=_read_store(r, top.get("store")),
        backends=frozen_map(backends),
        filters=frozen_map(filters),
        routes=routes,
        limits=_read_limits(r, top.get("limits")),
        paths=_read_paths(r, top.get("paths")),
        shared_data=_read_shared_data(r, top.get("shared_data")),
        trusted_proxies=tuple(r.convert(n, _cidr, "") for n in _seq(r, top.get("trusted_proxies"))),
        background=background,
        geoip=geoip,
        tracing=read_tracing(r, top.get("tracing")),
        access_log=read_access_log(r, top.get("access_log")),
        sched_batch=r.convert(top.get("sched_batch"), as_bool, True),
        drain_timeout=r.convert(top.get("drain_timeout"), as_duration, 30.0),
        request_headers_to_remove=read_header_names(r, top.get("request_headers_to_remove")),
        headers_with_underscores_action=cast(
            UnderscoreAction,
            r.convert(
                top.get("headers_with_underscores_action"),
                one_of("allow", "drop_header", "reject_request"),
                "drop_header",
            ),
        ),
        headers=read_header_rules(r, top["headers"]) if "headers" in top else None,
        security_headers=read_security_headers(r, top.get("security_headers")),
        tls=read_listener_tls(r, top.get("tls"), base),
        http2=r.convert(top.get("http2"), as_bool, False),
        source=source,
    )


def _seq(r: Reader, node: Node | None) -> list[Node]:
    return (r.sequence(node) or []) if node is not None else []


def _read_names(
    r: Reader, node: Node | None, known: Mapping[str, Any], what: str
) -> tuple[str, ...]:
    names = []
    for item in _seq(r, node):
        name = r.convert(item, as_str, "")
        if name and name not in known:
            r.problem(item, f"unknown {what} '{name}'{did_you_mean(name, known)}")
        names.append(name)
    return tuple(names)


def parse_address(value: Any) -> Address:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces)."""
    text = str(value) if isinstance(value, (str, int)) else ""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {value!r} (expected host:port)")
    host = host.strip("[]") or "0.0.0.0"
    return Address(host, int(port))


def _cidr(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(as_str(value), strict=False))
    except ValueError as exc:
        raise ValueError(f"invalid CIDR {value!r}: {exc}") from None


def _read_admin(r: Reader, node: Node | None) -> AdminConfig:
    if node is None or (m := r.mapping(node, ("listen", "token", "allow_open"))) is None:
        return AdminConfig(listen=None)
    listen = r.convert(m.get("listen"), parse_address, None) if "listen" in m else None
    token = r.convert(m.get("token"), as_str, "") or None
    allow_open = r.convert(m.get("allow_open"), as_bool, False)
    return AdminConfig(listen=listen, token=token, allow_open=allow_open)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs; wildcards and other names are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_admin_refusal(admin: AdminConfig) -> str | None:
    """Why ``edgegw serve`` refuses this admin listener, or None.

    The admin API reloads the config and edits flags; reachable from other hosts without
    a token, anyone there could. ``allow_open: true`` accepts that on purpose (a private
    network that is itself the protection); serve then logs a warning at every start.
    """
    if admin.listen is None or admin.token or admin.allow_open or is_loopback(admin.listen.host):
        return None
    return (
        f"admin.listen: {admin.listen} is not a loopback address and admin.token is not set: "
        "anyone who reaches it could reload the config and change flags. Set admin.token "
        '(e.g. token: "${EDGEGW_ADMIN_TOKEN}"), listen on 127.0.0.1, or set '
        "admin.allow_open: true to expose it without a token on purpose"
    )


def _read_store(r: Reader, node: Node | None) -> StoreConfig:
    keys = ("url", "prefix", "on_error", "timeout", "flags", "lease")
    if node is None or (m := r.mapping(node, keys)) is None:
        return StoreConfig()
    url = r.convert(m.get("url"), as_str, "memory://")
    scheme = urlsplit(url).scheme
    if scheme not in ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster",
                      "redis+sentinel"):  # fmt: skip
        r.problem(m["url"], f"unsupported store URL scheme '{scheme}' (memory:// or redis://)")
    flags: dict[str, Any] = {}
    if "flags" in m and (f := r.mapping(m["flags"])) is not None:
        for name, value in f.items():
            try:
                flags[name] = validate_flag(name, plain(value))
            except ValueError as exc:
                r.problem(value, f"invalid flag '{name}': {exc}")
    on_error = r.convert(m.get("on_error"), one_of("fail_open", "fail_closed", "local"), None)
    return StoreConfig(
        url=url,
        prefix=r.convert(m.get("prefix"), as_str, "edgegw"),
        on_error=cast(StoreOnError | None, on_error),
        timeout=r.convert(m.get("timeout"), as_duration, 0.25),
        flags=frozen_map(flags),
        lease=_read_lease(r, m["lease"], scheme) if "lease" in m else None,
    )


def _read_lease(r: Reader, node: Node, scheme: str) -> StoreLease | None:
    d = StoreLease()
    if (m := r.mapping(node, ("share", "ttl"))) is None:
        return None
    if scheme == "memory":  # one host's table decides already: nothing to lease from
        r.problem(node, "store.lease needs a shared store (redis://...), not memory://")
    share = r.convert(m.get("share"), as_percent, d.share)
    if share <= 0:
        r.problem(m["share"], "share must be above 0%")
    return StoreLease(share=share, ttl=r.convert(m.get("ttl"), as_duration, d.ttl))


def _read_filters(r: Reader, node: Node | None, base: Path) -> dict[str, FilterSpec]:
    out: dict[str, FilterSpec] = {}
    keys = ("wasm", "config", "vm_config", "on_error", "on_trap", "limits", "root_id", "log_level")
    for name, child in ((r.mapping(node) or {}) if node is not None else {}).items():
        if not _NAME.match(name):
            r.problem(child, f"invalid filter name '{name}'")
        m = r.mapping(child, keys, required=("wasm",))
        if m is None:
            continue
        wasm = base / r.convert(m.get("wasm"), as_str, "")
        if "wasm" in m and not wasm.is_file():
            r.problem(m["wasm"], f"wasm file not found: {wasm}")
        on_error = r.convert(
            m.get("on_error"), one_of("fail_closed", "fail_open", "reload"), "fail_closed"
        )
        on_trap = r.convert(m.get("on_trap"), one_of("reload", "fail", "keep"), "reload")
        if on_error == "reload" and on_trap != "reload":
            # on_error: reload (older configs) always replaced the VM.
            r.problem(m["on_trap"], f"on_trap: {on_trap} contradicts on_error: reload")
        out[name] = FilterSpec(
            name=name,
            wasm=wasm,
            config=_config_bytes(m.get("config")),
            vm_config=_config_bytes(m.get("vm_config")),
            on_error=cast(OnErrorPolicy, on_error),
            on_trap=cast(OnTrapPolicy, on_trap),
            limits=_read_filter_limits(r, m.get("limits")),
            root_id=r.convert(m.get("root_id"), as_str, ""),
            log_level=r.convert(m.get("log_level"), one_of(*LEVELS), ""),
        )
    return out


def _config_bytes(node: Node | None) -> bytes:
    # A string is handed over as is (Envoy's StringValue); anything else as JSON.
    if node is None or node.value is None:
        return b""
    if isinstance(node.value, str):
        return node.value.encode()
    return json.dumps(plain(node), separators=(",", ":")).encode()


def _read_filter_limits(r: Reader, node: Node | None) -> Limits:
    if node is None or (m := r.mapping(node, ("memory", "cpu"))) is None:
        return Limits()
    default = Limits()
    return Limits(
        memory=r.convert(m.get("memory"), as_size, default.memory),
        cpu=r.convert(m.get("cpu"), as_duration, default.cpu),
    )


_LIMIT_KEYS = (
    "max_request_body",
    "max_header_bytes",
    "max_connections",
    "header_timeout",
    "idle_timeout",
    "websocket_idle_timeout",
)


def _read_limits(r: Reader, node: Node | None) -> ServerLimits:
    if node is None or (m := r.mapping(node, _LIMIT_KEYS)) is None:
        return ServerLimits()
    default = ServerLimits()
    return ServerLimits(
        max_request_body=r.convert(m.get("max_request_body"), as_size, default.max_request_body),
        max_header_bytes=r.convert(m.get("max_header_bytes"), as_size, default.max_header_bytes),
        max_connections=r.convert(
            m.get("max_connections"), lambda v: as_int(v, 1), default.max_connections
        ),
        header_timeout=r.convert(m.get("header_timeout"), as_duration, default.header_timeout),
        idle_timeout=r.convert(m.get("idle_timeout"), as_duration, default.idle_timeout),
        websocket_idle_timeout=r.convert(
            m.get("websocket_idle_timeout"), as_duration, default.websocket_idle_timeout
        ),
    )


def _read_paths(r: Reader, node: Node | None) -> PathsConfig:
    if node is None or (m := r.mapping(node, ("escaped_slashes",))) is None:
        return PathsConfig()
    action = r.convert(
        m.get("escaped_slashes"), one_of("reject_request", "keep_escaped"), "reject_request"
    )
    return PathsConfig(escaped_slashes=cast(EscapedSlashes, action))


def _read_shared_data(r: Reader, node: Node | None) -> SharedDataConfig:
    if node is None or (m := r.mapping(node, ("max_bytes", "max_keys"))) is None:
        return SharedDataConfig()
    default = SharedDataConfig()
    max_bytes = r.convert(m.get("max_bytes"), as_size, default.max_bytes)
    if not 1024 <= max_bytes <= 1 << 40:
        r.problem(m["max_bytes"], "max_bytes must be between 1KiB and 1TiB")
    max_keys = r.convert(m.get("max_keys"), lambda v: as_int(v, 1), default.max_keys)
    if max_keys > 1 << 30:
        r.problem(m["max_keys"], "max_keys must be at most 2^30")
    return SharedDataConfig(max_bytes=max_bytes, max_keys=max_keys)


# Keys whose values are secrets wherever they appear in a filter's config. A bare "key"
# is not one (rate_limit's key: [ip]); "…_key", "apikey", "hmac…" are.
_SECRET_KEY = re.compile(
    r"secret|passw|pwd|token|private|credential|bearer|hmac|signing|cookie|session|salt"
    r"|api_?key|[-_]key$|^auth(orization)?$",
    re.IGNORECASE,
)
REDACTED = "***"


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The effective config as JSON-able data with secrets replaced by ``***``: the admin
    token, passwords in URLs (store, backends, filter configs), and filter-config values
    under secret-looking keys."""
    doc: dict[str, Any] = _jsonable(config)
    if config.admin.token:
        doc["admin"]["token"] = REDACTED
    doc["store"]["url"] = _redact_url(config.store.url)
    for name, backend in config.backends.items():
        doc["backends"][name]["url"] = _redact_url(backend.url)
    if config.tracing is not None:  # the collector's credentials (authorization, api keys)
        doc["tracing"]["headers"] = dict.fromkeys(config.tracing.headers, REDACTED)
    for name, spec in config.filters.items():
        for key in ("config", "vm_config"):
            raw = getattr(spec, key)
            try:
                value: Any = json.loads(raw) if raw else None
            except ValueError:
                value = raw.decode(errors="replace")
            doc["filters"][name][key] = _scrub(value)
    return doc


#: Top-level keys only a restart changes (docs/reload.md, "What a reload cannot change");
#: ``limits.max_header_bytes`` too.
RESTART_ONLY = ("listen", "server", "workers", "admin", "sched_batch", "tls", "http2")


def in_effect(started: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """The redacted config in effect: what the workers loaded last (``loaded``), with the
    keys a reload cannot change as the processes started with them (``started``)."""
    doc = {**loaded, **{key: started[key] for key in RESTART_ONLY}}
    doc["limits"] = {**loaded["limits"], "max_header_bytes": started["limits"]["max_header_bytes"]}
    return doc


def _redact_url(text: str) -> str:
    """``text`` with the password of a URL's userinfo replaced (RFC 3986 §3.2.1)."""
    if "@" not in text or "://" not in text:
        return text
    try:
        url = urlsplit(text)
        password = url.password
    except ValueError:
        return text
    if not password:
        return text
    user, _, host = url.netloc.rpartition("@")
    name = user.partition(":")[0]
    return url._replace(netloc=f"{name}:{REDACTED}@{host}").geturl()


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return _redact_url(value)
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, re.Pattern):  # cors regex: origins, rewrite.path_regex
        return value.pattern
    if isinstance(value, (Path, bytes)):
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return value
