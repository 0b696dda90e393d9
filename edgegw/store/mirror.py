"""Shared data ``edgegw.flags`` (read by filters/ab_flags on every request) kept equal to
the store's flag table by ONE process per host.

Shared data is host-wide (edgegw/wasm/native/shm.c), so one writer suffices: the worker that
holds the mirror lease (an entry of the store's namespace of the table naming its pid)
subscribes to the store and writes every new snapshot the moment it arrives; the other
workers hold no subscription (no Redis pub/sub connection each) and check every
``LEASE_CHECK_SECONDS`` whether the holder is still alive, the first to see it gone
taking over (compare-and-swap on the lease, as shared queues change owner). A new holder
reads the whole table when it subscribes, so no edit made meanwhile is lost.

Without a host-wide table (one process: embedding, tests) this process mirrors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from typing import Any

from edgegw.errors import StoreError
from edgegw.store.base import FlagSnapshot
from edgegw.store.hostwide import NS_STORE, host_table
from edgegw.wasm._native import Table
from edgegw.wasm.shm import pid_alive

log = logging.getLogger("edgegw.store")
FLAGS_KEY = b"edgegw.flags"
LEASE_KEY = b"flags-mirror"
LEASE_CHECK_SECONDS = 1.0
_PID = struct.Struct("<I")
_OK, _CAS_MISMATCH = 0, 8


def mirror_flags(snapshot: FlagSnapshot, newer_only: bool = False) -> None:
    """Write ``snapshot`` to shared data ``edgegw.flags``. A store that never held a
    flag (version 0) leaves the key absent, so filters use the flags of their own
    config, as they do in Envoy.

    ``newer_only``: leave a newer version in place (compare-and-swap on the key), for a
    store with several writers on one host whose versions never go back (memory://: the
    process answering a PUT writes the edit while a worker's poll of the flags file may
    still be writing the version before it). A Redis store's versions restart with an
    emptied Redis, and its one mirror per host writes in the order Redis published."""
    from edgegw.wasm.shared import SHARED_DATA

    if snapshot.version == 0:
        return
    value = json.dumps(snapshot.as_json()).encode()
    if not newer_only:
        SHARED_DATA.set(FLAGS_KEY, value, 0)
        return
    while True:
        current = SHARED_DATA.get(FLAGS_KEY)
        if current is not None and _version(current[0]) >= snapshot.version:
            return
        # cas 0 sets always: an absent key has no cas to compare with.
        if SHARED_DATA.set(FLAGS_KEY, value, current[1] if current else 0) != _CAS_MISMATCH:
            return


def _version(value: bytes) -> int:
    try:
        version = json.loads(value)["version"]
    except (ValueError, TypeError, KeyError):
        return -1
    return version if isinstance(version, int) else -1


class FlagMirror:
    """Mirrors ``store``'s flags into shared data when this process holds the lease."""

    def __init__(self, store: Any, table: Table | None = None) -> None:
        self._store = store
        self._table = table if table is not None else host_table()
        self._task: asyncio.Task[None] | None = None
        self.holding = False
        # A store whose versions only grow (memory://) says so; see mirror_flags.
        self._newer_only = bool(getattr(store, "versions_only_grow", False))

    async def start(self) -> None:
        """Mirror now, or watch the holder. Either way the flags are in shared data
        before this returns (startup, before the first request), if the store answers."""
        from edgegw.wasm.shared import SHARED_DATA

        if SHARED_DATA.get(FLAGS_KEY) is None:
            try:
                mirror_flags(await self._store.get_flags(), self._newer_only)
            except StoreError as exc:  # the subscription reads them once the store is back
                log.warning("cannot read flags now: %s", exc)
        if self._table is None or self._try_claim():
            self._hold()
        else:
            self._task = asyncio.ensure_future(self._watch())

    def _hold(self) -> None:
        self.holding = True
        self._store.subscribe(self._mirror)

    def _mirror(self, snapshot: FlagSnapshot) -> None:
        mirror_flags(snapshot, self._newer_only)

    def _try_claim(self) -> bool:
        assert self._table is not None
        me = os.getpid()
        while True:
            current = self._table.nsget(NS_STORE, LEASE_KEY)
            if current is not None:
                holder = _PID.unpack(current[0])[0]
                if holder == me:
                    return True
                if holder and pid_alive(holder):
                    return False
            cas = current[1] if current is not None else -1
            status = self._table.nsset(NS_STORE, LEASE_KEY, _PID.pack(me), cas)
            if status == _OK:
                return True
            if status != _CAS_MISMATCH:  # table full: mirror here rather than nowhere
                return True

    async def _watch(self) -> None:
        while True:  # polling: a process's death wakes nothing up here
            if self._try_claim():
                self._hold()
                return
            await asyncio.sleep(LEASE_CHECK_SECONDS)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.holding and self._table is not None:
            # Handed back at once: a worker staying up (a restart of this one alone)
            # takes over at its next check instead of waiting for this pid to vanish.
            current = self._table.nsget(NS_STORE, LEASE_KEY)
            if current is not None and _PID.unpack(current[0])[0] == os.getpid():
                self._table.nsset(NS_STORE, LEASE_KEY, _PID.pack(0), current[1])
