"""geo filter: country sources and their order, locale headers, 451 blocking, 302
redirects and Vary — run in every host of HOSTS against a real echo backend."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.filters.harness import RunningGateway, StartGateway

CONFIG = {
    "countries": {
        "DE": {"language": "de-DE", "currency": "EUR"},
        "JP": {"language": "ja", "currency": "JPY"},
    },
    "default_language": "en",
    "default_currency": "USD",
    "block": ["KP"],
    "redirects": [
        {
            "countries": ["FR"],
            "location": "https://fr.example.com{path}",
            "path_prefixes": ["/shop"],
        }
    ],
}


def call(
    gw: RunningGateway, headers: dict[str, str] | None = None, path: str = "/"
) -> httpx.Response:
    return httpx.get(gw.base_url + path, headers=headers, timeout=10, follow_redirects=False)


@pytest.fixture
def geo(gateway_factory: StartGateway, backend_factory: Any) -> RunningGateway:
    return gateway_factory([("geo", CONFIG)], backend_factory().port)


def test_country_from_trusted_headers_in_order(geo: RunningGateway) -> None:
    r = call(geo, {"cf-ipcountry": "de", "x-country-code": "JP"})
    assert r.status_code == 200, geo.log()[-2000:]
    h = r.json()["headers"]
    assert (h["x-edgegw-country"], h["x-edgegw-language"], h["x-edgegw-currency"]) == (
        "DE",
        "de-DE",
        "EUR",
    )
    h = call(geo, {"cf-ipcountry": "XX", "x-country-code": "jp"}).json()["headers"]
    assert (h["x-edgegw-country"], h["x-edgegw-currency"]) == ("JP", "JPY")


def test_unknown_country_is_zz_with_defaults_and_spoofing_is_overwritten(
    geo: RunningGateway,
) -> None:
    # Envoy has no edgegw.geo.country property, so no trusted header means ZZ.
    r = call(
        geo, {"x-edgegw-country": "DE", "x-edgegw-currency": "BTC", "cf-ipcountry": "not-a-country"}
    )
    h = r.json()["headers"]
    assert (h["x-edgegw-country"], h["x-edgegw-language"], h["x-edgegw-currency"]) == (
        "ZZ",
        "en",
        "USD",
    )


def test_vary_is_added_once_and_merged(geo: RunningGateway) -> None:
    r = call(geo, {"cf-ipcountry": "DE"})
    assert r.headers["vary"] == "cf-ipcountry, x-country-code"


def test_blocked_country_gets_451_problem(geo: RunningGateway) -> None:
    r = call(geo, {"cf-ipcountry": "KP"})
    assert r.status_code == 451
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 451
    assert "cf-ipcountry" in r.headers["vary"]


def test_redirect_by_country_and_prefix(geo: RunningGateway) -> None:
    r = call(geo, {"cf-ipcountry": "FR"}, "/shop/cart?id=1")
    assert r.status_code == 302
    assert r.headers["location"] == "https://fr.example.com/shop/cart?id=1"
    assert "cf-ipcountry" in r.headers["vary"]
    assert call(geo, {"cf-ipcountry": "FR"}, "/about").status_code == 200


def test_bad_redirect_status_refuses_to_load(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    cfg = {"redirects": [{"countries": ["FR"], "location": "/fr", "status": 200}]}
    with pytest.raises(RuntimeError):
        gateway_factory([("geo", cfg)], backend_factory().port)
