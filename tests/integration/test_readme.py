"""Every command of the README's "Using it" block exists and its first steps work as typed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _using_it_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Using it", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split(" #", 1)[0].strip() for line in block.group(1).splitlines()]


def test_every_readme_subcommand_exists() -> None:
    commands = [c for c in _using_it_commands() if c.startswith("edgegw ")]
    assert len(commands) >= 5
    for command in commands:
        for sub in command.split()[1].split("|"):
            done = subprocess.run(
                [sys.executable, "-m", "edgegw", sub, "--help"],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, f"{command}: {done.stderr}"


def test_readme_copy_then_check_as_typed(tmp_path: Path) -> None:
    """`cp gateway.yaml.example gateway.yaml` then `edgegw check -c gateway.yaml`."""
    commands = _using_it_commands()
    assert "cp gateway.yaml.example gateway.yaml" in commands
    assert "edgegw check -c gateway.yaml" in commands
    shutil.copy(REPO / "gateway.yaml.example", tmp_path / "gateway.yaml")
    for rel in ("filters/dist",):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).symlink_to(REPO / rel)
    done = subprocess.run(
        [sys.executable, "-m", "edgegw", "check", "-c", "gateway.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
