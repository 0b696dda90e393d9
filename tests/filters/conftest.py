"""Fixtures for the filter tests: built filters, loopback backends, an Envoy runner.

Tests take a gateway from `gateway_factory`, so the same test body runs on every host in
HOSTS (Envoy now; edgegw once its wasm host serves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgegw.filterbuild import build_all
from tests.conftest import stop_process
from tests.filters.harness import (
    HOSTS,
    REPO,
    Backend,
    EnvoyProc,
    Handler,
    RunningGateway,
    StartGateway,
    echo_handler,
    start_envoy,
)


class BuiltFilters:
    """name -> .wasm path, building (incrementally) only the filters a test asks for."""

    def __getitem__(self, name: str) -> Path:
        [path] = build_all(
            REPO / "filters", REPO / "filters" / "dist", progress=lambda _m: None, only=[name]
        )
        return path


@pytest.fixture(scope="session")
def filter_wasm() -> BuiltFilters:
    return BuiltFilters()


@pytest.fixture
def backend_factory() -> Iterator[Callable[[Handler], Backend]]:
    made: list[Backend] = []

    def make(handler: Handler = echo_handler) -> Backend:
        b = Backend(handler)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def envoy_factory(tmp_path: Path) -> Iterator[Callable[..., EnvoyProc]]:
    started: list[EnvoyProc] = []

    def make(*args: Any, **kwargs: Any) -> EnvoyProc:
        d = tmp_path / f"envoy{len(started)}"
        d.mkdir()
        e = start_envoy(d, *args, **kwargs)
        started.append(e)
        return e

    yield make
    for e in started:
        stop_process(e.proc)


# Hosts every filter test runs on. edgegw joins this list once edgegw.wasm can serve
# (the same test bodies then run unchanged against it).
@pytest.fixture(params=HOSTS)
def gateway_factory(
    request: pytest.FixtureRequest,
    filter_wasm: BuiltFilters,
    envoy_factory: Callable[..., EnvoyProc],
) -> StartGateway:
    """start(filters=[(name, config)], backend_port=..., clusters={name: port},
    routes=[(route_name, prefix)], trusted_proxies=[cidr]) -> RunningGateway.

    ``trusted_proxies``: edgegw keeps their X-Forwarded-For and appends the peer; Envoy
    gets ``use_remote_address`` (it appends the peer and keeps every client's value)."""

    def start(
        filters: list[tuple[str, Any]],
        backend_port: int,
        clusters: dict[str, int] | None = None,
        routes: list[tuple[str, str]] | None = None,
        trusted_proxies: list[str] | None = None,
    ) -> RunningGateway:
        if request.param == "envoy":
            envoy_routes = None
            if routes:
                envoy_routes = [
                    {"name": n, "match": {"prefix": p}, "route": {"cluster": "backend"}}
                    for n, p in routes
                ]
            e = envoy_factory(
                [(n, filter_wasm[n], c) for n, c in filters],
                backend_port,
                clusters=clusters,
                routes=envoy_routes,
                use_remote_address=bool(trusted_proxies),
            )
            return RunningGateway(e.base_url, "envoy", e.log)
        # edgegw: the same filters, configs and routes in a gateway.yaml.
        run_gateway = request.getfixturevalue("run_gateway")
        upstreams = {"backend": backend_port, **(clusters or {})}
        doc = {
            "backends": {n: {"url": f"http://127.0.0.1:{p}"} for n, p in upstreams.items()},
            # limits.cpu 1s, not the default 50 ms wall-clock deadline: Envoy has none, and
            # on a loaded CPU (make test's parallel workers) jwt_auth's ES384 verification
            # of a valid token overran 50 ms and answered 503. The deadline has its own
            # tests (tests/unit/test_wasm_limits.py, tests/adversarial/test_filter_faults.py).
            "filters": {
                n: {"wasm": str(filter_wasm[n]), "config": c, "limits": {"cpu": "1s"}}
                for n, c in filters
            },
            "routes": [
                {
                    "name": name,
                    "match": {"prefix": prefix},
                    "filters": [n for n, _c in filters],
                    "backend": "backend",
                }
                for name, prefix in (routes or [("default", "/")])
            ],
            "access_log": False,
        }
        if trusted_proxies:
            doc["trusted_proxies"] = trusted_proxies
        try:
            gw = run_gateway(doc)
        except pytest.fail.Exception as exc:  # refused to start, as Envoy would: same signal
            raise RuntimeError(f"edgegw did not start: {exc}") from None
        return RunningGateway(gw.url, "edgegw", gw.output)

    return start
