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

from edgegw.front.model import CorsPolicy, HeaderRules, Rewrite, SecurityHeaders

ServerKind = Literal["granian", "hypercorn"]
OnErrorPolicy = Literal["fail_closed", "fail_open", "reload"]
OnTrapPolicy = Literal["reload", "fail", "keep"]
StoreOnError = Literal["fail_open", "fail_closed", "local"]
EscapedSlashes = Literal["reject_request", "keep_escaped"]
UnderscoreAction = Literal["allow", "drop_header", "reject_request"]
TlsVersion = Literal["1.2", "1.3"]


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
    # True: serve an admin listener on a non-loopback address without a token (see
    # config.open_admin_refusal); a deliberate, logged exception to the default.
    allow_open: bool = False


@dataclass(frozen=True)
class StoreLease:
    """Approximate global limits (docs/store.md, "Leased budgets"): each process charges
    ``share`` of a key's burst in one store call and spends it locally for ``ttl``."""

    share: float = 0.1  # of the burst, per lease
    ttl: float = 0.2  # seconds a lease may be spent; what is left then is dropped


@dataclass(frozen=True)
class StoreConfig:
    url: str = "memory://"
    prefix: str = "edgegw"
    # None: not set, the calling filter's on_store_error decides (docs/store.md)
    on_error: StoreOnError | None = None
    timeout: float = 0.25  # per store operation
    flags: Mapping[str, Any] = field(default_factory=frozen_map)  # seeds the flag table
    lease: StoreLease | None = None  # None: every decision is the store's (exact)


LbPolicy = Literal["round_robin", "least_request", "random", "hash"]


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host:port[/base-path], as ``Backend.url``
    weight: int = 1


@dataclass(frozen=True)
class HealthCheck:
    """Active checks: GET ``path`` on every endpoint address each ``interval``."""

    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 1.0
    healthy: int = 2  # consecutive passes that make an unhealthy endpoint healthy again
    unhealthy: int = 3  # consecutive failures that make a healthy endpoint unhealthy
    expect: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive status ranges


@dataclass(frozen=True)
class Outlier:
    """Passive ejection of an endpoint that keeps failing (Envoy's outlier detection)."""

    consecutive_errors: int = 5
    interval: float = 10.0  # an ejection multiplier decays by one per interval back in
    base_ejection: float = 30.0  # times the number of ejections so far
    max_ejected: float = 0.5  # share of the endpoints that may be ejected at once


@dataclass(frozen=True)
class Retry:
    attempts: int = 1  # tries in all; 1 = no retry
    on: tuple[str, ...] = ("connect-failure", "reset")  # RETRY_CONDITIONS (backends_config)
    statuses: tuple[int, ...] = ()  # response statuses retried (from ``on``)
    per_try_timeout: float | None = None  # None: the backend's timeout
    budget: float = 0.2  # retries in flight at most this share of active requests
    min_retry_concurrency: int = 3  # ... but always this many (Envoy's default)
    backoff_base: float = 0.025
    backoff_max: float = 0.25


@dataclass(frozen=True)
class BackendLimits:
    """Circuit breakers: beyond one, a request gets 503 at once (None: no limit)."""

    max_connections: int | None = None  # over all endpoints, per worker
    max_pending: int | None = None  # requests waiting for a connection
    max_requests: int | None = None  # requests in flight


@dataclass(frozen=True)
class UpstreamTLS:
    verify: bool = True
    ca: Path | None = None  # None: the system's CAs
    sni: str | None = None  # None: the endpoint URL's host
    cert: Path | None = None  # client certificate (mTLS), with ``key``
    key: Path | None = None


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # scheme://host:port[/base-path]; the first endpoint's when several
    timeout: float = 30.0  # whole response (headers) deadline
    connect_timeout: float = 5.0
    max_connections: int = 256
    # True: send the client's Host header upstream; False (default): the backend's host.
    preserve_host: bool = False
    endpoints: tuple[Endpoint, ...] = ()  # () = the one ``url``
    lb: LbPolicy = "round_robin"
    hash_on: str | None = None  # "header:<name>" | "cookie:<name>" | "ip"  (lb: hash)
    health_check: HealthCheck | None = None
    outlier: Outlier | None = None
    retry: Retry | None = None
    limits: BackendLimits | None = None
    tls: UpstreamTLS | None = None

    @property
    def balanced(self) -> bool:
        """False for a plain single-URL backend, which takes the direct path (one pool,
        no balancing state): nothing configured here costs it anything."""
        return bool(
            len(self.endpoints) > 1
            or self.health_check
            or self.outlier
            or self.retry
            or self.limits
            or self.lb == "hash"
        )


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
    on_error: OnErrorPolicy = "fail_closed"  # the request a filter failed in
    # The VM after a failure (trap, CPU deadline, hostcall failure): "reload" a fresh one,
    # "fail" it for good (Envoy), "keep" it with whatever state the failure left.
    on_trap: OnTrapPolicy = "reload"
    limits: Limits = field(default_factory=Limits)
    root_id: str = ""  # proxy-wasm root id; defaults to the filter name
    background: bool = False  # root-only plugin: never gets HTTP stream contexts
    log_level: str = ""  # its proxy_log threshold (edgegw/observe/loglevels.py); "" inherits


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
    websocket: bool = False  # Upgrade: websocket proxied after the request-header filters
    # Lower-case client request headers dropped before the filters run (with the global ones).
    request_headers_to_remove: tuple[str, ...] = ()
    cors: CorsPolicy | None = None  # edgegw/front (docs/configuration.md, "Front door")
    headers: HeaderRules | None = None
    rewrite: Rewrite | None = None


