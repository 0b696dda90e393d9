"""The store API on the admin port is not an open door (issue #15, item 4): with
``admin.token`` set it needs the token, it takes only JSON (no cross-site form or
text/plain POST), and one call can neither lock a key for long nor read a quota."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.adversarial.conftest import RawBackend, raw_exchange, status_of
from tests.conftest import REPO, GatewayProcess

TOKEN = "store-test-token"
VICTIM = {"key": "edgegw.rl:per-user:alice", "rate": 10, "burst": 10, "period_ms": 1000}


def _post(
    port: int, doc: object, content_type: str | None = "application/json", token: str | None = None
) -> bytes:
    body = json.dumps(doc).encode()
    head = b"POST /store/v1/ratelimit HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n"
    if content_type is not None:
        head += b"content-type: %s\r\n" % content_type.encode()
    if token is not None:
        head += b"authorization: Bearer %s\r\n" % token.encode()
    return raw_exchange(port, head + b"content-length: %d\r\n\r\n" % len(body) + body)


def _body(response: bytes) -> dict[str, object]:
    doc = json.loads(response.partition(b"\r\n\r\n")[2])
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def gateway(run_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return run_gateway({"admin": {"token": TOKEN}, "routes": []})


def test_store_api_needs_the_admin_token(gateway: GatewayProcess) -> None:
    port = gateway.admin_port
    assert port is not None
    for token in (None, "wrong"):
        response = _post(port, VICTIM, token=token)
        assert status_of(response) == 401, response
    flags = b"GET /store/v1/flags HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    assert status_of(raw_exchange(port, flags)) == 401
    response = _post(port, VICTIM, token=TOKEN)
    assert status_of(response) == 200, response
    assert _body(response)["allowed"] is True


def test_store_api_takes_only_json(gateway: GatewayProcess) -> None:
    port = gateway.admin_port
    assert port is not None
    # What a cross-site page can make a browser send without a CORS preflight.
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        response = _post(port, VICTIM, content_type=content_type, token=TOKEN)
        assert status_of(response) == 415, (content_type, response)
    response = _post(port, VICTIM, content_type="application/json; charset=utf-8", token=TOKEN)
    assert status_of(response) == 200, response


def test_store_api_bounds_what_one_call_can_do(gateway: GatewayProcess) -> None:
    port = gateway.admin_port
    assert port is not None
    cases = [
        ({"rate": 1, "burst": 1, "period_ms": 365 * 24 * 3600 * 1000}, "period_ms"),  # a year
        ({"period_ms": 24 * 3600 * 1000 + 1}, "period_ms"),
        ({"cost": 0}, "cost"),  # reads the key's quota without spending any
    ]
    for n, (change, field) in enumerate(cases):
        victim = {**VICTIM, "key": f"{VICTIM['key']}{n}"}
        response = _post(port, {**victim, **change}, token=TOKEN)
        assert status_of(response) == 400, (change, response)
        assert field in str(_body(response)["detail"])
        # The victim's bucket was not touched: the whole burst is left.
        response = _post(port, victim, token=TOKEN)
        assert (status_of(response), _body(response)["remaining"]) == (200, 9), response


def test_filters_reach_the_store_in_process_without_the_token(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
) -> None:
    def reply(buf: bytes) -> bytes | None:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" if buf.endswith(b"\r\n\r\n") else None
        )

    policy = {"name": "p", "rate": 1, "period": "1h", "key": ["ip"]}
    config = {"mode": "global", "on_store_error": "fail_closed", "policies": [policy]}
    gw = run_gateway(
        {
            "admin": {"token": TOKEN},
            "backends": {"b": raw_backend(reply).url},
            "filters": {
                "rl": {"wasm": str(REPO / "filters/dist/rate_limit.wasm"), "config": config}
            },
            "routes": [{"name": "r", "match": {"prefix": "/"}, "filters": ["rl"], "backend": "b"}],
        }
    )
    request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    # A store the filter could not reach would answer 503 (on_store_error: fail_closed).
    assert status_of(raw_exchange(gw.port, request)) == 200, gw.output()[-2000:]
    assert status_of(raw_exchange(gw.port, request)) == 429, gw.output()[-2000:]
