"""Hop-by-hop stripping and X-Forwarded-* with and without trusted proxies."""

from __future__ import annotations

from edgegw.headers import (
    TrustedProxies,
    add_forwarded,
    strip_hop_by_hop,
    upstream_request_headers,
)


def test_strip_hop_by_hop_and_connection_tokens() -> None:
    headers = [
        (b"connection", b"keep-alive, X-Secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic x"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-keep", b"yes"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-keep", b"yes"),
    ]


def test_untrusted_peer_cannot_spoof_forwarded_headers() -> None:
    out = add_forwarded(
        [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-host", b"evil"), (b"a", b"1")],
        "10.1.2.3",
        "http",
        b"gw.example.com",
        TrustedProxies(["192.168.0.0/16"]).trusts("10.1.2.3"),
        True,
    )
    assert out == [
        (b"a", b"1"),
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"gw.example.com"),
    ]


def test_trusted_peer_chain_is_appended() -> None:
    out = add_forwarded(
        [
            (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2"),
            (b"x-forwarded-for", b"3.3.3.3"),
            (b"x-forwarded-proto", b"https"),
        ],
        "192.168.1.1",
        "http",
        b"gw",
        TrustedProxies(["192.168.0.0/16"]).trusts("192.168.1.1"),
        True,
    )
    assert out == [
        (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2, 3.3.3.3, 192.168.1.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"gw"),
    ]


def test_client_address_walks_trusted_hops_from_the_right() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    xff = [(b"x-forwarded-for", b"203.0.113.9, 198.51.100.1, 10.0.0.2")]
    assert trusted.client_address("10.0.0.1", xff) == "198.51.100.1"
    assert trusted.client_address("8.8.8.8", xff) == "8.8.8.8"  # untrusted peer: itself
    assert TrustedProxies([]).client_address("10.0.0.1", xff) == "10.0.0.1"


def test_filters_get_the_forwarded_for_the_backend_gets() -> None:
    # add_forwarded runs before the filters: the peer is already the right-most entry.
    trusted = TrustedProxies(["10.0.0.0/8"])
    sent = [(b"x-forwarded-for", b"6.6.6.6"), (b"connection", b"x-forwarded-for, x-a")]
    seen = add_forwarded(sent, "10.1.1.1", "https", b"h", trusted.trusts("10.1.1.1"), True)
    assert (b"x-forwarded-for", b"6.6.6.6, 10.1.1.1") in seen
    untrusted = add_forwarded(sent, "6.6.6.6", "https", b"h", trusted.trusts("6.6.6.6"), True)
    assert [v for n, v in untrusted if n == b"x-forwarded-for"] == [b"6.6.6.6"]
    # A client naming X-Forwarded-For in Connection cannot strip the gateway's own.
    out = upstream_request_headers([*seen, (b"x-a", b"1")])
    assert [n for n, _v in out] == [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]


def test_connection_set_by_a_filter_still_strips_what_it_names() -> None:
    # upstream_request_headers skips its Connection parsing when no Connection header is
    # left (the common case); one a filter added must still remove what it nominates.
    plain = [(b"host", b"h"), (b"x-secret", b"1"), (b"x-a", b"2")]
    assert upstream_request_headers(plain) == [(b"x-secret", b"1"), (b"x-a", b"2")]
    for _ in range(2):  # the parsed Connection value is remembered: the same answer twice
        nominated = [*plain, (b"connection", b"X-Secret, keep-alive")]
        assert upstream_request_headers(nominated) == [(b"x-a", b"2")]
    keep_alive = [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"x-a", b"2")]
    assert strip_hop_by_hop(keep_alive) == [(b"x-a", b"2")]


def test_forwarded_headers_appended_in_place_when_the_client_sent_none() -> None:
    headers = [(b"a", b"1")]
    trusted = TrustedProxies(["192.168.0.0/16"])
    out = add_forwarded(headers, "10.1.2.3", "http", b"gw", trusted.trusts("10.1.2.3"), False)
    assert out is headers
    assert out == [
        (b"a", b"1"),
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"gw"),
    ]
    # A trusted peer takes the full path even then (its own X-Forwarded-* are believed).
    out = add_forwarded(
        [(b"a", b"1")], "192.168.0.9", "http", b"gw", trusted.trusts("192.168.0.9"), False
    )
    assert out[1] == (b"x-forwarded-for", b"192.168.0.9")


def test_trust_decisions_are_the_same_when_remembered() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "::1/128"])
    for _ in range(2):
        assert trusted.trusts("10.9.8.7")
        assert trusted.trusts("::1")
        assert not trusted.trusts("11.0.0.1")
        assert not trusted.trusts("not an address")
        assert not trusted.trusts("")
