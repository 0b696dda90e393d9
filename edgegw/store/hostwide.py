"""What the store keeps once per host rather than once per worker process: GCRA buckets
(``memory://`` and the ``on_error: local`` fallback) and the flag-mirror lease
(edgegw/store/mirror.py), in the host-wide shared-data table (edgegw/wasm/native/shm.c) that
every worker of a gateway maps, as the rate_limit filter's ``mode: local`` does.

A bucket is one table entry (namespace ``NS_BUCKETS``: the key -> its TAT, 8 bytes),
updated with compare-and-swap, so concurrent steps from several processes never lose an
update. The table has no delete (its API is proxy-wasm shared data), so the store
takes at most ``SHARE`` of its keys; past that, and when the table is full, new keys
are counted in this process only (a bounded dict, as before) and a warning says so.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

from edgegw.store.base import RateDecision, gcra
from edgegw.wasm._native import MAX_KEY, Table
from edgegw.wasm.shm import ENV_RUNTIME_DIR, TABLE_FILE

log = logging.getLogger("edgegw.store")

# Namespaces of the table owned by the store (0 is filters', 1 and 2 shared queues').
NS_BUCKETS = 3
NS_STORE = 4
_TAT = struct.Struct("<q")
_ABSENT = -1  # Table.nsset's cas for "only if the key does not exist yet"
_OK, _CAS_MISMATCH = 0, 8  # edgegw.wasm.abi.Status values the table answers
SHARE = 0.5  # of the table's max_keys the store's buckets may take


def host_table() -> Table | None:
    """This process's view of the host-wide table, or None when this process is the
    whole gateway (no supervisor made a table: embedding, in-process tests), where a
    per-process dict is host-wide already and starts empty with each app."""
    runtime = os.environ.get(ENV_RUNTIME_DIR)
    if not runtime or not (Path(runtime) / TABLE_FILE).is_file():
        return None
    from edgegw.wasm.shared import SHARED_DATA  # maps the table on first import

    return SHARED_DATA.table


class SharedBuckets:
    """GCRA buckets for every process of this host. ``rate_limit`` returns None when the
    key cannot be stored here (the caller counts it per process instead)."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._cap = int(table.stats()["max_keys"] * SHARE)
        self._full_warned = False

    def rate_limit(
        self, key: str, rate: int, burst: int, period_ms: int, cost: int
    ) -> RateDecision | None:
        raw = key.encode()
        if len(raw) > MAX_KEY:
            return None
        table = self._table
        while True:
            now = time.time_ns() // 1000
            current = table.nsget(NS_BUCKETS, raw)
            tat = _TAT.unpack(current[0])[0] if current is not None else 0
            decision, new_tat = gcra(tat, now, rate, burst, period_ms, cost)
            if not decision.allowed or not cost:
                return decision
            if current is None and table.stats()["keys"] >= self._cap:
                self._full()
                return None
            cas = current[1] if current is not None else _ABSENT
            status = table.nsset(NS_BUCKETS, raw, _TAT.pack(new_tat), cas)
            if status == _OK:
                return decision
            if status != _CAS_MISMATCH:  # full, or a key over the table's bound
                self._full()
                return None

    def _full(self) -> None:  # warned once: the fallback then counts per process
        if not self._full_warned:
            self._full_warned = True
            log.warning(
                "the host-wide table holds as many rate-limit keys as the store may use "
                "(shared_data.max_keys * %g): new keys are limited per worker process",
                SHARE,
            )
        return None
