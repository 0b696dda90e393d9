"""The admin UI in a real browser: Debian's chromium (``make system-deps`` installs it)
driven by Playwright, against a real ``edgegw serve`` of gateway.yaml.example with its
backends on loopback. A missing chromium fails the suite: it never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (
    REPO,
    GatewayProcess,
    LoopbackBackend,
    LoopThread,
    free_port,
    wait_port,
)

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "ui-test-token-0123456789"
#: Set to a folder (docs/img) to save each view's screenshot there.
SHOTS = os.environ.get("EDGEGW_UI_SCREENSHOTS", "")


# Module scope, not session: while Playwright's sync API is open, its event loop counts as
# running in this thread, so every asyncio test that ran after tests/ui in the same
# process failed with "Runner.run() cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: the tests run as root in a container, where Chromium's sandbox
        # cannot start; the page is our own admin UI on loopback.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    # Uncaught exceptions and Content-Security-Policy refusals fail the test.
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    pg.on("console", lambda m: problems.append(m.text) if "Refused to" in m.text else None)
    yield pg
    context.close()
    assert not problems, problems


def shot(pg: Any, name: str) -> None:
    if SHOTS:
        pg.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"))


class ExampleGateway:
    """gateway.yaml.example served by ``edgegw serve`` (two workers: the UI shows their
    sum), its backends loopback echo servers, its filters copies that a test may break."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loops = LoopThread()
        doc = yaml.safe_load((REPO / "gateway.yaml.example").read_text())
        self.route_names = [r["name"] for r in doc["routes"]]
        self.backends: dict[str, LoopbackBackend] = {}
        for name, spec in doc["backends"].items():
            backend = LoopbackBackend(name=name)
            self.loops.run(backend.start())
            self.backends[name] = backend
            spec["url"] = backend.url
        (root / "filters").mkdir()
        for spec in doc["filters"].values():
            copy = root / "filters" / Path(spec["wasm"]).name
            shutil.copyfile(REPO / spec["wasm"], copy)
            spec["wasm"] = str(copy)
        self.port, admin_port = free_port(), free_port()
        doc.update(listen=f"127.0.0.1:{self.port}", workers=2)
        doc["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN}
        doc["store"]["url"] = "memory://"
        self.config_path = root / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.log_path = root / "gateway.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(
            ("EDGEGW_RUNTIME_DIR", "EDGEGW_CONFIG", "PROMETHEUS_MULTIPROC_DIR"))}  # fmt: skip
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgegw", "serve", "-c", str(self.config_path)],
                cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.gw = GatewayProcess(proc, self.config_path, self.log_path, "127.0.0.1",
                                 self.port, admin_port)  # fmt: skip
        deadline = time.monotonic() + 90
        for port in (self.port, admin_port):
            if not wait_port("127.0.0.1", port, deadline):
                self.close()
                pytest.fail(f"gateway did not start:\n{self.log_path.read_text()}")

    @property
    def url(self) -> str:
        return self.gw.url

    @property
    def admin_url(self) -> str:
        return self.gw.admin_url

    def close(self) -> None:
        self.gw.stop()
        for backend in self.backends.values():
            self.loops.run(backend.stop())
        self.loops.close()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleGateway]:
    gateway = ExampleGateway(tmp_path_factory.mktemp("ui"))
    try:
        yield gateway
    finally:
        gateway.close()
