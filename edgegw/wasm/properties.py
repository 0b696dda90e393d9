"""proxy_get_property: the attributes Envoy exposes, serialized as Envoy does (strings as
raw bytes, integers as 8-byte little-endian). Paths arrive as NUL-separated segments."""

from __future__ import annotations

import struct
from collections.abc import Callable

from edgegw.chain import Exchange
from edgegw.headers import get

Getter = Callable[[Exchange], bytes | None]


def _i64(value: int) -> bytes:
    return struct.pack("<q", value)


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _header(name: bytes) -> Getter:
    return lambda ex: get(ex.request_headers, name)


_STREAM: dict[str, Getter] = {
    "request.path": lambda ex: _text(ex.path),
    "request.url_path": lambda ex: _text(ex.path.partition("?")[0]),
    "request.host": lambda ex: _text(ex.authority),
    "request.scheme": lambda ex: _text(ex.scheme),
    "request.method": lambda ex: _text(ex.method),
    "request.protocol": lambda _ex: b"HTTP/1.1",
    "request.id": _header(b"x-request-id"),
    "request.referer": _header(b"referer"),
    "request.useragent": _header(b"user-agent"),
    "request.time": lambda ex: _i64(ex.start_ns),
    "response.code": lambda ex: _i64(ex.status) if ex.status else None,
    "response.code_details": lambda ex: b"via_upstream" if ex.status else None,
    "source.address": lambda ex: _text(f"{ex.client[0]}:{ex.client[1]}"),
    "source.port": lambda ex: _i64(ex.client[1]),
    "destination.address": lambda ex: _text(f"{ex.server[0]}:{ex.server[1]}"),
    "destination.port": lambda ex: _i64(ex.server[1]),
    "connection.id": lambda ex: _i64(ex.connection_id),
    "route_name": lambda ex: _text(ex.route.name),
    "xds.route_name": lambda ex: _text(ex.route.name),
    "cluster_name": lambda ex: _text(ex.backend),
    "xds.cluster_name": lambda ex: _text(ex.backend),
    # One byte, as Envoy serializes booleans: the peer is in trusted_proxies, so headers it
    # writes (a CDN's country header) may be believed (filters/sdk peerTrusted).
    "edgegw.peer_trusted": lambda ex: b"\x01" if ex.trusted_peer else b"\x00",
}


def get_property(path: bytes, ex: Exchange | None, plugin: dict[str, bytes]) -> bytes | None:
    """The value of ``path`` for the current context (``ex`` is None on a root context);
    ``plugin`` holds plugin_name, plugin_root_id, plugin_vm_id. None: NOT_FOUND."""
    key = path.rstrip(b"\0").replace(b"\0", b".").decode("latin-1")  # segments joined
    if key in plugin:
        return plugin[key]
    if ex is None:
        return None
    if key in ex.properties:
        value = ex.properties[key]
        return value if isinstance(value, bytes) else str(value).encode()
    if key.startswith("request.headers."):
        return get(ex.request_headers, key[len("request.headers.") :].lower().encode())
    if key.startswith("response.headers."):
        return get(ex.response_headers, key[len("response.headers.") :].lower().encode())
    getter = _STREAM.get(key)
    return getter(ex) if getter is not None else None
