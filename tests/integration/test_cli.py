"""The edgegw command line and the demo services."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from edgegw import __version__
from edgegw.cli import EXIT_CONFIG, main
from edgegw.demo import SERVICES, DemoServices
from tests.conftest import REPO

VALID = textwrap.dedent("""\
    version: 1
    listen: 127.0.0.1:18080
    backends:
      users: {url: "http://127.0.0.1:9001"}
    routes:
      - name: users
        match: {prefix: /users}
        backend: users
""")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgegw", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"edgegw {__version__}"


def test_no_command_is_a_usage_error() -> None:
    done = run_cli()
    assert done.returncode == 2
    assert "usage: edgegw" in done.stderr


def test_check_valid(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID)
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK"


def test_check_reports_every_problem_with_file_path_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    bad = VALID.replace("backend: users", "backend: nope") + "bogus_key: 1\n"
    path.write_text(bad)
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 2, err
    assert all(line.startswith(f"{path}: ") for line in err), err
    backend_line = next(line for line in err if "routes[0].backend" in line)
    assert "nope" in backend_line
    assert "(line 8)" in backend_line
    assert any("bogus_key" in line for line in err), err


def test_check_shows_a_yaml_slip_with_file_line_column_caret_and_hint(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID.replace("    match: {prefix: /users}", "     match: {prefix: /users}"))
    done = run_cli("check", "-c", str(path))
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.splitlines() == [
        f"{path}:7:11: invalid YAML: mapping values are not allowed here",
        "         match: {prefix: /users}",
        "              ^",
        "    hint: check the indentation of this line and the one above,"
        " or quote a value holding ': '",
    ]


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(path) in err


def test_serve_refuses_invalid_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(VALID.replace("backend: users", "backend: nope"))
    done = run_cli("serve", "-c", str(path))
    assert done.returncode == EXIT_CONFIG
    assert "routes[0].backend" in done.stderr


def test_filters_build_hook_reports_unknown_filter() -> None:
    done = run_cli("filters", "build", "no_such_filter_xyz")
    assert done.returncode == 1
    assert "no_such_filter_xyz" in done.stderr


async def test_demo_services_answer() -> None:
    demo = DemoServices(host="127.0.0.1", base_port=0)
    ports = await demo.start()
    try:
        assert sorted(ports) == sorted(SERVICES)
        hdrs = {"x-edgegw-variant": "B", "x-request-id": "r1", "cookie": "not-echoed"}
        async with aiohttp.ClientSession(headers=hdrs) as s:

            async def get(name: str, path: str) -> dict[str, object]:
                async with s.get(f"http://127.0.0.1:{ports[name]}{path}") as resp:
                    assert resp.status == 200, await resp.text()
                    doc: dict[str, object] = await resp.json()
                    return doc

            user = await get("users", "/users/42")
            assert (user["service"], user["id"]) == ("users", "42")
            assert user["headers"] == {"x-edgegw-variant": "B", "x-request-id": "r1"}
            orders = await get("orders", "/orders?user=42")
            assert orders["user"] == "42" and isinstance(orders["orders"], list)
            reco = await get("recommendations", "/recommendations?user=42")
            assert isinstance(reco["items"], list) and len(reco["items"]) == 3
            v1 = await get("shop-v1", "/shop/cart?x=1")
            v2 = await get("shop-v2", "/shop/cart?x=1")
            assert (v1["version"], v2["version"]) == ("v1", "v2")
            assert v1["path"] == "/shop/cart?x=1"
            async with s.get(f"http://127.0.0.1:{ports['orders']}/orders") as resp:
                assert resp.status == 400
    finally:
        await demo.stop()


def test_check_refuses_a_filter_that_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "junk.wasm").write_bytes(b"not wasm at all")
    (tmp_path / "gateway.yaml").write_text("version: 1\nfilters:\n  junk: {wasm: junk.wasm}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgegw", "check", "-c", str(tmp_path / "gateway.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == EXIT_CONFIG
    assert "filters.junk: not a valid wasm module" in proc.stderr
