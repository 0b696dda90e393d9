"""OpenTelemetry tracing end to end: the gateway in process, real loopback backends,
real proxy-wasm filters (WAT) and a real OTLP/HTTP receiver (tests/otlp.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.tracing.w3c import parse_traceparent
from tests.conftest import LoopbackBackend, free_port
from tests.otlp import Receiver
from tests.wat import proxy_wat, write_wasm

# A filter that pauses its request headers for an http_call to cluster `auth`, then
# continues the request when the answer comes (proxy-wasm ABI 0.2.1).
_CALLER = proxy_wat(
    """(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))""",  # noqa: E501
    r"""(data (i32.const 0) "auth")
  (data (i32.const 16) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\05\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/auth\00:authority\00auth\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $call (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 68)
                      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                      (i32.const 5000) (i32.const 200)))
    i32.const 1)
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $continue (i32.const 0))))""",  # noqa: E501
)


def _seen(backend: LoopbackBackend, index: int = -1) -> dict[str, str]:
    return dict(backend.requests[index]["headers"])


def _app(text: str) -> GatewayApp:
    return GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)


def _api_app(backend: LoopbackBackend, tracing: str) -> GatewayApp:
    """Backend ``api`` behind one route, with ``tracing`` (a YAML flow mapping)."""
    return _app(f"""
version: 1
backends: {{api: "{backend.url}"}}
tracing: {tracing}
routes: [{{name: api, match: {{prefix: /}}, backend: api}}]
""")


def _by_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in spans}


async def test_a_route_with_two_filters_and_a_three_backend_aggregate(
    tmp_path: Path,
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    """1 request span; under it the 2 filter spans (each paused for an http_call), the
    filters' 2 http_call tries and 3 aggregate call spans, each with its try; every
    backend saw the trace id and the span id of its own try in traceparent."""
    auth = backend_factory(name="auth")
    parts = [backend_factory(name=f"b{i}") for i in range(3)]
    wasm = write_wasm(tmp_path, "caller", _CALLER)
    targets = ", ".join(f"{{backend: b{i}, path: /p{i}, group: g{i}}}" for i in range(3))
    app = _app(f"""
version: 1
backends: {{auth: "{auth.url}", b0: "{parts[0].url}", b1: "{parts[1].url}", b2: "{parts[2].url}"}}
filters: {{first: {{wasm: {wasm}}}, second: {{wasm: {wasm}}}}}
tracing: {{otlp_endpoint: "{otlp_receiver.url}", service_name: gw-test}}
routes:
  - {{name: agg, match: {{path: "/agg/{{id}}"}}, filters: [first, second],
     aggregate: {{backends: [{targets}]}}}}
