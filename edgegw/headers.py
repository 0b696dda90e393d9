"""Header rules of a proxy: hop-by-hop stripping and X-Forwarded-* (RFC 9110 §7.6)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from edgegw.errors import InvalidHeader
from edgegw.types import Headers

# RFC 9110 §7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection). These describe
# one connection and must never be forwarded, in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
#: The request's id: kept from the client when valid, else generated; sent to every
#: upstream call and echoed to the client (docs/proxying.md).
REQUEST_ID = b"x-request-id"
XFF = b"x-forwarded-for"
XFP = b"x-forwarded-proto"
XFH = b"x-forwarded-host"
_FORWARDED = frozenset({XFF, XFP, XFH})


def strip_hop_by_hop(
    headers: Headers, extra: Iterable[bytes] = (), *, base: frozenset[bytes] = HOP_BY_HOP
) -> Headers:
    """Headers without hop-by-hop ones and without those the Connection header names;
    ``extra`` names more to drop, as does ``base``, a superset of ``HOP_BY_HOP`` made
    once (``extra`` costs a set per call). Repeats (Set-Cookie) and order are kept."""
    drop = _hop_names(headers, base)
    if extra:
        drop = drop | frozenset(extra)
    return [(n, v) for n, v in headers if n not in drop]


def _hop_names(headers: Headers, base: frozenset[bytes] = HOP_BY_HOP) -> frozenset[bytes]:
    drop = base
    for name, value in headers:
        if name == b"connection":
            tokens = connection_tokens(value)
            if not tokens <= drop:  # "keep-alive", "close" name nothing more to drop
                drop = drop | tokens
    return drop


_TOKENS: dict[bytes, frozenset[bytes]] = {}
_MAX_TOKENS = 1024  # distinct Connection values remembered (a peer may invent many)


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The lower-cased options of one Connection field value (RFC 9110 §7.6.1). Backends
    send the same few values ("keep-alive", "close") on every response: each is parsed
    once."""
    tokens = _TOKENS.get(value)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
        if len(_TOKENS) < _MAX_TOKENS:
            _TOKENS[value] = tokens
    return tokens


_MAX_PEERS = 4096  # trust decisions remembered


class TrustedProxies:
    """Decides whether a peer's X-Forwarded-* headers are believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._known: dict[str, bool] = {}  # decisions by address (peers come back)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        known = self._known.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:  # a unix socket path or an unknown peer
                known = False
            else:
                known = any(ip in net for net in self._networks)
            if len(self._known) < _MAX_PEERS:
                self._known[address] = known
        return known

    def client_address(self, peer: str, headers: Headers) -> str:
        """The original client: walk X-Forwarded-For from the right while the hop is a
        trusted proxy (the first untrusted hop is the client)."""
        if not self.trusts(peer):
            return peer
        hops = [
            h.strip().decode("latin-1")
            for n, v in headers
            if n == XFF
            for h in v.split(b",")
            if h.strip()
        ]
        client = peer
        for hop in reversed(hops):
            client = hop
            if not self.trusts(hop):
                break
        return client


# Set by the pipeline and edgegw.upstream, never copied from the request a filter chain
# leaves: the framing (RFC 9112 §6) and Host.
_SET_UPSTREAM = frozenset({b"content-length", b"host"})
_UPSTREAM_DROP = (HOP_BY_HOP | _SET_UPSTREAM) - _FORWARDED


_SCHEMES = {"http": b"http", "https": b"https"}


def add_forwarded(
    headers: Headers, peer: str, scheme: str, host: bytes, trusted_peer: bool, sent: bool
) -> Headers:
    """``headers`` with X-Forwarded-For appended with the peer and -Proto/-Host set, as
    they will reach the backend. Client-sent X-Forwarded-* are kept (and extended) only
    when the peer is a trusted proxy (``trusted_peer``: ``TrustedProxies.trusts(peer)``,
    which the pipeline has already asked); otherwise they are replaced.

    The pipeline applies it before the request filters run, so that a filter reading
    X-Forwarded-For (rate_limit's ``trusted_hops``) sees the peer as its right-most entry,
    as filters do in Envoy at the edge (``use_remote_address``): counting hops from the
    right then never lands on a value the client wrote.

    ``sent=False`` says the client sent no X-Forwarded-* (edgegw.ingress knows): then,
    from an untrusted peer, the three are appended to ``headers`` itself, not a copy."""
    scheme_bytes = _SCHEMES.get(scheme) or scheme.encode()
    if not sent and not trusted_peer:
        headers.append((XFF, peer.encode()))
        headers.append((XFP, scheme_bytes))
        if host:
            headers.append((XFH, host))
        return headers
    if trusted_peer:
        prior = b", ".join(v for n, v in headers if n == XFF)
        proto = next((v for n, v in headers if n == XFP), scheme_bytes)
        fhost = next((v for n, v in headers if n == XFH), host)
        xff = prior + b", " + peer.encode() if prior else peer.encode()
    else:
        xff, proto, fhost = peer.encode(), scheme_bytes, host
    out = [(n, v) for n, v in headers if n not in _FORWARDED]
    out.append((XFF, xff))
    out.append((XFP, proto))
    if fhost:
        out.append((XFH, fhost))
    return out


def upstream_request_headers(headers: Headers, edited: bool = True) -> Headers:
    """Request headers that went through ``add_forwarded`` (and the filters), for the
    backend: hop-by-hop ones removed (RFC 9110 §7.6.1). The X-Forwarded-* stay even when
    the client's Connection header names them: they are the gateway's own, and dropping
    them would hide the client address from the backend. Content-Length and Host are
    dropped too: the pipeline and edgegw.upstream set them from what is actually sent
    (RFC 9112 §6: the framing is never copied from the client).

    ``edited=False``: no filter or header rule touched the list since edgegw.ingress made
    it, and ingress keeps no Connection field: no pass to look for one."""
    drop = _UPSTREAM_DROP
    if edited:
        for name, _value in headers:
            if name == b"connection":  # a filter set one: what it names goes too
                drop = (_hop_names(headers) | _SET_UPSTREAM) - _FORWARDED
                break
    return [(n, v) for n, v in headers if n not in drop]


def request_id(headers: Headers) -> str:
    """The request's id (``x-request-id``) for a log line about it; "" if it has none.
    Lines logged while a request is handled end with ``request_id=<id>``."""
    return (get(headers, REQUEST_ID) or b"").decode("latin-1")


# RFC 9110 §5.1: a field name is a token; §5.5: NUL, CR and LF never occur in a value (they
# would end the header line, or the whole head, early: request smuggling). Pseudo-headers
# go into the request line, so theirs hold no whitespace either. edgegw/wasm/native/headers.c
# applies the same rule before editing a header in C.
_FIELD_NAME = re.compile(rb":?[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(rb"[^\0\r\n]*")
_PSEUDO_VALUE = re.compile(rb"[\x21-\x7e]*")


def check_field(name: bytes, value: bytes) -> None:
    """Raise ``InvalidHeader`` unless ``name: value`` may be sent (pseudo-headers too)."""
    if not _FIELD_NAME.fullmatch(name):
        raise InvalidHeader(f"invalid header name {name[:64]!r}")
    pattern = _PSEUDO_VALUE if name[:1] == b":" else _FIELD_VALUE
    if not pattern.fullmatch(value):
        raise InvalidHeader(f"header {name[:64]!r} has a value HTTP forbids (NUL, CR, LF)")


def get(headers: Headers, name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None
