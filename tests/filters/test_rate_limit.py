"""rate_limit filter: local GCRA in shared data, global mode through the store API,
store-error policies and the IETF RateLimit headers (run in every host of HOSTS)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.filters.harness import Backend, Handler, RunningGateway, StartGateway

POLICY = {"name": "per-ip", "rate": 3, "period": "1m", "key": ["ip"]}


def get(
    gw: RunningGateway, path: str = "/", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.get(gw.base_url + path, headers=headers, timeout=10)


def test_local_limit_counts_down_then_429(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    gw = gateway_factory([("rate_limit", {"policies": [POLICY]})], backend_factory().port)
    remaining = []
    for _ in range(3):
        r = get(gw)
        assert r.status_code == 200, gw.log()[-2000:]
        assert r.headers["ratelimit-policy"] == '"per-ip";q=3;w=60'
        remaining.append(r.headers["ratelimit"].split(";")[1])
    assert remaining == ["r=2", "r=1", "r=0"]
    r = get(gw)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["ratelimit"].startswith('"per-ip";r=0;t=')
    body = r.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"


def test_header_key_separates_users_and_skips_anonymous(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    policy = {"name": "per-user", "rate": 1, "period": "1h", "key": ["header:x-user-id"]}
    gw = gateway_factory([("rate_limit", {"policies": [policy]})], backend_factory().port)
    assert get(gw, headers={"x-user-id": "alice"}).status_code == 200
    assert get(gw, headers={"x-user-id": "alice"}).status_code == 429
    assert get(gw, headers={"x-user-id": "bob"}).status_code == 200
    for _ in range(3):  # no user id: the policy does not apply
        r = get(gw)
        assert r.status_code == 200 and "ratelimit" not in r.headers


def test_trusted_hops_take_client_from_forwarded_for(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    cfg = {"trusted_hops": 2, "policies": [{"name": "ip", "rate": 1, "period": "1h"}]}
    port = backend_factory().port
    gw = gateway_factory([("rate_limit", cfg)], port, trusted_proxies=["127.0.0.1/32"])
    # The host appended the peer (hop 1, the proxy in front of it: this test), which
    # appended 10.0.0.1, the address it saw (hop 2); the left one is spoofable.
    assert get(gw, headers={"x-forwarded-for": "6.6.6.6, 10.0.0.1"}).status_code == 200
    assert get(gw, headers={"x-forwarded-for": "7.7.7.7, 10.0.0.1"}).status_code == 429
    assert get(gw, headers={"x-forwarded-for": "10.0.0.2"}).status_code == 200


def test_policies_scoped_by_route_and_path(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    cfg = {
        "policies": [
            {"name": "api", "rate": 1, "period": "1h", "routes": ["api"], "key": ["route", "ip"]},
            {"name": "admin", "rate": 2, "period": "1h", "path_prefixes": ["/web/admin"]},
        ]
    }
    gw = gateway_factory(
        [("rate_limit", cfg)], backend_factory().port, routes=[("api", "/api"), ("web", "/")]
    )
    assert get(gw, "/api/x").status_code == 200
    assert get(gw, "/api/y?q=1").status_code == 429
    for _ in range(4):
        assert get(gw, "/web/public").status_code == 200
    assert [get(gw, "/web/admin/a").status_code for _ in range(3)] == [200, 200, 429]


def fake_store(answers: list[dict[str, Any]]) -> tuple[Handler, list[dict[str, Any]]]:
    """A real HTTP server speaking the store contract of docs/filters/rate_limit.md."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        with lock:
            if method != "POST" or path != "/v1/ratelimit":
                return 404, [], b"{}"
            seen.append(json.loads(body))
            answer = answers[min(len(seen), len(answers)) - 1]
        return 200, [("content-type", "application/json")], json.dumps(answer).encode()

    return handler, seen


def test_global_mode_asks_the_store(gateway_factory: StartGateway, backend_factory: Any) -> None:
    handler, seen = fake_store(
        [
            {"allowed": True, "remaining": 4, "reset_ms": 1500, "retry_after_ms": 0, "limit": 5},
            {
                "allowed": False,
                "remaining": 0,
                "reset_ms": 9000,
                "retry_after_ms": 2500,
                "limit": 5,
            },
        ]
    )
    store: Backend = backend_factory(handler)
    cfg = {
        "mode": "global",
        # Liveness, not speed: the 250 ms default expired under a loaded CI (the filter then
        # fails open and the second request got 200).
        "timeout_ms": 5000,
        "policies": [
            {
                "name": "user",
                "rate": 5,
                "burst": 5,
                "period_ms": 60000,
                "cost": 2,
                "key": ["header:x-user"],
            }
        ],
    }
    gw = gateway_factory(
        [("rate_limit", cfg)], backend_factory().port, clusters={"edgegw.store": store.port}
    )
    r = get(gw, headers={"x-user": "u1"})
    assert r.status_code == 200, gw.log()[-2000:]
    assert r.headers["ratelimit"] == '"user";r=4;t=2'
    assert seen[0] == {
        "key": "edgegw.rl:user:u1",
        "rate": 5,
        "burst": 5,
        "period_ms": 60000,
        "cost": 2,
    }
    r = get(gw, headers={"x-user": "u1"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fail_open", [200, 200, 200]),
        ("fail_closed", [503, 503, 503]),
        ("local", [200, 200, 429]),
    ],
)
def test_store_down_follows_policy(
    gateway_factory: StartGateway, backend_factory: Any, policy: str, expected: list[int]
) -> None:
    dead = backend_factory()
    dead_port = dead.port
    dead.close()  # nothing listens there any more: connect refused
    cfg = {
        "mode": "global",
        "on_store_error": policy,
        "timeout_ms": 1000,
        "policies": [{"name": "ip", "rate": 2, "period": "1h"}],
    }
    gw = gateway_factory(
        [("rate_limit", cfg)], backend_factory().port, clusters={"edgegw.store": dead_port}
    )
    codes = [get(gw).status_code for _ in range(3)]
    assert codes == expected, gw.log()[-2000:]


def test_invalid_config_refuses_to_load(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    with pytest.raises(RuntimeError):
        gateway_factory(
            [("rate_limit", {"policies": [{"name": "x", "rate": 0}]})], backend_factory().port
        )


def test_more_policies_than_the_filter_evaluates_refuse_to_load(
    gateway_factory: StartGateway, backend_factory: Any
) -> None:
    """Each request evaluates at most 16 policies: a 17th is refused with the config, not
    silently dropped (requests would pass a policy that was never checked)."""
    policies = [{"name": f"p{i}", "rate": 100, "period": "1s"} for i in range(17)]
    backend = backend_factory().port
    gw = gateway_factory([("rate_limit", {"policies": policies[:16]})], backend)
    assert get(gw).status_code == 200
    with pytest.raises(RuntimeError) as refused:
        gateway_factory([("rate_limit", {"policies": policies})], backend)
    assert "17 policies, at most 16" in str(refused.value)
