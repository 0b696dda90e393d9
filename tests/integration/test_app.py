"""The app in a real granian worker: bodies stream both ways with flat memory."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.conftest import GatewayProcess, LoopbackBackend, LoopThread

MiB = 1024 * 1024
SIZE = 200 * MiB


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for {pid}")


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in map(int, children):
            out += [child, *_descendants(child)]
    return out


@pytest.fixture
def streaming_backend() -> Iterator[tuple[str, dict[str, str]]]:
    """GET /big streams SIZE bytes; POST /sink reads a body chunk by chunk."""
    seen: dict[str, str] = {}

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.content_length = SIZE
        await resp.prepare(request)
        chunk = b"\xab" * MiB
        for _ in range(SIZE // MiB):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def sink(request: web.Request) -> web.Response:
        digest, total = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
        seen["sha256"], seen["bytes"] = digest.hexdigest(), str(total)
        return web.json_response({"bytes": total})

    loop = LoopThread()
    app = web.Application(client_max_size=SIZE * 2)
    app.router.add_get("/big", big)
    app.router.add_post("/sink", sink)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = loop.run(start())
    yield f"http://127.0.0.1:{port}", seen
    loop.run(runner.cleanup())
    loop.close()


def _worker(gw: GatewayProcess) -> int:
    # Besides the worker, spawn starts a small resource-tracker process: take the largest.
    return max(_descendants(gw.proc.pid), key=lambda pid: _vm_kib(pid, "VmRSS"))


def test_200mb_response_and_upload_stream_with_flat_memory(
    run_gateway: Callable[..., GatewayProcess],
    streaming_backend: tuple[str, dict[str, str]],
) -> None:
    url, seen = streaming_backend
    gw = run_gateway(
        {
            "backends": {"files": {"url": url, "timeout": "30s"}},
            "limits": {"max_request_body": "1GiB"},
            "routes": [{"name": "files", "match": {"prefix": "/"}, "backend": "files"}],
            "access_log": False,
        }
    )
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        client.get("/big", headers={"range": "bytes=0-0"}).close()  # warm up the worker
        worker = _worker(gw)
        baseline = _vm_kib(worker, "VmRSS")

        received = 0
        with client.stream("GET", "/big") as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(SIZE)
            for chunk in r.iter_raw():
                received += len(chunk)
        assert received == SIZE

        digest = hashlib.sha256()

        def upload() -> Iterator[bytes]:
            block = bytes(range(256)) * 4096  # 1 MiB
            for _ in range(SIZE // MiB):
                digest.update(block)
                yield block

        r = client.post("/sink", content=upload())
        assert r.status_code == 200, r.text
        assert r.json() == {"bytes": SIZE}
        assert seen["sha256"] == digest.hexdigest()

    # VmHWM is the worker's peak RSS: 400 MiB passed through, the peak grew far less.
    growth_mib = (_vm_kib(worker, "VmHWM") - baseline) / 1024
    assert growth_mib < 64, f"worker peak RSS grew by {growth_mib:.0f} MiB"
    assert gw.stop(signal.SIGTERM) == 0, gw.output()


def test_hypercorn_http2_body_without_content_length(
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend]
) -> None:
    """h2c (prior knowledge) to hypercorn: a streamed body has no Content-Length."""
    api = backend_factory()
    gw = run_gateway(
        {
            "server": "hypercorn",
            "admin": None,
            "backends": {"api": {"url": api.url}},
            "routes": [{"name": "api", "match": {"prefix": "/"}, "backend": "api"}],
            "access_log": False,
        }
    )

    def body() -> Iterator[bytes]:
        yield b"hello "
        yield b"h2"

    with httpx.Client(base_url=gw.url, http1=False, http2=True, timeout=30) as client:
        r = client.post("/up", content=body())
        assert (r.http_version, r.status_code) == ("HTTP/2", 200)
        assert r.json()["body"] == "hello h2"
        r = client.get("/down")
        assert r.status_code == 200 and r.json()["body"] == ""
    assert gw.stop(signal.SIGTERM) == 0, gw.output()
