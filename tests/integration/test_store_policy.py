"""One policy for a store outage, tried as a user would: the rate_limit filter's
``on_store_error`` holds when ``store.on_error`` is not set, and ``edgegw check`` warns
when a store policy set on purpose overrides a filter's."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from edgegw.cli import EXIT_OK, main
from tests.conftest import GatewayProcess, LoopbackBackend, free_port, start_redis
from tests.integration.test_replicas import rate_limited


def test_filter_fail_closed_alone_holds_when_redis_is_killed(
    run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
    tmp_path: Path,
) -> None:
    port = free_port()
    redis = start_redis(tmp_path / "redis", port)
    config = rate_limited(backend_factory(), f"redis://127.0.0.1:{port}/0",
                          f"t{uuid.uuid4().hex[:8]}", burst=1000, on_error=None)  # fmt: skip
    assert "on_error" not in config["store"]
    gw = run_gateway(config)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/a").status_code == 200
        redis.kill()
        redis.wait()
        statuses = [client.get("/a").status_code for _ in range(10)]
    # Before: the store's default fail_open answered "allowed, degraded": 200s, unlimited.
    assert statuses == [503] * 10


@pytest.mark.parametrize(
    ("store_policy", "filter_policy", "warned"),
    [
        ("fail_open", "fail_closed", True),
        ("local", "fail_open", True),
        ("fail_open", "fail_open", False),
        ("fail_closed", "fail_open", False),  # the store answers 503: the filter decides
        (None, "fail_closed", False),
    ],
)
def test_check_warns_when_store_and_filter_policies_disagree(
    store_policy: str | None,
    filter_policy: str,
    warned: bool,
    backend_factory: Callable[..., LoopbackBackend],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = rate_limited(backend_factory(), "redis://127.0.0.1:1/0", "p", burst=10,
                          on_store_error=filter_policy, on_error=store_policy)  # fmt: skip
    config["version"] = 1
    config["listen"] = f"127.0.0.1:{free_port()}"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == EXIT_OK
    out = capsys.readouterr()
    assert out.out.strip() == "OK"
    if warned:
        want = f"{path}: warning: store.on_error: {store_policy} overrides filters.limit."
        assert out.err.startswith(f"{want}on_store_error: {filter_policy}"), out.err
    else:
        assert out.err == ""
