"""Headers a client must not control: hop-by-hop and Connection-nominated ones, the
gateway's own x-edgegw-*, configured removals, underscores, country headers against GeoIP,
header values a filter sets, and secrets in /admin/config. Raw sockets in, the exact bytes
the backend received out."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from edgegw.config import parse_config, redacted
from edgegw.demo import DEMO_ISSUER, DEMO_JWT_SECRET, demo_token
from tests.adversarial.conftest import (
    RawBackend,
    SharedGateway,
    complete_requests,
    ok_when_complete,
    raw_exchange,
    start_shared_gateway,
    status_of,
)
from tests.conftest import REPO, stop_process

DIST = REPO / "filters" / "dist"
FILTERS = {
    "jwt": {
        "wasm": str(DIST / "jwt_auth.wasm"),
        "config": {
            "providers": [
                {"issuer": DEMO_ISSUER, "audiences": ["demo"], "secret": DEMO_JWT_SECRET}
            ],
            "forward_claims": {"sub": "x-user-id"},
        },
    },
    "ab": {
        "wasm": str(DIST / "ab_flags.wasm"),
        "config": {
            "flags": {
                "pro": {"enabled": True, "claims": {"plan": ["pro"]}},
                "eu": {"enabled": True, "countries": ["DE"]},
            }
        },
    },
    "geo": {
        "wasm": str(DIST / "geo.wasm"),
        "config": {"trusted_headers": ["x-country-code"], "block": ["KP"]},
    },
}


def routes() -> list[dict[str, Any]]:
    return [
        {"name": "jwt", "match": {"prefix": "/jwt"}, "filters": ["jwt"], "backend": "b"},
        {"name": "flags", "match": {"prefix": "/flags"}, "filters": ["ab"], "backend": "b"},
        {"name": "geo", "match": {"prefix": "/geo"}, "filters": ["geo"], "backend": "b"},
        {
            "name": "strict",
            "match": {"prefix": "/strict"},
            "backend": "b",
            "request_headers_to_remove": ["x-debug"],
        },
        {"name": "all", "match": {"prefix": "/"}, "backend": "b"},
    ]


@pytest.fixture(scope="module")
def geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MaxMind database placing the loopback clients of these tests in North Korea."""
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "KP"}})
    path = tmp_path_factory.mktemp("geoip") / "country.mmdb"
    writer.to_db_file(str(path))
    return path


def _start(
    tmp_path_factory: pytest.TempPathFactory, geoip_db: Path, **extra: Any
) -> Iterator[SharedGateway]:
    backends = {"b": RawBackend(ok_when_complete)}
    backends["b"].start()
    doc = {
        "admin": None,
        "access_log": False,
        "geoip": {"database": str(geoip_db)},
        "request_headers_to_remove": ["x-user-id", "x-global-debug"],
        "backends": {"b": backends["b"].url},
        "filters": FILTERS,
        "routes": routes(),
        **extra,
    }
    gw = start_shared_gateway(tmp_path_factory.mktemp("headers"), "granian", doc, backends)
    yield gw
    stop_process(gw.proc)
    backends["b"].close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, geoip_db: Path) -> Iterator[SharedGateway]:
    """Clients are untrusted peers; underscores take the default (drop_header)."""
    yield from _start(tmp_path_factory, geoip_db)


@pytest.fixture(scope="module")
def shared_trusting(
    tmp_path_factory: pytest.TempPathFactory, geoip_db: Path
) -> Iterator[SharedGateway]:
    """The loopback peer is a trusted proxy; underscores reject the request."""
    yield from _start(
        tmp_path_factory,
        geoip_db,
        trusted_proxies=["127.0.0.1/32"],
        headers_with_underscores_action="reject_request",
    )


@pytest.fixture
def edge(shared: SharedGateway) -> SharedGateway:
    shared.reset()
    return shared


@pytest.fixture
def trusting(shared_trusting: SharedGateway) -> SharedGateway:
    shared_trusting.reset()
    return shared_trusting


def exchange(gw: SharedGateway, path: str, *headers: bytes) -> tuple[int, list[bytes]]:
    """Status and the header lines (lower-cased names) the backend got for one GET."""
    gw.reset()
    req = b"GET %s HTTP/1.1\r\nHost: gw\r\n%s\r\n" % (
        path.encode(),
        b"".join(h + b"\r\n" for h in headers),
    )
    status = status_of(raw_exchange(gw.port, req))
    seen = complete_requests(gw.received())
    lines = seen[-1][0].split(b"\r\n")[1:] if seen else []
    return status, lines


