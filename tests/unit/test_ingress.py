"""edgegw.ingress: what the one header pass notes for the pipeline, and request ids."""

from __future__ import annotations

import re

from edgegw.headers import upstream_request_headers
from edgegw.ingress import Inbound, RequestPolicy, new_request_id


def _inspect(headers: list[tuple[bytes, bytes]]) -> Inbound:
    inbound = RequestPolicy([], "drop_header", 65536).inspect(headers, 10, True)
    assert isinstance(inbound, Inbound)
    return inbound


def test_the_request_id_and_forwarded_headers_are_noted_and_kept() -> None:
    inbound = _inspect(
        [
            (b"host", b"gw"),
            (b"x-request-id", b"first"),
            (b"x-request-id", b"second"),
            (b"x-forwarded-host", b"evil"),
        ]
    )
    assert inbound.request_id == b"first"
    assert inbound.forwarded
    assert inbound.headers == [
        (b"x-request-id", b"first"),
        (b"x-request-id", b"second"),
        (b"x-forwarded-host", b"evil"),
        (b"host", b"gw"),
    ]
    for name in (b"x-forwarded-for", b"x-forwarded-proto"):
        assert _inspect([(b"host", b"gw"), (name, b"x")]).forwarded
    bare = _inspect([(b"host", b"gw"), (b"x-a", b"1")])
    assert bare.request_id is None and not bare.forwarded


def test_a_removed_forwarded_header_is_not_noted() -> None:
    policy = RequestPolicy(["X-Forwarded-For"], "drop_header", 65536)
    inbound = policy.inspect([(b"host", b"gw"), (b"x-forwarded-for", b"6.6.6.6")], 10, True)
    assert isinstance(inbound, Inbound)
    assert not inbound.forwarded and inbound.headers == [(b"host", b"gw")]


def test_the_host_bytes_are_the_host_field_kept() -> None:
    # Inbound.host spares the pipeline encoding the authority again (X-Forwarded-Host).
    policy = RequestPolicy([], "drop_header", 65536)
    inbound = _inspect([(b"host", b"Gw.example:8080"), (b"content-length", b"3")])
    assert (inbound.authority, inbound.host) == ("Gw.example:8080", b"Gw.example:8080")
    assert inbound.headers[-1] == (b"host", inbound.host) and inbound.length == 3
    target = policy.inspect([(b"host", b"gw")], 10, True, b"other:81")  # absolute form
    assert isinstance(target, Inbound)
    assert (target.authority, target.host) == ("other:81", b"other:81")
    assert target.headers == [(b"host", b"other:81")]
    older = policy.inspect([], 10, False)  # HTTP/1.0 may leave Host out
    assert isinstance(older, Inbound)
    assert (older.authority, older.host, older.headers) == ("", b"", [])
    assert policy.inspect([(b"host", b"a"), (b"host", b"a")], 10, True) == (
        400,
        "more than one Host header",
    )


def test_ingress_output_needs_no_connection_scan() -> None:
    # upstream_request_headers(edited=False) skips its Connection scan: ingress never
    # keeps a Connection field, and what it names is gone already.
    policy = RequestPolicy([], "drop_header", 65536)
    sent = [(b"host", b"gw"), (b"connection", b"x-a, keep-alive"), (b"x-a", b"1"), (b"x-b", b"2")]
    inbound = policy.inspect(sent, 10, True)
    assert isinstance(inbound, Inbound) and inbound.nominated == frozenset({b"x-a"})
    kept = [(n, v) for n, v in inbound.headers if n not in inbound.nominated]
    assert upstream_request_headers(kept, False) == upstream_request_headers(kept)
    assert upstream_request_headers(kept, False) == [(b"x-b", b"2")]


def test_request_ids_are_fresh_across_batches() -> None:
    ids = [new_request_id() for _ in range(1000)]  # several batches of random bytes
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)
