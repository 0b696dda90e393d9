"""Secure by default: no admin API reachable from other hosts without a token."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgegw.config import open_admin_refusal, parse_config
from edgegw.server import _warn_open_admin
from tests.conftest import REPO, free_port


def gateway_yaml(tmp_path: Path, admin: dict[str, object]) -> Path:
    path = tmp_path / "gateway.yaml"
    doc = {"version": 1, "listen": f"127.0.0.1:{free_port()}", "admin": admin}
    path.write_text(yaml.safe_dump(doc))
    return path


def edgegw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgegw", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["serve", "check"])
def test_open_admin_without_token_is_refused(command: str, tmp_path: Path) -> None:
    # Refused before anything binds: the process exits at once, the port never opens.
    path = gateway_yaml(tmp_path, {"listen": f"0.0.0.0:{free_port()}"})
    done = edgegw(command, "-c", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not a loopback address and admin.token is not set" in done.stderr
    assert "admin.allow_open: true" in done.stderr  # says how to override


def test_open_admin_with_token_or_allow_open_passes_check(tmp_path: Path) -> None:
    port = free_port()
    for admin in (
        {"listen": f"0.0.0.0:{port}", "token": "s3cret"},
        {"listen": f"0.0.0.0:{port}", "allow_open": True},
    ):
        done = edgegw("check", "-c", str(gateway_yaml(tmp_path, admin)))
        assert (done.returncode, done.stdout.strip()) == (0, "OK"), done.stderr


@pytest.mark.parametrize(
    ("listen", "refused"),
    [
        ("127.0.0.1:9901", False),
        ("127.0.0.2:9901", False),
        ("[::1]:9901", False),
        ("localhost:9901", False),
        (":9901", True),  # all interfaces
        ("0.0.0.0:9901", True),
        ("[::]:9901", True),
        ("10.1.2.3:9901", True),
        ("admin.internal:9901", True),  # a name could resolve anywhere
    ],
)
def test_which_addresses_need_a_token(listen: str, refused: bool) -> None:
    bare = parse_config(f"version: 1\nadmin: {{listen: '{listen}'}}\n")
    assert (open_admin_refusal(bare.admin) is not None) == refused
    with_token = parse_config(f"version: 1\nadmin: {{listen: '{listen}', token: t}}\n")
    assert open_admin_refusal(with_token.admin) is None


def test_allow_open_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config("version: 1\nadmin: {listen: '0.0.0.0:9901', allow_open: true}\n")
    assert config.admin.allow_open and open_admin_refusal(config.admin) is None
    with caplog.at_level(logging.WARNING, logger="edgegw.server"):
        _warn_open_admin(config)
    assert any("NO TOKEN" in r.getMessage() for r in caplog.records), caplog.records
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgegw.server"):
        _warn_open_admin(parse_config("version: 1\nadmin: {listen: '127.0.0.1:9901'}\n"))
    assert caplog.records == []