""")
    await app.startup()
    r = await asgi_client(app).get("/agg/7")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"g0", "g1", "g2"}
    otlp_receiver.wait(lambda spans: len(spans) >= 11)
    [server] = [s for s in otlp_receiver.spans if s["kind"] == "server"]
    spans = otlp_receiver.trace(server["trace_id"])
    assert len(spans) == 11
    assert server["parent_id"] == "" and server["service"] == "gw-test"
    assert server["name"] == "GET /agg/{id}"
    attrs = server["attrs"]
    assert attrs["http.request.method"] == "GET" and attrs["url.path"] == "/agg/7"
    assert attrs["http.route"] == "/agg/{id}" and attrs["http.response.status_code"] == 200
    assert attrs["edgegw.route"] == "agg"
    filters = [s for s in spans if s["name"].startswith("filter ")]
    assert sorted(s["attrs"]["edgegw.filter"] for s in filters) == ["first", "second"]
    assert all(s["parent_id"] == server["span_id"] for s in filters)
    assert all(s["attrs"]["edgegw.filter.paused"] is True for s in filters)
    calls = [s for s in spans if s["name"].startswith("aggregate ")]
    assert sorted(s["attrs"]["edgegw.backend"] for s in calls) == ["b0", "b1", "b2"]
    assert all(s["parent_id"] == server["span_id"] for s in calls)
    tries = [s for s in spans if s["kind"] == "client"]
    assert len(tries) == 5
    ids = _by_id(spans)
    for backend in [auth, *parts]:
        for request in backend.requests:
            trace, parent, flags = parse_traceparent(
                dict(request["headers"])["traceparent"].encode()
            ) or (0, 0, 0)
            assert f"{trace:032x}" == server["trace_id"] and flags == 1
            attempt = ids[f"{parent:016x}"]  # the backend's parent: the try's span
            assert attempt["kind"] == "client"
            assert attempt["attrs"]["edgegw.backend"] == backend.name
            assert attempt["attrs"]["server.address"] == "127.0.0.1"
            assert attempt["attrs"]["http.response.status_code"] == 200
            if backend is auth:
                assert attempt["parent_id"] == server["span_id"]
            else:
                assert ids[attempt["parent_id"]]["name"] == f"aggregate {backend.name}"
    assert len(auth.requests) == 2


async def test_a_trusted_client_trace_is_continued(
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    backend = backend_factory()
    app = _api_app(backend, f'{{otlp_endpoint: "{otlp_receiver.url}"}}')
    client = asgi_client(app)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await client.get("/x", headers={"traceparent": parent, "tracestate": "vendor=v1"})
    assert r.status_code == 200
    seen = _seen(backend)
    assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert not seen["traceparent"].endswith("b7ad6b7169203331-01")  # our try's span id
    assert seen["tracestate"] == "vendor=v1"
    otlp_receiver.wait(lambda spans: len(spans) >= 2)
    spans = otlp_receiver.trace("0af7651916cd43dd8448eb211c80319c")
    [server] = [s for s in spans if s["kind"] == "server"]
    assert server["parent_id"] == "b7ad6b7169203331"
    [attempt] = [s for s in spans if s["kind"] == "client"]
    assert seen["traceparent"] == f"00-{server['trace_id']}-{attempt['span_id']}-01"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # valid but untrusted
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
    ],
)
async def test_an_untrusted_or_invalid_traceparent_starts_a_new_trace(
    traceparent: str,
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    backend = backend_factory()
    trust = "false" if traceparent.endswith("331-01") and traceparent[3] == "0" else "true"
    app = _api_app(backend, f'{{otlp_endpoint: "{otlp_receiver.url}", trust_incoming: {trust}}}')
    r = await asgi_client(app).get("/x", headers={"traceparent": traceparent, "tracestate": "a=b"})
    assert r.status_code == 200
    sent = _seen(backend)
    assert "0af7651916cd43dd8448eb211c80319c" not in sent["traceparent"].lower()
    assert "tracestate" not in sent
    assert parse_traceparent(sent["traceparent"].encode()) is not None


async def test_errors_are_exported_when_not_sampled(
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    """sample_ratio 0: an answered request is not exported (the backend is told
    not-sampled); a 502 is, and its problem+json body names its trace."""
    backend = backend_factory()
    app = _app(f"""
version: 1
backends: {{api: "{backend.url}", gone: "http://127.0.0.1:{free_port()}"}}
tracing: {{otlp_endpoint: "{otlp_receiver.url}", sample_ratio: 0}}
routes:
  - {{name: api, match: {{prefix: /ok}}, backend: api}}
  - {{name: gone, match: {{prefix: /gone}}, backend: gone}}
""")
    client = asgi_client(app)
    assert (await client.get("/ok")).status_code == 200
    quiet = _seen(backend)["traceparent"]
    assert quiet.endswith("-00")  # not sampled, told to the backend
    r = await client.get("/gone")
    assert r.status_code == 502
    trace_id = r.json()["trace_id"]
    otlp_receiver.wait(lambda spans: any(s["trace_id"] == trace_id for s in spans))
    otlp_receiver.wait(lambda spans: len(otlp_receiver.trace(trace_id)) == 2)
    server, attempt = sorted(otlp_receiver.trace(trace_id), key=lambda s: s["kind"] != "server")
    assert server["status"] == 2 and server["attrs"]["http.response.status_code"] == 502
    assert attempt["status"] == 2 and attempt["attrs"]["error.type"] == "UpstreamUnreachable"
    # FIFO export: the 200's trace would have gone out before the 502's.
    assert not otlp_receiver.trace(quiet.split("-")[1])


async def test_sample_ratio_samples_about_that_share(
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    backend = backend_factory()
    app = _api_app(backend, f'{{otlp_endpoint: "{otlp_receiver.url}", sample_ratio: 0.5}}')
    client = asgi_client(app)
    for _ in range(200):
        assert (await client.get("/x")).status_code == 200
    flags = [dict(r["headers"])["traceparent"][-2:] for r in backend.requests]
    sampled = flags.count("01")
    assert 50 < sampled < 150  # binomial(200, 0.5): outside this is ~1e-12
    otlp_receiver.wait(lambda spans: len(spans) >= 2 * sampled)
    await asyncio.sleep(1.5)  # one more export period: nothing else comes
    assert len(otlp_receiver.spans) == 2 * sampled


async def test_a_dead_collector_costs_only_a_counter(
    monkeypatch: pytest.MonkeyPatch,
    backend_factory: Callable[..., LoopbackBackend],
    asgi_client: Callable[..., Any],
) -> None:
    """The collector's port is closed: every request is answered as without tracing,
    and the spans the collector did not take are counted."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    backend = backend_factory()
    app = _api_app(backend, f'{{otlp_endpoint: "http://127.0.0.1:{free_port()}"}}')

    def failed() -> float:
        value = REGISTRY.get_sample_value("edgegw_tracing_spans_total", {"outcome": "failed"})
        return value or 0.0

    before = failed()
    client = asgi_client(app)
    for _ in range(20):
        assert (await client.get("/x")).status_code == 200
    await app.pipeline.aclose()  # flushes: the export fails within its timeout
    assert failed() - before == 40  # 20 request spans + 20 tries


