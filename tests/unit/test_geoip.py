"""geoip: the host fills property edgegw.geo.country from a MaxMind database; the geo
filter turns it into headers (edgegw only: Envoy has no such property)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.errors import ConfigError
from edgegw.wasm.geoip import open_country_lookup
from tests.conftest import REPO, LoopbackBackend


@pytest.fixture
def database(tmp_path: Path) -> Path:
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "JP"}})
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"registered_country": {"iso_code": "DE"}})
    path = tmp_path / "country.mmdb"
    writer.to_db_file(str(path))
    return path


def test_lookup(database: Path) -> None:
    country = open_country_lookup(database)
    assert country("203.0.113.9") == "JP"
    assert country("198.51.100.1") == "DE"  # registered_country when country is absent
    assert country("192.0.2.1") is None
    assert country("not-an-ip") is None


async def test_geo_filter_reads_the_country_property(
    database: Path, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    backend = backend_factory()
    geo = json.dumps({"use_property": True, "countries": {"JP": {"currency": "JPY"}}})
    text = f"""
version: 1
geoip: {{database: {database}}}
backends: {{api: "{backend.url}"}}
filters: {{geo: {{wasm: {REPO / "filters/dist/geo.wasm"}, config: '{geo}'}}}}
routes: [{{match: {{prefix: /}}, filters: [geo], backend: api}}]
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    try:
        for client_ip, expected in (("203.0.113.7", "JP"), ("192.0.2.1", "ZZ")):
            transport = httpx.ASGITransport(app=app, client=(client_ip, 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                seen = dict((await client.get("/x")).json()["headers"])
                assert seen["x-edgegw-country"] == expected
        assert seen.get("x-edgegw-currency") is None  # ZZ has no currency
    finally:
        await app.aclose()


def test_missing_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GeoIP database not found"):
        parse_config("version: 1\ngeoip: {database: nope.mmdb}\n", source=tmp_path / "g.yaml")
