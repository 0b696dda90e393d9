"""The host-wide shared data table (edgegw/wasm/native/shm.c) in one process: Envoy's semantics
for get/set with CAS, the bounds, compaction, and the queue entries built on it."""

from __future__ import annotations

from pathlib import Path

from edgegw.wasm._native import Table
from edgegw.wasm.abi import Status
from edgegw.wasm.shared import SharedQueues


def test_get_set_and_cas_follow_proxy_wasm() -> None:
    t = Table(None, 4096, 8)
    assert t.get(b"k") is None  # NOT_FOUND
    assert t.set(b"k", b"v1", 0) == Status.OK
    value, cas = t.get(b"k") or (b"", 0)
    assert value == b"v1" and cas != 0
    assert t.set(b"k", b"v2", cas + 1000) == Status.CAS_MISMATCH
    assert t.set(b"absent", b"v", 7) == Status.CAS_MISMATCH
    assert t.set(b"k", b"v3", cas) == Status.OK
    assert t.set(b"k", b"v4", cas) == Status.CAS_MISMATCH  # cas moved on with the set
    assert t.get(b"k") == (b"v3", cas + 1)
    assert t.set(b"k", b"", 0) == Status.OK and t.get(b"k") == (b"", cas + 2)


def test_namespaces_keep_host_entries_apart_from_filter_keys() -> None:
    t = Table(None, 4096, 8)
    assert t.set(b"q", b"filter", 0) == Status.OK
    assert t.nsset(1, b"q", b"host", -1) == Status.OK
    assert t.nsset(1, b"q", b"again", -1) == Status.CAS_MISMATCH  # -1: only if absent
    assert t.get(b"q") == (b"filter", 1) and t.nsget(1, b"q") == (b"host", 2)


def test_bounds_answer_a_status_and_change_nothing() -> None:
    t = Table(None, 4096, 4)
    assert t.set(b"x" * 1025, b"v", 0) == Status.BAD_ARGUMENT  # key over 1024 bytes
    assert t.get(b"x" * 1025) is None
    for i in range(4):
        assert t.set(b"k%d" % i, b"v", 0) == Status.OK
    assert t.set(b"k4", b"v", 0) == Status.INTERNAL_FAILURE  # max_keys
    assert t.get(b"k4") is None
    assert t.set(b"k0", b"w" * 100, 0) == Status.OK  # existing keys stay writable
    assert t.set(b"k1", b"w" * 5000, 0) == Status.INTERNAL_FAILURE  # max_bytes
    assert t.get(b"k1") == (b"v", 2)
    assert t.stats()["keys"] == 4


def test_compaction_keeps_every_live_value(tmp_path: Path) -> None:
    # The heap is max_bytes * 5/4: thousands of sets of 8 keys compact it many times.
    t = Table(str(tmp_path / "table"), 4096, 8, True)
    for n in range(5000):
        assert t.set(b"k%d" % (n % 8), b"%d" % n, 0) == Status.OK
    assert [t.get(b"k%d" % i) for i in range(8)] == [
        (b"%d" % (4992 + i), 4993 + i) for i in range(8)
    ]
    # Another mapping of the same file (a worker) sees the same entries.
    other = Table(str(tmp_path / "table"), create=False)
    assert other.get(b"k3") == t.get(b"k3")


def test_queue_register_resolve_enqueue_dequeue_in_one_process() -> None:
    queues = SharedQueues(Table(None, 4096, 16), None)
    ready: list[int] = []
    qid = queues.register(b"vm", b"q", ready.append)
    assert qid is not None
    assert queues.register(b"vm", b"q", ready.append) == qid
    assert queues.resolve(b"vm", b"q") == qid
    assert queues.resolve(b"", b"q") == qid  # no vm_id: the first queue of that name
    assert queues.resolve(b"vm", b"other") is None
    assert queues.dequeue(qid) == Status.EMPTY
    assert queues.enqueue(qid, b"a") == Status.OK
    assert queues.enqueue(qid, b"") == Status.OK
    assert ready == [qid, qid]
    assert queues.dequeue(qid) == b"a"
    assert queues.dequeue(qid) == b""
    assert queues.dequeue(qid) == Status.EMPTY
    assert queues.enqueue(qid + 1, b"x") == Status.NOT_FOUND
    assert queues.dequeue(qid + 1) == Status.NOT_FOUND