def named(lines: list[bytes], name: bytes) -> list[bytes]:
    return [line.split(b":", 1)[1].strip() for line in lines if line.split(b":")[0] == name]


def test_connection_nominated_headers_go_before_the_filters(edge: SharedGateway) -> None:
    auth = b"Authorization: Bearer " + demo_token("42").encode()
    status, lines = exchange(edge, "/jwt/a", auth, b"Connection: x-user-id")
    assert status == 200 and named(lines, b"x-user-id") == [b"42"]  # the filter's survives
    # Listed in Connection, Authorization is this hop's only: gone before the filter ran.
    status, lines = exchange(edge, "/jwt/a", auth, b"Connection: x-user-id, authorization")
    assert status == 401 and lines == []
    status, lines = exchange(edge, "/a", b"X-Secret: 1", b"Connection: close, X-Secret")
    assert status == 200 and named(lines, b"x-secret") == [] and named(lines, b"connection") == []


def test_internal_and_underscore_headers_from_clients_are_dropped(edge: SharedGateway) -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"plan": "pro"}).encode()).rstrip(b"=")
    spoofed = [
        b"x-edgegw-claims: " + claims,
        b"x-edgegw-country: DE",
        b"X-Edgegw-Anything: 1",
        b"X_User_Id: admin",
        b"x-user-id: admin",
        b"x-global-debug: 1",
    ]
    status, lines = exchange(edge, "/a", *spoofed)
    assert status == 200
    names = {line.split(b":")[0] for line in lines}
    assert not {n for n in names if n.startswith(b"x-edgegw-") or b"_" in n}
    assert not names & {b"x-user-id", b"x-global-debug"}
    # Nor can they switch a targeted flag on (claims, country: GeoIP says KP).
    status, lines = exchange(edge, "/flags", *spoofed, b"cf-ipcountry: DE")
    assert status == 200 and named(lines, b"x-edgegw-flags") == [b"eu=off,pro=off"]


def test_route_removals_apply_to_their_route_only(edge: SharedGateway) -> None:
    assert named(exchange(edge, "/strict", b"x-debug: 1")[1], b"x-debug") == []
    assert named(exchange(edge, "/other", b"x-debug: 1")[1], b"x-debug") == [b"1"]


def test_underscores_can_reject_the_request(trusting: SharedGateway) -> None:
    status, lines = exchange(trusting, "/a", b"X_User_Id: admin")
    assert status == 400 and lines == []


def test_country_headers_lose_to_geoip_unless_the_peer_is_trusted(
    edge: SharedGateway, trusting: SharedGateway
) -> None:
    status, lines = exchange(edge, "/geo", b"x-country-code: DE")
    assert status == 451 and lines == []  # GeoIP: KP, blocked
    status, lines = exchange(trusting, "/geo", b"x-country-code: DE")  # a CDN's header
    assert status == 200 and named(lines, b"x-edgegw-country") == [b"DE"]


@pytest.mark.parametrize("subject", ["a\x00b", "a\r\nx-injected: 1"], ids=["nul", "crlf"])
def test_filter_set_header_values_are_checked(edge: SharedGateway, subject: str) -> None:
    auth = b"Authorization: Bearer " + demo_token(subject).encode()
    status, lines = exchange(edge, "/jwt/a", auth)
    assert status == 503 and lines == []  # the filter failed (on_error: fail_closed)


def test_admin_config_redacts_secrets() -> None:
    text = """
version: 1
backends:
  a: "http://svc:hunter2@127.0.0.1:9000"
  b: {url: "http://only-user@127.0.0.1:9001"}
filters:
  f:
    wasm: filters/dist/geo.wasm
    config: {apikey: k1, api_key: k2, bearer: k3, hmac_key: k4, nested: [{client_secret: k5}],
             upstream: "https://u:k6@idp.example/x", key: [ip], language: de}
"""
    doc = redacted(parse_config(text, source=REPO / "gateway.yaml"))
    dumped = json.dumps(doc)
    for secret in ("hunter2", "k1", "k2", "k3", "k4", "k5", "k6"):
        assert f'"{secret}"' not in dumped and f":{secret}@" not in dumped, secret
    assert doc["backends"]["a"]["url"] == "http://svc:***@127.0.0.1:9000"
    assert doc["backends"]["b"]["url"] == "http://only-user@127.0.0.1:9001"
    config = doc["filters"]["f"]["config"]
    assert config["key"] == ["ip"] and config["language"] == "de"  # not secrets
