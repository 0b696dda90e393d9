"""Host-wide shared data (edgegw/wasm/native/shm.c) against the per-process dict it replaced
(#23), side by side in one run: ns per get, per CAS set (a get then a set with its
cas, what the rate_limit filter's local mode does per request) and per set with cas 0.

    .venv/bin/python bench/shm.py

Each figure is the median of ROUNDS alternating rounds (dict, table, dict, ...), each
round timing OPS calls in one process; the table is the file-backed mapping the
supervisor makes for its workers. Uncontended: the lock is taken but never waited for.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_block

from edgegw.wasm._native import Table

ROUNDS = 7
OPS = 200_000
KEYS = [b"edgegw.rl:ip:10.0.%d.%d" % (i // 256, i % 256) for i in range(1000)]


class DictSharedData:
    """edgegw.wasm.shared.SharedData before #23 (commit e714cf5^): one per process."""

    def __init__(self) -> None:
        self._items: dict[bytes, tuple[bytes, int]] = {}
        self._cas = 0

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self._items.get(key)

    def set(self, key: bytes, value: bytes, cas: int) -> int:
        current = self._items.get(key)
        if cas and (current is None or current[1] != cas):
            return 8
        self._cas += 1
        self._items[key] = (value, self._cas)
        return 0


Store = DictSharedData | Table


def _get(store: Store) -> None:
    get, keys = store.get, KEYS
    for i in range(OPS):
        get(keys[i % 1000])


def _cas_set(store: Store) -> None:
    get, set_, keys = store.get, store.set, KEYS
    for i in range(OPS):
        key = keys[i % 1000]
        current = get(key)
        set_(key, b"1733350000123456", current[1] if current else 0)


def _set(store: Store) -> None:
    set_, keys = store.set, KEYS
    for i in range(OPS):
        set_(keys[i % 1000], b"1733350000123456", 0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, Store] = {
            "per-process dict (before)": DictSharedData(),
            "host-wide table (now)": Table(str(Path(tmp) / "table"), 64 << 20, 100_000, True),
        }
        for store in stores.values():
            for key in KEYS:
                store.set(key, b"1733350000123456", 0)
        ops: dict[str, Callable[[Store], None]] = {
            "get": _get, "CAS set (get + set)": _cas_set, "set (cas 0)": _set,
        }  # fmt: skip
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(ROUNDS):
            for op_name, op in ops.items():
                for name, store in stores.items():
                    start = time.perf_counter()
                    op(store)
                    ns = (time.perf_counter() - start) / OPS * 1e9
                    times.setdefault((op_name, name), []).append(ns)
    names = list(stores)
    lines = [
        f"| operation | {names[0]} ns | {names[1]} ns | ratio |",
        "|---|---:|---:|---:|",
    ]
    for op_name in ops:
        a, b = (statistics.median(times[(op_name, n)]) for n in names)
        lines.append(f"| {op_name} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    spread = max(
        (max(v) - min(v)) / statistics.median(v) for v in times.values()
    )  # how noisy the rounds were
    lines += [
        "",
        f"Median of {ROUNDS} alternating rounds of {OPS:,} calls, 1,000 keys, one process "
        f"(uncontended); rounds spread up to {spread:.0%} of their median. {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("shm", text, "Shared data: host-wide table vs per-process dict (`bench/shm.py`)")


if __name__ == "__main__":
    main()
