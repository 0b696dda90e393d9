"""gateway.yaml.example against the demo services, in a real gateway process: every
demo route and all four filters work as README's `make run` promises."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import jwt
import yaml

from edgegw.demo import DEMO_ISSUER, DEMO_JWT_SECRET, DemoServices, demo_token
from tests.conftest import REPO, GatewayProcess, LoopThread, free_port

BACKEND_PORTS = {"users": 9001, "orders": 9002, "recommendations": 9003, "shop-v1": 9004,
                 "shop-v2": 9005}  # fmt: skip


def test_demo_token_is_a_valid_hs256_jwt() -> None:
    claims = jwt.decode(demo_token("7"), DEMO_JWT_SECRET, ["HS256"], audience="demo",
                        issuer=DEMO_ISSUER)  # fmt: skip
    assert claims["sub"] == "7" and "profile" in claims["scope"]


def test_example_config_serves_the_demo(run_gateway: Callable[..., GatewayProcess]) -> None:
    loop = LoopThread()
    demo = DemoServices(host="127.0.0.1", base_port=0)
    ports = loop.run(demo.start())
    try:
        text = (REPO / "gateway.yaml.example").read_text()
        for name, port in BACKEND_PORTS.items():  # the demo runs on free ports here
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{ports[name]}")
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
        text = text.replace("127.0.0.1:9901", f"127.0.0.1:{free_port()}")
        text = text.replace("filters/dist/", f"{REPO}/filters/dist/")
        gw = run_gateway(text)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            r = client.get("/users/42", headers={"x-country-code": "DE"})
            assert r.status_code == 200 and r.json()["service"] == "users"
            assert r.json()["headers"]["x-edgegw-currency"] == "EUR"  # geo
            assert "ratelimit-policy" in r.headers  # rate_limit
            r = client.get("/shop/cart", headers={"x-user-id": "7"})
            assert r.json()["version"] in ("v1", "v2")  # ab + split
            assert r.json()["headers"]["x-edgegw-variant"] in ("A", "B")
            assert client.get("/account/users/42").status_code == 401  # jwt
            tok = demo_token("42")
            r = client.get("/account/users/42", headers={"authorization": f"Bearer {tok}"})
            assert r.status_code == 200, r.text
            seen = r.json()["headers"]
            assert seen["x-user-id"] == "42"
            assert "new-ui=" in seen["x-edgegw-flags"]
            claims = json.loads(base64.urlsafe_b64decode(seen["x-edgegw-claims"] + "=="))
            assert claims["plan"] == "pro"
            r = client.get("/api/profile/42", headers={"x-user-id": "666"})
            assert r.status_code == 200
            assert set(r.json()) >= {"user", "orders"}  # aggregate
            # x-user-id is the jwt filter's output: a client's is removed before routing.
            assert "x-user-id" not in r.json()["user"]["headers"]
        admin = yaml.safe_load(text)["admin"]["listen"]
        flags = httpx.get(f"http://{admin}/admin/flags", timeout=10).json()
        assert flags["flags"]["new-ui"] == {"enabled": True, "rollout": 25}  # seeded
    finally:
        loop.run(demo.stop())
        loop.close()
