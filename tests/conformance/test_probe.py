"""Conformance: the same probe module and requests in Envoy and in edgegw must give the
same observations (status, response headers, body, what the backend received)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import HOSTS, StartHost
from tests.filters.harness import Backend, RunningGateway, echo_handler

# Headers that say which proxy answered, not what the filter did.
_SERVER_SPECIFIC = (
    "date",
    "server",
    "x-request-id",
    "via",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "alt-svc",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "user-agent",
    "accept",
    "accept-encoding",
)


def _keep(name: str) -> bool:
    return name not in _SERVER_SPECIFIC and not name.startswith("x-envoy-")


def observe(
    gw: RunningGateway,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    backend_host: bool = False,
) -> dict[str, Any]:
    """What the client got and the backend received; ``backend_host``: with the Host the
    backend got (otherwise left out: it names each proxy's own listener)."""
    r = httpx.request(method, gw.base_url + path, headers=headers, content=body, timeout=10)
    doc: dict[str, Any] = {
        "status": r.status_code,
        "headers": sorted((k, v) for k, v in r.headers.multi_items() if _keep(k)),
    }
    if r.headers.get("content-type") == "application/json":
        # The echo's length depends on the proxy-specific headers it echoes.
        doc["headers"] = [(k, v) for k, v in doc["headers"] if k != "content-length"]
    try:
        sent = r.json()
        doc["backend"] = {
            "method": sent["method"],
            "path": sent["path"],
            "headers": sorted((k, v) for k, v in sent["headers"].items() if _keep(k)),
            "body": sent["body"],
        }
        if backend_host:
            doc["backend"]["host"] = sent["headers"].get("host")
    except (ValueError, KeyError, TypeError):
        doc["body"] = r.text
    return doc


CASES: dict[str, tuple[str, str, list[tuple[str, str]], bytes]] = {
    "headers": (
        "GET",
        "/h?q=1",
        [("x-replace", "old"), ("x-remove", "1"), ("x-multi", "a"), ("x-multi", "b")],
        b"",
    ),
    "rewrite": ("GET", "/orig", [], b""),
    "setpairs": ("GET", "/s", [("x-dropped", "1")], b""),
    "props": ("GET", "/p/q?x=1", [], b""),
    "shared": ("GET", "/", [], b""),
    "queue": ("GET", "/", [], b""),
    "metric": ("GET", "/", [], b""),
    "tick": ("GET", "/", [], b""),
    "local": ("GET", "/", [], b""),
    "callout": ("GET", "/c", [], b""),
    "callout_dead": ("GET", "/c", [], b""),
    "callout_bad": ("GET", "/c", [], b""),
    "callout_noauthority": ("GET", "/c", [], b""),
    "authority": ("GET", "/a", [], b""),
    "body": ("POST", "/b", [("content-type", "text/plain")], b"hello"),
    "respbody": ("GET", "/r", [], b""),
    "resp_local": ("GET", "/", [], b""),
    "status": ("GET", "/", [], b""),
}

# Cases about the Host the backend receives: it is part of their observation.
HOST_CASES = {"authority"}

_envoy_seen: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("case", list(CASES))
def test_probe(case: str, host: str, start_host: StartHost, probe_wasm: Path) -> None:
    backend = Backend(echo_handler)
    try:
        gw = start_host(host, "probe", probe_wasm, {}, backend.port)
        time.sleep(0.1)  # a few of the 20 ms ticks
        method, path, headers, body = CASES[case]
        seen = observe(gw, method, path, [("x-probe", case), *headers], body, case in HOST_CASES)
    finally:
        backend.close()
    if host == "envoy":
        _envoy_seen[case] = seen
        _check_meaningful(case, seen)
    else:
        if case not in _envoy_seen:
            pytest.fail("the Envoy run of this case must come first (run the whole module)")
        assert seen == _envoy_seen[case]


def _check_meaningful(case: str, seen: dict[str, Any]) -> None:
    """What Envoy did must show the probe ran, or the comparison proves nothing."""
    text = repr(seen)
    marks = {
        "headers": "x-added",
        "rewrite": "/rewritten",
        "setpairs": "x-only",
        "props": "x-props",
        "shared": "x-shared",
        "queue": "x-queue",
        "metric": "x-metric-delta",
        "tick": "x-ticked",
        "local": "418",
        "callout": "x-callout-status",
        "callout_dead": "x-callout-status",
        "callout_bad": "x-callout-bad",
        "callout_noauthority": "x-callout-host",
        "authority": "rewritten.example",
        "body": "pre-hello-post",
        "respbody": "rewritten body",
        "resp_local": "403",
        "status": "202",
    }
    assert marks[case] in text, text


def test_probe_logs_reach_both_hosts(start_host: StartHost, probe_wasm: Path) -> None:
    backend = Backend(echo_handler)
    try:
        for host in HOSTS:
            gw = start_host(host, "probe", probe_wasm, {}, backend.port)
            httpx.get(gw.base_url + "/", headers={"x-probe": "log"}, timeout=10)
            deadline = time.monotonic() + 5
            while "probe-log-line visible" not in gw.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "probe-log-line visible" in gw.log(), (host, gw.log()[-2000:])
    finally:
        backend.close()
