"""Hot reload of a gateway.yaml mounted from a Kubernetes ConfigMap.

kubelet never edits a mounted file: it writes a new ``..<timestamp>`` folder, points a
temporary symlink ``..data_tmp`` at it, renames that over ``..data`` (one atomic rename)
and deletes the previous folder. ``gateway.yaml`` itself is a symlink to
``..data/gateway.yaml`` that never changes. This reproduces that layout and sequence
exactly (kubernetes pkg/volume/util/atomic_writer.go) around a real gateway.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import GatewayProcess, LoopbackBackend
from tests.integration.test_reload import config, status, wait_generation

RunGateway = Callable[..., GatewayProcess]


class ConfigMapVolume:
    """A folder laid out as kubelet lays out a ConfigMap volume with one key."""

    def __init__(self, root: Path, key: str) -> None:
        self.root, self.key = root, key
        self.serial = 0
        self.current = self._write_version(b"")
        (root / "..data").symlink_to(self.current.name)
        (root / key).symlink_to(f"..data/{key}")

    def _write_version(self, content: bytes) -> Path:
        self.serial += 1
        folder = self.root / time.strftime(f"..%Y_%m_%d_%H_%M_%S.{self.serial:09d}")
        folder.mkdir()
        (folder / self.key).write_bytes(content)
        return folder

    def update(self, doc: dict[str, Any]) -> None:
        """kubelet's atomic update: new folder, ``..data`` swapped by rename, old removed."""
        new = self._write_version(yaml.safe_dump(doc).encode())
        (self.root / "..data_tmp").symlink_to(new.name)
        os.rename(self.root / "..data_tmp", self.root / "..data")
        shutil.rmtree(self.current)
        self.current = new


def served_by(gw: GatewayProcess) -> str:
    backend: str = httpx.get(gw.url + "/x", timeout=5).json()["backend"]
    return backend


def test_configmap_symlink_swaps_reload_and_later_reloads_work(
    run_gateway: RunGateway, backend_factory: Callable[..., LoopbackBackend], tmp_path: Path
) -> None:
    a, b = backend_factory(name="a"), backend_factory(name="b")
    doc = config(a, b, "a")
    # run_gateway writes its first config to tmp_path/gateway0.yaml: make that the
    # ConfigMap key, so the fixture's write goes through the symlinks into the version folder.
    volume = ConfigMapVolume(tmp_path, "gateway0.yaml")
    gw = run_gateway(doc)
    assert gw.config_path == tmp_path / "gateway0.yaml" and gw.config_path.is_symlink()
    assert gw.config_path.resolve().parent == volume.current
    wait_generation(gw, 1)
    assert served_by(gw) == "a"

    # Two updates in a row: each is seen by the file watch, each one's folder is deleted.
    for generation, target in ((2, "b"), (3, "a")):
        volume.update({**doc, "routes": [{**doc["routes"][0], "backend": target}]})
        worker = wait_generation(gw, generation)
        assert worker["last_result"] == "ok", worker
        assert served_by(gw) == target

    # Explicit reloads after the swaps read the current file, not a deleted one.
    volume.update({**doc, "routes": [{**doc["routes"][0], "backend": "b"}]})
    r = httpx.post(gw.admin_url + "/admin/reload", timeout=40)
    assert r.status_code == 200, r.text
    wait_generation(gw, 4)
    assert served_by(gw) == "b"

    before = status(gw)["workers"][0]["request_seen"]
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while status(gw)["workers"][0]["request_seen"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = status(gw)["workers"][0]
    assert worker["request_seen"] != before, gw.output()
    assert worker["last_result"] == "unchanged", worker
    assert "No such file" not in gw.output()


def test_symlinks_on_follows_relative_absolute_and_parent_links(tmp_path: Path) -> None:
    from edgegw.reload import symlinks_on

    (tmp_path / "cm").mkdir()
    volume = ConfigMapVolume(tmp_path / "cm", "gateway.yaml")
    assert symlinks_on(tmp_path / "cm" / "gateway.yaml") == {
        tmp_path / "cm" / "gateway.yaml",
        tmp_path / "cm" / "..data",
    }
    # An absolute link to the mounted key, and a link whose target climbs with "..".
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gateway.yaml").symlink_to(tmp_path / "cm" / "gateway.yaml")
    (tmp_path / "etc" / "up.yaml").symlink_to("../cm/gateway.yaml")
    expected = {tmp_path / "cm" / "gateway.yaml", tmp_path / "cm" / "..data"}
    assert symlinks_on(tmp_path / "etc" / "gateway.yaml") == expected | {
        tmp_path / "etc" / "gateway.yaml"
    }
    assert symlinks_on(tmp_path / "etc" / "up.yaml") == expected | {tmp_path / "etc" / "up.yaml"}
    assert symlinks_on(volume.current / "gateway.yaml") == set()  # a plain file
    # A loop ends (bounded like the kernel's resolution) instead of hanging.
    (tmp_path / "loop").symlink_to("loop")
    assert symlinks_on(tmp_path / "loop") == {tmp_path / "loop"}
