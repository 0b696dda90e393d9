"""What the container image runs, run outside a container: deploy/entrypoint.sh as an
unprivileged user (uid 10001 when the tests run as root, as in the image) for whom only
the runtime dir is writable, as with the image's read-only root filesystem."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, LoopbackBackend, free_port, wait_port

ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
IMAGE_UID = 10001  # deploy/Containerfile: USER 10001:10001
POLICY = {"name": "all", "rate": 1000, "period": "1s", "key": ["ip"]}


def unprivileged() -> list[str]:
    """The command prefix that drops to the image's user (nothing when not root).

    It keeps one capability, CAP_DAC_READ_SEARCH (read and traverse anything, write
    nothing more): this checkout's interpreter may live in a folder only root can enter,
    as /root/.pyenv does here, where the image has it in /usr.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root"
    caps = "-all,+dac_read_search"
    return [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}"]  # fmt: skip


def owned_by_image_user(*folders: str) -> set[Path]:
    """Files the image's user owns in world-writable folders: what it would have written
    on the image's read-only root filesystem, where it cannot."""
    found: set[Path] = set()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                try:
                    if path.lstat().st_uid == IMAGE_UID:
                        found.add(path)
                except OSError:
                    continue  # removed meanwhile
    return found


@dataclass
class Layout:
    """A root owned by root (read-only for the gateway) with the image's paths in it."""

    root: Path
    etc: Path  # /etc/edgegw
    run: Path  # /run/edgegw: the one writable folder
    admin_port: int

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "PYTHONDONTWRITEBYTECODE": "1",
            "EDGEGW_CONFIG_FILE": str(self.etc / "gateway.yaml"),
            "EDGEGW_RUNTIME_DIR": str(self.run),
            "EDGEGW_CACHE_DIR": str(self.run / "wasm-cache"),
            "EDGEGW_HEALTH_URL": f"http://127.0.0.1:{self.admin_port}/healthz",
            **extra,
        }

    def entrypoint(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*unprivileged(), str(ENTRYPOINT), *args],
            env=self.env(**env), cwd="/", capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if not p.is_relative_to(self.run)}


@pytest.fixture
def layout(backend_factory: Callable[..., LoopbackBackend]) -> Iterator[Layout]:
    # Not under pytest's tmp_path: its parents are private to root.
    root = Path(tempfile.mkdtemp(prefix="edgegw-image-"))
    root.chmod(0o755)
    etc, run = root / "etc" / "edgegw", root / "run" / "edgegw"
    etc.mkdir(parents=True)
    run.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(run, IMAGE_UID, IMAGE_UID)
    backend = backend_factory(name="api")
    admin_port = free_port()
    doc = {
        "version": 1,
        "listen": f"127.0.0.1:{free_port()}",
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "${EDGEGW_ADMIN_TOKEN}"},
        "access_log": False,
        "backends": {"api": backend.url},
        "filters": {  # a bundled filter: compiled once, cached in the runtime dir
            "ratelimit": {
                "wasm": str(REPO / "filters" / "dist" / "rate_limit.wasm"),
                "config": {"mode": "local", "policies": [POLICY]},
            }
        },
        "routes": [
            {"name": "api", "match": {"prefix": "/"}, "filters": ["ratelimit"], "backend": "api"}
        ],
    }
    (etc / "gateway.yaml").write_text(yaml.safe_dump(doc))
    yield Layout(root, etc, run, admin_port)
    shutil.rmtree(root, ignore_errors=True)


def test_serve_as_the_image_user_with_only_the_runtime_dir_writable(layout: Layout) -> None:
    before = layout.files()
    writable = ("/tmp", "/var/tmp")
    strays = owned_by_image_user(*writable)
    config = yaml.safe_load((layout.etc / "gateway.yaml").read_text())
    port = int(config["listen"].rsplit(":", 1)[1])
    log = layout.root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*unprivileged(), str(ENTRYPOINT)],  # the image's CMD: serve
            env=layout.env(EDGEGW_ADMIN_TOKEN="t0ken"), cwd="/", stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        for p in (port, layout.admin_port):
            assert wait_port("127.0.0.1", p, deadline), log.read_text()
        r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10)
        assert r.status_code == 200, r.text
        assert layout.entrypoint("healthcheck").returncode == 0
        status = httpx.get(
            f"http://127.0.0.1:{layout.admin_port}/admin/status",
            headers={"authorization": "Bearer t0ken"}, timeout=10,
        ).json()  # fmt: skip
        assert status["workers"] and status["workers"][0]["last_result"] == "ok"
        # The gateway wrote its state and the compiled filter in the runtime dir only.
        assert list((layout.run / "wasm-cache").glob("*.cwasm")), log.read_text()
        assert list(layout.run.glob("status-*.json"))
        assert layout.files() == before | {log}
        assert owned_by_image_user(*writable) - strays <= set(layout.run.rglob("*"))
        if os.geteuid() == 0:
            assert (layout.run / "wasm-cache").stat().st_uid == IMAGE_UID
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = layout.entrypoint("healthcheck")
    assert done.returncode == 1 and "healthcheck" in done.stderr


def test_check_command(layout: Layout) -> None:
    done = layout.entrypoint("check", EDGEGW_ADMIN_TOKEN="t0ken")
    assert (done.returncode, done.stdout.strip()) == (0, "OK"), done.stderr


def test_missing_config_is_named(layout: Layout) -> None:
    missing = layout.etc / "nope.yaml"
    done = layout.entrypoint("serve", EDGEGW_CONFIG_FILE=str(missing))
    assert done.returncode == 2
    assert f"no readable config at {missing}" in done.stderr


def test_unwritable_runtime_dir_is_named(layout: Layout) -> None:
    # Where the gateway cannot write, as on the image's read-only root without the tmpfs.
    target = layout.etc / "run" if os.geteuid() == 0 else Path("/proc/edgegw-run")
    done = layout.entrypoint("serve", EDGEGW_RUNTIME_DIR=str(target))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{target} is not writable" in done.stderr and "tmpfs" in done.stderr
    assert not target.exists()


def test_other_commands_run_as_given(layout: Layout) -> None:
    done = layout.entrypoint("edgegw", "--version")
    assert done.returncode == 0 and done.stdout.startswith("edgegw ")
