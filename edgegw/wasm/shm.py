"""Where the host-wide shared data table lives (the table itself: edgegw/wasm/native/shm.c).

The supervisor creates it in the runtime directory before its workers start; each worker
maps that file when edgegw.wasm.shared is imported. Without a runtime directory (one
process: embedding, in-process tests) the table is an anonymous mapping.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgegw.model import SharedDataConfig
from edgegw.wasm._native import Table

ENV_RUNTIME_DIR = "EDGEGW_RUNTIME_DIR"
TABLE_FILE = "shared_data"
QUEUE_SOCKETS = "queues"  # wakeup sockets of shared queues, one per worker (shared.py)


def create_table(runtime_dir: Path, config: SharedDataConfig) -> Table:
    """A fresh table for this run (Envoy's shared data does not outlive its process
    either); ``gateway.yaml`` ``shared_data:`` sizes it."""
    # Built aside and renamed into place: a process still mapping an older table (a
    # previous run with the same EDGEGW_RUNTIME_DIR) keeps its file instead of seeing it
    # truncated under its mapping (SIGBUS).
    fresh = runtime_dir / f".{TABLE_FILE}.{os.getpid()}"
    table = Table(str(fresh), config.max_bytes, config.max_keys, True)
    os.replace(fresh, runtime_dir / TABLE_FILE)
    # The creating process (the supervisor) imported edgegw.wasm.shared to reach this
    # module, and that import mapped a private table (the file did not exist yet): its
    # shared data, which the admin listener's store writes (memory:// flag edits, the
    # /store API's buckets), must be this table, which the workers map.
    from edgegw.wasm.shared import SHARED_DATA

    SHARED_DATA.use(table)
    return table


def open_table() -> tuple[Table, Path | None]:
    """This process's view of the table, and the runtime directory when it is shared."""
    runtime = os.environ.get(ENV_RUNTIME_DIR)
    if runtime and (Path(runtime) / TABLE_FILE).is_file():
        return Table(str(Path(runtime) / TABLE_FILE), create=False), Path(runtime)
    default = SharedDataConfig()
    return Table(None, default.max_bytes, default.max_keys, True), None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the owner of a queue, the holder of a lease)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
