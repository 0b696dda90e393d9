"""The validated, immutable form of gateway.yaml (version 1).

``edgegw.config`` builds these from YAML; everything else only reads them. Durations are
float seconds, sizes are int bytes. Mappings are read-only views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

ServerKind = Literal["granian", "hypercorn"]
OnErrorPolicy = Literal["fail_closed", "fail_open", "reload"]
StoreOnError = Literal["fail_open", "fail_closed", "local"]


def frozen_map(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only mapping for use inside frozen config objects."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AdminConfig:
    listen: Address | None  # None: no admin listener
    token: str | None = None  # required as Bearer for mutating admin calls when set


@dataclass(frozen=True)
class StoreConfig:
    url: str = "memory://"
    prefix: str = "edgegw"
    on_error: StoreOnError = "fail_open"
    timeout: float = 0.25  # per store operation
    flags: Mapping[str, Any] = field(default_factory=frozen_map)  # seeds the flag table


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # scheme://host:port[/base-path]
    timeout: float = 30.0  # whole response (headers) deadline
    connect_timeout: float = 5.0
    max_connections: int = 256
    # True: send the client's Host header upstream; False (default): the backend's host.
    preserve_host: bool = False


@dataclass(frozen=True)
class Limits:
    memory: int = 64 * 1024 * 1024  # bytes of linear memory per VM
    cpu: float = 0.05  # seconds per callback (epoch deadline)


@dataclass(frozen=True)
class FilterSpec:
    name: str
    wasm: Path  # resolved relative to the config file
    config: bytes = b""  # plugin configuration (JSON bytes, or the raw string given)
    vm_config: bytes = b""
    on_error: OnErrorPolicy = "fail_closed"
    limits: Limits = field(default_factory=Limits)
    root_id: str = ""  # proxy-wasm root id; defaults to the filter name
    background: bool = False  # root-only plugin: never gets HTTP stream contexts


@dataclass(frozen=True)
class Match:
    prefix: str | None = None
    path: str | None = None  # template such as /api/profile/{user_id}
    methods: tuple[str, ...] = ()  # upper-case; empty = any
    host: str | None = None  # exact host or *.suffix, matched without port


@dataclass(frozen=True)
class Split:
    header: str  # lower-case request header carrying the variant
    backends: Mapping[str, str]  # variant -> backend name
    default: str  # backend name


@dataclass(frozen=True)
class AggregateTarget:
    backend: str
    path: str  # template: {param}, {query.x}, {header.x-user-id}
    group: str | None = None
    required: bool = True
    timeout: float | None = None  # None: the route's deadline
    default: Any = None  # used when a non-required backend fails
    target: str | None = None  # dot path extracted before merging
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    mapping: Mapping[str, str] = field(default_factory=frozen_map)
    method: str = "GET"


@dataclass(frozen=True)
class Aggregate:
    backends: tuple[AggregateTarget, ...]
    timeout: float = 5.0  # overall deadline
    meta: bool = False
    forward_headers: tuple[str, ...] = ()  # client headers sent to every backend
    max_body: int = 10 * 1024 * 1024  # per backend response


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    filters: tuple[str, ...] = ()
    backend: str | None = None
    split: Split | None = None
    aggregate: Aggregate | None = None
    strip_prefix: bool = False  # remove match.prefix before proxying


@dataclass(frozen=True)
class GeoIPConfig:
    database: Path


@dataclass(frozen=True)
class ServerLimits:
    max_request_body: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True)
class SharedDataConfig:
    """Bounds of the proxy-wasm shared data table of all workers (edgegw/wasm/_shm.c)."""

    max_bytes: int = 64 * 1024 * 1024  # entries: key + value + 24 bytes each
    max_keys: int = 100_000


@dataclass(frozen=True)
class GatewayConfig:
    version: int
    listen: Address
    server: ServerKind = "granian"
    workers: int = 1
    admin: AdminConfig = field(default_factory=lambda: AdminConfig(listen=None))
    store: StoreConfig = field(default_factory=StoreConfig)
    backends: Mapping[str, Backend] = field(default_factory=frozen_map)
    filters: Mapping[str, FilterSpec] = field(default_factory=frozen_map)
    routes: tuple[Route, ...] = ()
    limits: ServerLimits = field(default_factory=ServerLimits)
    shared_data: SharedDataConfig = field(default_factory=SharedDataConfig)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-* are believed
    background: tuple[str, ...] = ()  # names of filters loaded as root-only plugins
    geoip: GeoIPConfig | None = None
    access_log: bool = True
    sched_batch: bool = True  # Linux: the workers run under SCHED_BATCH (server.py)
    source: Path | None = None  # the file this was read from
