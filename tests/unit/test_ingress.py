"""edgegw.ingress: what the one header pass notes for the pipeline, and request ids."""

from __future__ import annotations

import re

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


def test_request_ids_are_fresh_across_batches() -> None:
    ids = [new_request_id() for _ in range(1000)]  # several batches of random bytes
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)
