"""Rate-limit counters and feature flags: ``memory://`` (one gateway) or ``redis://``."""

from __future__ import annotations

import os
from pathlib import Path

from edgegw.model import StoreConfig
from edgegw.store.base import FlagSnapshot, RateDecision, Store
from edgegw.store.memory import MemoryStore, host_memory_store

FLAGS_FILE = "flags.json"


def open_store(config: StoreConfig, runtime_dir: Path | None = None) -> Store:
    """The store of ``config``. memory:// shares its flag table with the other processes
    of this gateway through ``runtime_dir`` (default: ``$EDGEGW_RUNTIME_DIR``)."""
    if config.url.startswith("memory:"):
        if runtime_dir is None and os.environ.get("EDGEGW_RUNTIME_DIR"):
            runtime_dir = Path(os.environ["EDGEGW_RUNTIME_DIR"])
        return host_memory_store(runtime_dir / FLAGS_FILE if runtime_dir is not None else None)
    from edgegw.store.redis import RedisStore

    return RedisStore(config)


__all__ = ["FlagSnapshot", "MemoryStore", "RateDecision", "Store", "open_store"]
