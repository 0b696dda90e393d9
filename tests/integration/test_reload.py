"""Hot reload of gateway.yaml in a real gateway under bounded load: nothing fails."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import GatewayProcess, LoopbackBackend, free_port

RunGateway = Callable[..., GatewayProcess]


def config(a: LoopbackBackend, b: LoopbackBackend, target: str) -> dict[str, Any]:
    return {
        "version": 1,
        "listen": f"127.0.0.1:{free_port()}",
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "access_log": False,
        "backends": {"a": a.url, "b": b.url},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": target}],
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)  # as editors do: a new file replaces the old one


def status(gw: GatewayProcess) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(gw.admin_url + "/admin/status", timeout=5).json()
    return doc


def wait_generation(gw: GatewayProcess, generation: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = status(gw)["workers"]
        if workers and all(w["generation"] >= generation for w in workers):
            return workers[0]  # type: ignore[no-any-return]
        time.sleep(0.02)
    pytest.fail(f"no worker reached generation {generation}: {status(gw)}\n{gw.output()}")


def serving(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> tuple[dict[str, Any], GatewayProcess]:
    """A gateway over backends ``a`` and ``b`` routing to ``a``, its first config loaded;
    its config document (to edit) and the process."""
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    gw = run_gateway(doc)
    wait_generation(gw, 1)
    return doc, gw


class Load:
    """A few client threads sending requests until stopped; records every answer."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        # (status, backend, when the request was sent)
        self.answers: list[tuple[int, str, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and len(self.answers) < 20000:
                try:
                    sent = time.monotonic()
                    r = client.get("/x")
                    self.answers.append((r.status_code, r.json().get("backend", "?"), sent))
                except (httpx.HTTPError, ValueError) as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_route_edits_under_load_drop_nothing(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend], tmp_path: Path
) -> None:
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    gw = run_gateway(doc)
    path = gw.config_path
    generation = wait_generation(gw, 1)["generation"]
    with Load(gw.url) as load:
        for i in range(20):
            target = "b" if i % 2 == 0 else "a"
            write(path, {**doc, "routes": [{**doc["routes"][0], "backend": target}]})
            generation += 1
            wait_generation(gw, generation)
            # A request sent before the swap may still answer from the old route: judge
            # only those sent once the worker reported the new generation.
            swapped = time.monotonic()
            deadline = swapped + 10
            while time.monotonic() < deadline and not any(
                sent >= swapped for _, _, sent in load.answers[-10:]
            ):
                time.sleep(0.01)
            after = [backend for _, backend, sent in load.answers if sent >= swapped]
            assert after and set(after) == {target}  # the new route serves
    assert load.errors == []
    assert load.answers and all(status == 200 for status, _, _ in load.answers)
    assert {backend for _, backend, _ in load.answers} == {"a", "b"}


def test_broken_yaml_is_rejected_and_old_config_keeps_serving(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    doc, gw = serving(run_gateway, backend_factory)
    gw.config_path.write_text(
        yaml.safe_dump({**doc, "routes": [{**doc["routes"][0], "backend": "nope"}]})
    )
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 422, r.text
    assert "unknown backend 'nope'" in r.json()["detail"]
    worker = status(gw)["workers"][0]
    assert worker["generation"] == 1 and worker["last_result"] == "error"
    assert httpx.get(gw.url + "/x", timeout=5).json()["backend"] == "a"

    write(gw.config_path, {**doc, "routes": [{**doc["routes"][0], "backend": "b"}]})
    wait_generation(gw, 2)
    assert httpx.get(gw.url + "/x", timeout=5).json()["backend"] == "b"


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_sighup_and_admin_reload(
    server: str, run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = {**config(a, b, "a"), "server": server}
    gw = run_gateway(doc)
    wait_generation(gw, 1)
    # An in-place write (no rename) is seen as well.
    edited = {**doc, "routes": [{**doc["routes"][0], "backend": "b"}]}
    gw.config_path.write_text(yaml.safe_dump(edited))
    wait_generation(gw, 2)
    assert httpx.get(gw.url + "/x", timeout=5).json()["backend"] == "b"
    before = status(gw)["workers"][0]["request_seen"]
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while status(gw)["workers"][0]["request_seen"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = status(gw)["workers"][0]
    assert worker["request_seen"] != before, gw.output()  # the worker acted on SIGHUP
    assert gw.proc.poll() is None, gw.output()  # SIGHUP reloads, it never stops the gateway
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 200, r.text
    assert r.json()["workers"][0]["last_result"] == "unchanged"
    assert httpx.get(gw.url + "/x", timeout=5).json()["backend"] == "b"


def test_filter_swaps_and_route_edits_under_load(
    run_gateway: RunGateway,
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    built = test_wasm("trivial").read_bytes()
    assert built.count(b"trivial-AAAA") == 1
    versions = {"A": built, "B": built.replace(b"trivial-AAAA", b"trivial-BBBB")}
    wasm = tmp_path / "trivial.wasm"
    wasm.write_bytes(versions["A"])
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    doc["filters"] = {"marker": {"wasm": str(wasm)}}
    doc["routes"][0]["filters"] = ["marker"]
    gw = run_gateway(doc)
    generation = wait_generation(gw, 1)["generation"]
    marks: list[tuple[str, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            while not stop.is_set() and len(marks) < 50000:
                try:
                    r = client.get("/x")
                    sent = dict((k, v) for k, v in r.json()["headers"])
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    marks.append((sent.get("x-trivial", ""), r.headers.get("x-trivial", "")))
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(50):
            tmp = wasm.with_suffix(".new")
            tmp.write_bytes(versions["B" if i % 2 == 0 else "A"])
            tmp.replace(wasm)  # an atomic drop-in, as a deploy script does
            generation += 1
            wait_generation(gw, generation)
            if i % 5 == 4:  # 10 route edits interleaved with the swaps ...
                doc["routes"][0]["backend"] = "b" if doc["routes"][0]["backend"] == "a" else "a"
                write(gw.config_path, doc)
                generation += 1
                wait_generation(gw, generation)
        for _ in range(10):  # ... and 10 more on their own
            doc["routes"][0]["backend"] = "b" if doc["routes"][0]["backend"] == "a" else "a"
            write(gw.config_path, doc)
            generation += 1
            wait_generation(gw, generation)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert len(marks) > 100
    # Each request saw one VM from its request headers to its response headers.
    mixed = [m for m in marks if m[0] != m[1]]
    assert mixed == []
    assert {m[0] for m in marks} == {"trivial-AAAA", "trivial-BBBB"}


def test_broken_wasm_is_rejected_and_old_filter_keeps_serving(
    run_gateway: RunGateway,
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    wasm = tmp_path / "trivial.wasm"
    wasm.write_bytes(test_wasm("trivial").read_bytes())
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    doc["filters"] = {"marker": {"wasm": str(wasm)}}
    doc["routes"][0]["filters"] = ["marker"]
    gw = run_gateway(doc)
    wait_generation(gw, 1)
    tmp = wasm.with_suffix(".new")
    tmp.write_bytes(b"\0asm\x01\0\0\0garbage")
    tmp.replace(wasm)
    deadline = time.monotonic() + 20
    while status(gw)["workers"][0]["last_result"] != "error" and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = status(gw)["workers"][0]
    assert worker["last_result"] == "error" and "marker" in worker["last_error"]
    assert worker["generation"] == 1
    r = httpx.get(gw.url + "/x", timeout=5)
    assert (r.status_code, r.headers["x-trivial"]) == (200, "trivial-AAAA")


def test_reload_with_two_workers(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    gw = run_gateway(doc, "--workers", "2")
    deadline = time.monotonic() + 20
    while len(status(gw)["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(status(gw)["workers"]) == 2
    write(gw.config_path, {**doc, "routes": [{**doc["routes"][0], "backend": "b"}]})
    wait_generation(gw, 2)  # every worker reloads on its own
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        answers = {
            client.get("/x", headers={"connection": "close"}).json()["backend"] for _ in range(10)
        }
    assert answers == {"b"}
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 200, r.text
    assert len(r.json()["workers"]) == 2


def test_fixing_a_rejected_file_back_to_the_running_config_is_logged(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    _, gw = serving(run_gateway, backend_factory)
    good = gw.config_path.read_text()
    gw.config_path.write_text("version: 1\nroutes: [")  # broken YAML
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 422, r.text
    gw.config_path.write_text(good)  # the running config again: nothing to swap
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 200, r.text
    worker = status(gw)["workers"][0]
    assert (worker["generation"], worker["last_result"]) == (1, "unchanged")
    deadline = time.monotonic() + 10
    while "config valid again" not in gw.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = gw.output().splitlines()
    rejected = [i for i, line in enumerate(lines) if "rejected, the previous config" in line]
    valid = [i for i, line in enumerate(lines) if "config valid again" in line]
    assert rejected and valid, gw.output()
    assert "INFO edgegw.reload: reload (" in lines[valid[0]]
    assert valid[0] > rejected[-1]


def test_admin_config_shows_the_reloaded_config(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend]
) -> None:
    # /admin/config (and the admin UI reading it) showed the config the supervisor started
    # with, whatever the workers had reloaded since.
    doc, gw = serving(run_gateway, backend_factory)
    listen = doc["listen"]
    edited = {
        **doc,
        "listen": f"127.0.0.1:{free_port()}",  # only a restart changes it
        "routes": [*doc["routes"], {"name": "new", "match": {"prefix": "/new"}, "backend": "b"}],
    }
    write(gw.config_path, edited)
    wait_generation(gw, 2)
    shown = httpx.get(gw.admin_url + "/admin/config", timeout=5).json()
    assert [r["name"] for r in shown["routes"]] == ["r", "new"]
    assert f"{shown['listen']['host']}:{shown['listen']['port']}" == listen  # still in effect