@dataclass(frozen=True)
class GeoIPConfig:
    database: Path


@dataclass(frozen=True)
class ServerLimits:
    max_request_body: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    # Client connections (docs/configuration.md says what each server makes of them).
    max_connections: int = 10_000  # per worker, open at once
    header_timeout: float = 10.0  # to receive a request head (granian: and between requests)
    idle_timeout: float = 60.0  # hypercorn: a connection with no request in progress
    websocket_idle_timeout: float = 300.0  # no message either way: the gateway closes both


@dataclass(frozen=True)
class PathsConfig:
    # What an encoded slash or backslash (%2F, %5C) in a request path gets (edgegw/paths.py):
    # "reject_request" (400) or "keep_escaped" (matched and forwarded still escaped).
    escaped_slashes: EscapedSlashes = "reject_request"


@dataclass(frozen=True)
class SharedDataConfig:
    """Bounds of the proxy-wasm shared data table of all workers (edgegw/wasm/native/shm.c)."""

    max_bytes: int = 64 * 1024 * 1024  # entries: key + value + 24 bytes each
    max_keys: int = 100_000


@dataclass(frozen=True)
class AccessLogConfig:
    """``access_log:`` (edgegw/observe/access_log.py writes it; docs/operations.md)."""

    enabled: bool = True
    path: str = "stdout"  # or a file, opened for appending and reopened on SIGUSR1
    format: str = "json"  # or "combined" (Apache/nginx)
    fields: tuple[str, ...] = ()  # json: the keys of a line, in order; () = the default set
    sample_2xx: float = 1.0  # the share of 2xx responses logged


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry tracing (edgegw/tracing/, docs/operations.md "Tracing")."""

    otlp_endpoint: str  # OTLP/HTTP traces URL (…/v1/traces)
    sample_ratio: float = 1.0  # head sampling of new traces; errors are always exported
    service_name: str = "edgegw"
    headers: Mapping[str, str] = field(default_factory=frozen_map)  # sent with each export
    trust_incoming: bool = True  # continue a client's traceparent/tracestate


@dataclass(frozen=True)
class ListenerTLS:
    """TLS on the data-plane listener (docs/configuration.md, "Listener: tls, http2")."""

    cert: Path  # PEM chain, leaf first
    key: Path
    min_version: TlsVersion = "1.2"


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
    paths: PathsConfig = field(default_factory=PathsConfig)
    shared_data: SharedDataConfig = field(default_factory=SharedDataConfig)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-* are believed
    # Lower-case client request headers dropped on every route before the filters run.
    request_headers_to_remove: tuple[str, ...] = ()
    # Client header names holding "_" (Envoy's headers_with_underscores_action).
    headers_with_underscores_action: UnderscoreAction = "drop_header"
    background: tuple[str, ...] = ()  # names of filters loaded as root-only plugins
    geoip: GeoIPConfig | None = None
    tracing: TracingConfig | None = None  # None: off, no span is made
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    sched_batch: bool = True  # Linux: the workers run under SCHED_BATCH (server.py)
    drain_timeout: float = 30.0  # SIGTERM: seconds in-flight requests may take to finish
    headers: HeaderRules | None = None  # every route's, before the route's own (edgegw/front)
    security_headers: SecurityHeaders | None = None  # None: off
    tls: ListenerTLS | None = None  # None: cleartext listener
    http2: bool = False  # ALPN h2 with tls, h2c prior knowledge without
    source: Path | None = None  # the file this was read from
