"""State filters share: shared data (with CAS) and shared queues for every worker process
of one gateway, as Envoy shares them across its worker threads; filter-defined metrics
per process. All of it outlives VM reloads, as in Envoy.

Shared data lives in a table in shared memory (edgegw/wasm/native/shm.c, edgegw/wasm/shm.py)
that every worker maps when this module is imported. Shared queues are entries of the
same table; a worker that owns a queue (registered it first) is woken through a datagram
socket in the runtime directory when another worker enqueues (docs/filters.md, "Shared data").
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from edgegw.observe import metrics
from edgegw.wasm._native import Table
from edgegw.wasm.abi import MetricType, Status
from edgegw.wasm.shm import QUEUE_SOCKETS, open_table, pid_alive

log = logging.getLogger("edgegw.wasm")


class SharedData:
    """key → (value, cas), host-wide. ``set`` with a cas that is not the key's current
    one fails with CAS_MISMATCH (spec: proxy_set_shared_data; cas 0 sets always).

    Bounded (the ABI has no delete): a key over 1024 bytes is BAD_ARGUMENT; a set that
    would pass ``max_keys`` keys or ``max_bytes`` of entries (key, value and 24 bytes each)
    is INTERNAL_FAILURE and changes nothing; existing keys stay writable while the size
    allows. Both answers are the C table's own: the hot path is one C call."""

    def __init__(self, table: Table) -> None:
        self.use(table)

    def use(self, table: Table) -> None:
        self.table = table
        self.get: Callable[[bytes], tuple[bytes, int] | None] = table.get
        self.set: Callable[[bytes, bytes, int], int] = table.set


# Shared queues in the table: namespace 1 maps ``vm_id \0 name`` (and ``\0 name``: the
# first queue of that name, for a resolve without vm_id) to the queue id, and b"" to the
# last id handed out; namespace 2 maps the id to the owner's pid and the items.
_NS_NAMES = 1
_NS_QUEUES = 2
_U32 = struct.Struct("<I")
_ABSENT = -1  # Table.set's cas for "only if the key does not exist yet"


class SharedQueues:
    """proxy-wasm shared queues, host-wide. The owner of a queue is the process that
    registered it first (Envoy: the registering thread), or the next one to register it
    once that process is gone; ``proxy_on_queue_ready`` runs in the owner's VM that
    registered last (after a reload: the new VM)."""

    def __init__(self, table: Table, runtime_dir: Path | None) -> None:
        self._table = table
        self._notify: dict[int, Callable[[int], None]] = {}
        self._dir = runtime_dir / QUEUE_SOCKETS if runtime_dir is not None else None
        self._listening: socket.socket | None = None
        self._sender: socket.socket | None = None

    def register(self, vm_id: bytes, name: bytes, notify: Callable[[int], None]) -> int | None:
        """The queue's id; None if the table is full."""
        qid = self._name_to_id(vm_id, name)
        if qid is None:
            return None
        key = _U32.pack(qid)
        me = os.getpid()
        while True:
            current = self._table.nsget(_NS_QUEUES, key)
            if current is None:
                status = self._table.nsset(_NS_QUEUES, key, _U32.pack(me), _ABSENT)
            else:
                owner = _U32.unpack_from(current[0])[0]
                if owner == me or pid_alive(owner):
                    break
                value = _U32.pack(me) + current[0][4:]
                status = self._table.nsset(_NS_QUEUES, key, value, current[1])
            if status == Status.OK:
                break
            if status != Status.CAS_MISMATCH:
                return None
        self._notify[qid] = notify
        self._listen()
        return qid

    def _name_to_id(self, vm_id: bytes, name: bytes) -> int | None:
        key = vm_id + b"\0" + name
        found = self._table.nsget(_NS_NAMES, key)
        if found is not None:
            return int(_U32.unpack(found[0])[0])
        while True:  # a new id: CAS on the counter
            last = self._table.nsget(_NS_NAMES, b"")
            qid = (_U32.unpack(last[0])[0] if last else 0) + 1
            status = self._table.nsset(_NS_NAMES, b"", _U32.pack(qid), last[1] if last else -1)
            if status == Status.OK:
                break
            if status != Status.CAS_MISMATCH:
                return None
        status = self._table.nsset(_NS_NAMES, key, _U32.pack(qid), _ABSENT)
        if status == Status.CAS_MISMATCH:  # another process registered it meanwhile
            return self._name_to_id(vm_id, name)
        if status != Status.OK:
            return None
        if vm_id:
            self._table.nsset(_NS_NAMES, b"\0" + name, _U32.pack(qid), _ABSENT)
        return qid

    def forget(self, notify: Callable[[int], None]) -> None:
        """A closed VM's root is no longer told about its queues (the queues and their
        items stay, as in Envoy, for the VM that registers them next)."""
        for qid in [qid for qid, known in self._notify.items() if known == notify]:
            del self._notify[qid]

    def resolve(self, vm_id: bytes, name: bytes) -> int | None:
        # No vm_id given: the first queue of that name any VM registered.
        found = self._table.nsget(_NS_NAMES, vm_id + b"\0" + name)
        return None if found is None else int(_U32.unpack(found[0])[0])

    def enqueue(self, qid: int, value: bytes) -> Status:
        key = _U32.pack(qid)
        while True:
            current = self._table.nsget(_NS_QUEUES, key)
            if current is None:
                return Status.NOT_FOUND
            data = current[0] + _U32.pack(len(value)) + value
            status = self._table.nsset(_NS_QUEUES, key, data, current[1])
            if status == Status.OK:
                break
            if status != Status.CAS_MISMATCH:
                return Status(status)
        owner = _U32.unpack_from(current[0])[0]
        if owner == os.getpid():
            notify = self._notify.get(qid)
            if notify is not None:
                notify(qid)
        else:
            self._wake(owner, qid)
        return Status.OK

    def dequeue(self, qid: int) -> bytes | Status:
        key = _U32.pack(qid)
        while True:
            current = self._table.nsget(_NS_QUEUES, key)
            if current is None:
                return Status.NOT_FOUND
            data = current[0]
            if len(data) == 4:
                return Status.EMPTY
            size = _U32.unpack_from(data, 4)[0]
            rest = data[:4] + data[8 + size :]
            status = self._table.nsset(_NS_QUEUES, key, rest, current[1])
            if status == Status.OK:
                return data[8 : 8 + size]
            if status != Status.CAS_MISMATCH:
                return Status(status)

    # --- wakeups across processes: one AF_UNIX datagram (the queue id) per enqueue -------

    def _socket_path(self, pid: int) -> str:
        assert self._dir is not None
        return str(self._dir / f"{pid}.sock")

    def _listen(self) -> None:
        if self._listening is not None or self._dir is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: only this process's enqueues notify
            return
        self._dir.mkdir(exist_ok=True)
        path = self._socket_path(os.getpid())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.unlink(path)  # left by an earlier process with this pid
        except FileNotFoundError:
            pass
        sock.bind(path)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._woken, sock)
        self._listening = sock

    def _woken(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) == 4:
                notify = self._notify.get(_U32.unpack(data)[0])
                if notify is not None:
                    notify(_U32.unpack(data)[0])

    def _wake(self, pid: int, qid: int) -> None:
        if self._dir is None:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        try:
            self._sender.sendto(_U32.pack(qid), self._socket_path(pid))
        except OSError as exc:
            # Owner gone (its successor takes the queue over when it registers) or its
            # socket buffer full (it is behind on wakeups already and drains the queue).
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                log.warning("shared queue %d: cannot wake process %d: %s", qid, pid, exc)


