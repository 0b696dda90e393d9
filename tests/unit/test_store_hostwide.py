"""The store's host-wide parts (edgegw/store/hostwide.py, edgegw/store/mirror.py) on a
real shared-data table mapped by several real processes: one bucket count for all of
them, and one flag mirror per host that another process takes over when it dies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from edgegw.store.base import FlagSnapshot
from edgegw.store.hostwide import NS_STORE, SharedBuckets
from edgegw.store.mirror import LEASE_KEY, FlagMirror
from edgegw.wasm._native import Table
from tests.conftest import REPO

COUNT = textwrap.dedent("""
    import sys
    from edgegw.store.hostwide import SharedBuckets
    from edgegw.wasm._native import Table
    buckets = SharedBuckets(Table(sys.argv[1], create=False))
    print(sum(bool(buckets.rate_limit("k", 1, 30, 3_600_000, 1).allowed) for _ in range(25)))
""")


def test_processes_share_one_bucket_count(tmp_path: Path) -> None:
    path = str(tmp_path / "table")
    Table(path, 1 << 20, 1000, True)
    # Four processes, 25 requests each, burst 30: exactly 30 allowed in all (each
    # process counting alone, as before, would allow 4 x 25 = 100).
    runs = [subprocess.Popen([sys.executable, "-c", COUNT, path], cwd=REPO,
                             stdout=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    allowed = [int(run.communicate(timeout=60)[0]) for run in runs]
    assert sum(allowed) == 30, allowed


def test_the_store_takes_at_most_its_share_of_the_table() -> None:
    table = Table(None, 1 << 20, 10)
    buckets = SharedBuckets(table)
    kept = [buckets.rate_limit(f"k{i}", 1, 1, 60_000, 1) for i in range(8)]
    assert [d is not None for d in kept] == [True] * 5 + [False] * 3  # 10 * 0.5 keys
    assert table.stats()["keys"] == 5  # the rest is for filters' shared data


HOLD = textwrap.dedent("""
    import asyncio, sys
    from edgegw.store.mirror import FlagMirror
    from edgegw.wasm._native import Table

    class Store:
        def subscribe(self, listener):
            print("holding", flush=True)

        async def get_flags(self):
            from edgegw.store.base import FlagSnapshot
            return FlagSnapshot(0, {})

    async def main():
        await FlagMirror(Store(), Table(sys.argv[1], create=False)).start()
        await asyncio.sleep(60)

    asyncio.run(main())
""")


class FakeFlags:
    """Counts subscriptions (the store's own subscribe is tested in test_store.py)."""

    def __init__(self) -> None:
        self.subscribed = 0

    def subscribe(self, listener: object) -> None:
        self.subscribed += 1

    async def get_flags(self) -> FlagSnapshot:
        return FlagSnapshot(0, {})


async def _takes_over(mirror: FlagMirror, holder: subprocess.Popen[str]) -> None:
    await mirror.start()
    assert not mirror.holding  # another process mirrors
    holder.kill()
    await asyncio.to_thread(holder.wait)  # reaped, as the supervisor reaps a worker
    for _ in range(100):  # the lease is checked every second
        if mirror.holding:
            break
        await asyncio.sleep(0.1)
    assert mirror.holding
    await mirror.aclose()


def test_one_mirror_per_host_and_a_takeover_when_it_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "table")
    table = Table(path, 1 << 20, 100, True)
    with subprocess.Popen([sys.executable, "-c", HOLD, path], cwd=REPO,
                          stdout=subprocess.PIPE, text=True) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            store = FakeFlags()
            asyncio.run(_takes_over(FlagMirror(store, table), holder))
            assert store.subscribed == 1  # subscribed once it held the lease, not before
        finally:
            holder.kill()
    lease = table.nsget(NS_STORE, LEASE_KEY)
    assert lease is not None and lease[0] == b"\0\0\0\0"  # handed back at close
