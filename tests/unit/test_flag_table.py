"""Flag edits land in THE host-wide table the workers map, never in a private one, and a
late writer of an older memory:// version does not replace a newer one. Both are what
lets the request after an edit see it with no poll in between
(tests/integration/test_flag_propagation.py has the whole path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.store.base import FlagSnapshot
from edgegw.store.mirror import FLAGS_KEY, mirror_flags
from edgegw.wasm._native import Table
from edgegw.wasm.shared import SHARED_DATA
from tests.conftest import REPO

# The supervisor's order (edgegw/server.py): runtime dir exported, then the import that
# reaches create_table (it maps shared data: no file yet), then the table, then the
# admin listener's store answering a PUT.
SUPERVISOR = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    os.environ["EDGEGW_RUNTIME_DIR"] = sys.argv[1]
    from edgegw.wasm.shm import create_table
    from edgegw.model import SharedDataConfig
    create_table(Path(sys.argv[1]), SharedDataConfig())
    from edgegw.store.memory import host_memory_store
    store = host_memory_store(Path(sys.argv[1]) / "flags.json")
    print(asyncio.run(store.put_flag("fresh", True)))
""")


def test_the_supervisor_writes_flags_into_the_workers_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEGW_RUNTIME_DIR"}
    run = subprocess.run([sys.executable, "-c", SUPERVISOR, str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    # What a worker maps: the file. Before, the supervisor wrote into the private table
    # its first import had mapped, and workers saw edits only at their next poll of the
    # flags file.
    found = Table(str(tmp_path / "shared_data"), create=False).get(FLAGS_KEY)
    assert found is not None
    assert json.loads(found[0]) == {"version": int(run.stdout), "flags": {"fresh": True}}


@pytest.fixture
def private_table() -> Iterator[Table]:
    """SHARED_DATA on a table of this test's own, given back after."""
    before = SHARED_DATA.table
    table = Table(None, 1 << 20, 100, True)
    SHARED_DATA.use(table)
    try:
        yield table
    finally:
        SHARED_DATA.use(before)


def _version(table: Table) -> int:
    found = table.get(FLAGS_KEY)
    assert found is not None
    return int(json.loads(found[0])["version"])


def test_an_older_memory_version_never_replaces_a_newer_one(private_table: Table) -> None:
    mirror_flags(FlagSnapshot(3, {"a": True}), newer_only=True)
    mirror_flags(FlagSnapshot(2, {}), newer_only=True)  # a worker's poll, read before v3
    assert _version(private_table) == 3
    mirror_flags(FlagSnapshot(4, {"a": False}), newer_only=True)
    assert _version(private_table) == 4
    # Redis' versions restart with an emptied Redis: its mirror writes what it is sent.
    mirror_flags(FlagSnapshot(1, {}))
    assert _version(private_table) == 1