async def test_a_retried_request_has_one_span_per_try(
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    asgi_client: Callable[..., Any],
) -> None:
    """A backend answering 503 is tried again (retry.on: 5xx): two client spans, the
    second with http.request.resend_count 1; each try told the backend its own span."""
    backend = backend_factory(status=503)
    app = _app(f"""
version: 1
backends:
  api: {{url: "{backend.url}", retry: {{attempts: 2, on: [5xx], backoff: {{base: 1ms, max: 1ms}}}}}}
tracing: {{otlp_endpoint: "{otlp_receiver.url}"}}
routes: [{{name: api, match: {{prefix: /}}, backend: api}}]
""")
    r = await asgi_client(app).get("/x")
    assert r.status_code == 503 and len(backend.requests) == 2
    otlp_receiver.wait(lambda spans: len(spans) >= 3)
    [server] = [s for s in otlp_receiver.spans if s["kind"] == "server"]
    tries = sorted((s for s in otlp_receiver.spans if s["kind"] == "client"),
                   key=lambda s: s["start"])  # fmt: skip
    assert [t["attrs"].get("http.request.resend_count", 0) for t in tries] == [0, 1]
    assert all(t["parent_id"] == server["span_id"] and t["status"] == 2 for t in tries)
    told = [dict(r["headers"])["traceparent"].split("-")[2] for r in backend.requests]
    assert told == [t["span_id"] for t in tries]
    assert server["status"] == 2  # a 5xx answer: the request span is an error


def test_served_concurrent_requests_keep_their_own_traces(
    backend_factory: Callable[..., LoopbackBackend],
    otlp_receiver: Receiver,
    run_gateway: Callable[..., Any],
) -> None:
    """Under granian, requests overlapping at a slow backend each send their own trace
    id upstream (the current span is per request), and the spans reach the collector
    from the worker process."""
    backend = backend_factory(delay=0.3)
    gw = run_gateway({
        "backends": {"api": backend.url},
        "tracing": {"otlp_endpoint": otlp_receiver.url},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "backend": "api"}],
    })  # fmt: skip
    ids = [f"{i + 1:032x}" for i in range(8)]

    def get(trace_id: str) -> int:
        headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        return httpx.get(f"{gw.url}/x", headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(get, ids)) == [200] * 8
    assert sorted(dict(r["headers"])["traceparent"].split("-")[1] for r in backend.requests) == ids
    otlp_receiver.wait(lambda spans: len(spans) >= 16)
    for trace_id in ids:
        spans = otlp_receiver.trace(trace_id)
        [server] = [s for s in spans if s["kind"] == "server"]
        [attempt] = [s for s in spans if s["kind"] == "client"]
        assert attempt["parent_id"] == server["span_id"]
        assert server["parent_id"] == "00f067aa0ba902b7"


async def test_without_tracing_nothing_is_added(
    backend_factory: Callable[..., LoopbackBackend], asgi_client: Callable[..., Any]
) -> None:
    """Off: no tracer, a client's trace headers pass through untouched, none is added
    when absent, and error bodies carry no trace id."""
    backend = backend_factory()
    app = _app(f"""
version: 1
backends: {{api: "{backend.url}", gone: "http://127.0.0.1:{free_port()}"}}
routes:
  - {{name: api, match: {{prefix: /ok}}, backend: api}}
  - {{name: gone, match: {{prefix: /gone}}, backend: gone}}
""")
    assert app.pipeline.tracer is None
    client = asgi_client(app)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert (await client.get("/ok", headers={"traceparent": parent})).status_code == 200
    assert _seen(backend)["traceparent"] == parent
    assert (await client.get("/ok")).status_code == 200
    assert "traceparent" not in _seen(backend)
    r = await client.get("/gone")
    assert r.status_code == 502 and "trace_id" not in r.json()
