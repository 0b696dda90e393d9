"""redis+cluster:// and redis+sentinel:// against real redis-server processes: a
one-node Redis Cluster, and a master watched by one Sentinel."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.model import StoreConfig
from edgegw.store.redis import RedisStore
from tests.conftest import _unavailable, free_port, stop_process, wait_port


def _server(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        _unavailable("redis-server not found on PATH")
        raise AssertionError("unreachable")
    with (workdir / f"{uuid.uuid4().hex[:6]}.log").open("wb") as log:
        return subprocess.Popen([exe, *args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def _cli(port: int, *args: str) -> str:
    exe = shutil.which("redis-cli") or "redis-cli"
    out = subprocess.run([exe, "-p", str(port), *args], capture_output=True, text=True, timeout=10)
    return out.stdout


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no port pair free for a cluster node")


@pytest.fixture
def cluster_url(tmp_path: Path) -> Iterator[str]:
    port = _cluster_port()
    proc = _server(tmp_path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--cluster-enabled", "yes",
                   "--cluster-config-file", f"nodes-{port}.conf")  # fmt: skip
    try:
        assert wait_port("127.0.0.1", port, time.monotonic() + 15)
        _cli(port, "cluster", "addslotsrange", "0", "16383")
        deadline = time.monotonic() + 15
        while "cluster_state:ok" not in _cli(port, "cluster", "info"):
            assert time.monotonic() < deadline, "the one-node cluster never became ok"
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    master, sentinel = free_port(), free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\nsentinel monitor edge 127.0.0.1 {master} 1\n"
    )
    procs = [
        _server(tmp_path, "--port", str(master), "--bind", "127.0.0.1", "--save", ""),
        _server(tmp_path, str(conf), "--sentinel"),
    ]
    try:
        for port in (master, sentinel):
            assert wait_port("127.0.0.1", port, time.monotonic() + 15)
        yield f"redis+sentinel://127.0.0.1:{sentinel}/edge/0"
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.mark.parametrize("topology", ["cluster_url", "sentinel_url"])
async def test_limits_and_flags_work_on_every_topology(
    topology: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(topology)
    config = StoreConfig(url=url, prefix=f"t{uuid.uuid4().hex[:6]}", timeout=2.0)
    stores = [RedisStore(config) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(stores[i % 3].rate_limit("k", 1, 20, 3_600_000, 1) for i in range(60))
        )
        assert sum(r.allowed for r in results) == 20  # exact, as on one server
        seen: list[int] = []
        got = asyncio.Event()

        def listener(snapshot: object) -> None:
            seen.append(snapshot.version)  # type: ignore[attr-defined]
            got.set()

        stores[1].subscribe(listener)
        await asyncio.wait_for(got.wait(), 10)
        version = await stores[0].put_flag("beta", {"rollout": 10})
        async with asyncio.timeout(5):
            while not seen or seen[-1] < version:
                got.clear()
                await got.wait()
        assert (await stores[2].get_flags()).flags == {"beta": {"rollout": 10}}
    finally:
        for store in stores:
            await store.aclose()
