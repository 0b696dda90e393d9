"""Operations through a real gateway process: what /readyz, /metrics, the logs and the
request id tell an operator (docs/operations.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import GatewayProcess, LoopbackBackend, free_port, start_redis, stop_process

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]


def metric(gw: GatewayProcess, name: str, **labels: str) -> float | None:
    """The value of one sample on the admin port's /metrics (None when absent)."""
    body = httpx.get(gw.admin_url + "/metrics", timeout=5).text
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        got, _, rest = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if got == name and found == labels:
            return float(value)
    return None


def wait_for(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_readyz_and_metrics_agree_that_memory_store_is_up(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    api = backend_factory()
    gw = run_gateway(
        {
            "backends": {"api": api.url},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "api"}],
        },
        "--workers",
        "2",
    )
    assert httpx.get(gw.url + "/x", timeout=5).status_code == 200  # workers are serving
    ready = httpx.get(gw.admin_url + "/readyz", timeout=5).json()
    assert ready["store"] == "up"
    assert metric(gw, "edgegw_store_up") == 1.0


def test_a_redis_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    port = free_port()
    redis = start_redis(tmp_path / "redis", port)
    try:
        api = backend_factory()
        gw = run_gateway(
            {
                "backends": {"api": api.url},
                "store": {"url": f"redis://127.0.0.1:{port}/0", "timeout": "200ms"},
                "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "api"}],
            },
            "--workers",
            "2",
        )
        assert httpx.get(gw.url + "/x", timeout=5).status_code == 200
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 1.0)

        def count(text: str) -> int:
            return gw.output().count(text)

        stop_process(redis)
        assert wait_for(lambda: count("flag subscription lost") >= 2), gw.output()
        # The gauge of the workers (whose subscriptions failed) is the lowest.
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 0.0)
        time.sleep(3)  # several retries (backoff 0.1 s doubling) while Redis stays down
        assert httpx.get(gw.url + "/x", timeout=5).status_code == 200  # traffic goes on
        redis = start_redis(tmp_path / "redis", port)
        assert wait_for(lambda: count("flag subscription restored") >= 2, 20), gw.output()
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 1.0)
        assert httpx.get(gw.admin_url + "/readyz", timeout=5).json()["store"] == "up"
        time.sleep(0.5)  # a late duplicate line would show up now
        assert (count("flag subscription lost"), count("flag subscription restored")) == (2, 2)
        assert count("WARNING edgegw.store: flag subscription lost") == 2
    finally:
        stop_process(redis)


def test_every_upstream_call_is_timed_by_backend_and_outcome(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    fast = backend_factory(name="fast")
    slow = backend_factory(name="slow", delay=3.0)
    reset = backend_factory(name="reset", fail_connection=True)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    gw = run_gateway(
        {
            "backends": {
                "fast": fast.url,
                "slow": {"url": slow.url, "timeout": "200ms"},
                "reset": reset.url,
                "dead": dead,
            },
            "routes": [
                {
                    "name": "agg",
                    "match": {"path": "/agg"},
                    "aggregate": {
                        "backends": [
                            {"backend": "fast", "path": "/a"},
                            {
                                "backend": "slow",
                                "path": "/b",
                                "timeout": "200ms",
                                "required": False,
                                "group": "late",
                            },
                        ]
                    },
                },
                *(
                    {"name": name, "match": {"prefix": f"/{name}"}, "backend": name}
                    for name in ("fast", "slow", "reset", "dead")
                ),
            ],
        }
    )
    answers = {
        path: httpx.get(gw.url + path, timeout=10).status_code
        for path in ("/agg", "/fast", "/slow", "/reset", "/dead")
    }
    assert answers == {"/agg": 200, "/fast": 200, "/slow": 504, "/reset": 502, "/dead": 502}
    want = {
        ("fast", "ok"): 2.0,  # one fan-out call, one proxied
        ("slow", "timeout"): 2.0,  # one fan-out call, one proxied
        ("reset", "reset"): 1.0,
        ("dead", "connect_error"): 1.0,
    }

    def counts() -> dict[tuple[str, str], float | None]:
        name = "edgegw_upstream_duration_seconds_count"
        return {key: metric(gw, name, backend=key[0], outcome=key[1]) for key in want}

    assert wait_for(lambda: counts() == want), counts()  # batched: within about 1 s
