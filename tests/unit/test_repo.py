"""The repository stands alone: installs come from the lock, docs cite only the repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _uv() -> str:
    uv = REPO / ".venv" / "uv" / "bin" / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: `make install` puts it in .venv/uv/bin")
    return found


def test_lock_matches_pyproject() -> None:
    """uv.lock was resolved from today's pyproject.toml (else `make lock`)."""
    done = subprocess.run(
        [_uv(), "lock", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_lock_check_notices_drift(tmp_path: Path) -> None:
    """The check above can fail: a pyproject asking for a dependency the lock lacks."""
    for name in ("pyproject.toml", "uv.lock", "setup.py", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('    "PyYAML>=6",', '    "PyYAML>=6",\n    "six>=1",', 1))
    done = subprocess.run(
        [_uv(), "lock", "--check", "--offline"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0


def test_nothing_cites_files_outside_the_repository() -> None:
    """A clone has no ../shared/: docs and code cite docs/ instead."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    needles = ("../shared", "DESIGN.md", "PROXY_WASM_NOTES")
    offenders = [
        name
        for name in tracked
        if REPO / name != Path(__file__).resolve()
        and (REPO / name).is_file()
        and any(n in (REPO / name).read_text(errors="ignore") for n in needles)
    ]
    assert offenders == []