_SANITIZE = re.compile(r"[^a-zA-Z0-9_:]")
_COUNTERS = Counter("edgegw_filter_counter", "Counters defined by filters", ["filter", "name"])
_GAUGES = Gauge(
    "edgegw_filter_gauge",
    "Gauges defined by filters",
    ["filter", "name"],
    multiprocess_mode="livesum",
)
_HISTOGRAMS = Histogram(
    "edgegw_filter_histogram", "Histograms defined by filters", ["filter", "name"]
)


@dataclass
class _Metric:
    kind: MetricType
    value: int
    child: object
    pending: int = 0  # a counter's increase not yet handed to prometheus_client
    dirty: bool = False  # a gauge's value not yet handed to prometheus_client


class Metrics:
    """proxy_define_metric & co. Values are kept here too (proxy_get_metric) and exported
    as ``edgegw_filter_{counter,gauge,histogram}{filter,name}`` on /metrics. Counters and
    gauges reach prometheus_client in batches, as the request metrics do
    (edgegw/observe/metrics.py: a sample in a multi-worker gateway is an mmap write under a lock,
    and filters count on every request); histograms at once."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        self._ids: dict[tuple[str, int, str], int] = {}
        metrics.on_flush(self.flush)

    def define(self, filter_name: str, kind: int, name: str) -> int | None:
        if kind not in (0, 1, 2):
            return None
        key = (filter_name, kind, name)
        if key in self._ids:
            return self._ids[key]
        family = (_COUNTERS, _GAUGES, _HISTOGRAMS)[kind]
        child = family.labels(filter_name, _SANITIZE.sub("_", name))
        self._metrics.append(_Metric(MetricType(kind), 0, child))
        self._ids[key] = len(self._metrics)
        return len(self._metrics)

    def _get(self, mid: int) -> _Metric | None:
        return self._metrics[mid - 1] if 0 < mid <= len(self._metrics) else None

    def increment(self, mid: int, offset: int) -> Status:
        metric = self._get(mid)
        if metric is None or metric.kind == MetricType.HISTOGRAM:
            return Status.NOT_FOUND if metric is None else Status.BAD_ARGUMENT
        if metric.kind == MetricType.COUNTER and offset < 0:
            return Status.BAD_ARGUMENT
        metric.value += offset
        if metric.kind == MetricType.COUNTER:
            metric.pending += offset
        else:
            metric.dirty = True
        metrics.flush_soon()
        return Status.OK

    def record(self, mid: int, value: int) -> Status:
        metric = self._get(mid)
        if metric is None:
            return Status.NOT_FOUND
        if metric.kind == MetricType.HISTOGRAM:
            metric.child.observe(value)  # type: ignore[attr-defined]
        elif metric.kind == MetricType.GAUGE:
            metric.dirty = True
        else:  # a counter set lower is not exported lower: it counts increases only
            metric.pending += max(0, value - metric.value)
        metric.value = value
        metrics.flush_soon()
        return Status.OK

    def get(self, mid: int) -> int | None:
        metric = self._get(mid)
        return None if metric is None else metric.value

    def flush(self) -> None:
        """Hand pending counter increases and gauge values to prometheus_client
        (``edgegw.observe.metrics.flush`` calls it)."""
        for metric in self._metrics:
            if metric.pending:
                metric.child.inc(metric.pending)  # type: ignore[attr-defined]
                metric.pending = 0
            if metric.dirty:
                metric.child.set(metric.value)  # type: ignore[attr-defined]
                metric.dirty = False


_TABLE, _RUNTIME_DIR = open_table()
SHARED_DATA = SharedData(_TABLE)
QUEUES = SharedQueues(_TABLE, _RUNTIME_DIR)
METRICS = Metrics()
