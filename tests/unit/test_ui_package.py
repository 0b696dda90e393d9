"""The admin UI's files ship in the wheel: pyproject's package-data globs cover each."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch

from tests.conftest import REPO


def test_every_ui_file_is_package_data() -> None:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = doc["tool"]["setuptools"]["package-data"]["edgegw"]
    static = REPO / "edgegw" / "ui" / "static"
    files = [p.relative_to(REPO / "edgegw").as_posix() for p in static.iterdir()]
    assert files
    missing = [f for f in files if not any(fnmatch(f, g) for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
