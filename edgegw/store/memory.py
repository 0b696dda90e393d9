"""``memory://``: the embedded store of one process.

Rate-limit buckets live in the host-wide shared-data table when the gateway has one
(every worker of a host counts together: edgegw/store/hostwide.py), else in this
process; keys the table cannot take are counted here. Flags are shared by the processes
of one gateway (supervisor and workers) through a JSON file in the runtime directory,
written atomically and polled, so an edit through the admin port reaches every worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from edgegw.promise import Promise
from edgegw.store.base import FlagListener, FlagSnapshot, RateDecision, gcra, validate_flag
from edgegw.store.hostwide import SharedBuckets, host_table
from edgegw.store.mirror import mirror_flags

log = logging.getLogger("edgegw.store")
POLL_SECONDS = 0.05
_MAX_KEYS = 100_000  # bound memory: expired buckets are swept past this many


class MemoryStore:
    versions_only_grow = True  # one flags file per gateway run (edgegw/store/mirror.py)

    def __init__(self, flags_file: Path | None = None, shared: SharedBuckets | None = None) -> None:
        self._shared = shared
        self._tats: dict[str, int] = {}
        self._flags = FlagSnapshot(0, {})
        self._file = flags_file
        self._mtime = -1.0
        self._listeners: list[FlagListener] = []
        self._task: asyncio.Task[None] | None = None
        self._read_file()

    def rate_limit(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> Awaitable[RateDecision]:
        return Promise.resolved(self.decide(key, rate, burst, period_ms, cost))

    def decide(self, key: str, rate: int, burst: int, period_ms: int, cost: int) -> RateDecision:
        if self._shared is not None:
            shared = self._shared.rate_limit(key, rate, burst, period_ms, cost)
            if shared is not None:
                return shared
        now = time.time_ns() // 1000
        decision, tat = gcra(self._tats.get(key, 0), now, rate, burst, period_ms, cost)
        if decision.allowed and cost:
            if key not in self._tats and len(self._tats) >= _MAX_KEYS:
                self._make_room(now)
            self._tats[key] = tat
        return decision

    def _make_room(self, now: int) -> None:
        # Expired buckets first; if keys are still too many (clients can choose keys),
        # drop the oldest tenth (dicts keep insertion order), so a sweep is rare.
        self._tats = {k: v for k, v in self._tats.items() if v > now}
        excess = len(self._tats) - _MAX_KEYS * 9 // 10
        if excess > 0:
            for stale in list(itertools.islice(self._tats, excess)):
                del self._tats[stale]

    # --- flags ---------------------------------------------------------------------------

    async def get_flags(self) -> FlagSnapshot:
        self._read_file()
        return self._flags

    async def put_flag(self, name: str, definition: Any) -> int:
        validate_flag(name, definition)
        self._read_file()
        return self._write({**self._flags.flags, name: definition})

    async def delete_flag(self, name: str) -> int | None:
        self._read_file()
        if name not in self._flags.flags:
            return None
        return self._write({k: v for k, v in self._flags.flags.items() if k != name})

    async def seed_flags(self, flags: dict[str, Any]) -> None:
        self._read_file()
        missing = {k: v for k, v in flags.items() if k not in self._flags.flags}
        if missing:
            for name, definition in missing.items():
                validate_flag(name, definition)
            self._write({**self._flags.flags, **missing})

    def _write(self, flags: dict[str, Any]) -> int:
        snapshot = FlagSnapshot(self._flags.version + 1, flags)
        if self._file is not None:
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot.as_json()))
            tmp.replace(self._file)
            self._mtime = self._file.stat().st_mtime
        self._flags = snapshot
        if self._shared is not None:
            # Host-wide shared data is this host's flag mirror: written here, every worker
            # sees the edit at once instead of at its next poll of the file.
            mirror_flags(snapshot, newer_only=True)
        self._notify()
        return snapshot.version

    def _read_file(self) -> bool:
        if self._file is None:
            return False
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._mtime:
                return False
            doc = json.loads(self._file.read_text())
            snapshot = FlagSnapshot(int(doc["version"]), dict(doc["flags"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self._mtime = mtime
        if snapshot.version != self._flags.version:
            self._flags = snapshot
            return True
        return False

    def subscribe(self, listener: FlagListener) -> None:
        self._listeners.append(listener)
        asyncio.get_running_loop().call_soon(listener, self._flags)
        if self._file is not None and self._task is None:
            self._task = asyncio.ensure_future(self._poll())

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self._flags)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self._read_file():
                self._notify()

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def host_memory_store(flags_file: Path | None = None) -> MemoryStore:
    """A memory store counting in the host-wide table when this gateway has one."""
    table = host_table()
    return MemoryStore(flags_file, SharedBuckets(table) if table is not None else None)
